"""HTTP health checks, cheap enough for one watcher to probe 1,000 services every second.

Two transports behind one probe:

* ``http://`` targets use a small built-in HTTP/1.1 client on asyncio protocols: one keep-alive
  connection per target (host, port), requests pre-rendered and cached, a strict response parser
  (Content-Length, chunked, read-until-close; interim 1xx answers skipped). ``bench/probes.py`` on a
  2-core machine: a watcher probing 1,000 services every second uses ~20 % of a core with it (~0.2 ms
  per probe, most of it loopback syscalls) against ~86 % through httpx2 (~0.9 ms per probe).
* ``https://`` targets (and everything, with ``fast_http=False``) go through ``httpx2``. The TLS context
  is shared per ``verify_tls`` setting; the connection pool is kept per origin, because an httpcore pool
  checks every idle connection it holds (a poll() syscall each) on every request: one pool shared by
  1,000 origins cost ~24 ms of CPU per request in a micro-benchmark.

A probe never outlives ``spec.timeout`` (``asyncio.timeout`` around everything) and never raises for an
unhealthy target. A connection that timed out, was cancelled or answered something unparsable is
aborted, never put back in the pool, so a hung connection cannot poison later probes. A reused
keep-alive connection that the server closed meanwhile is retried once on a fresh connection. Proxies
from the environment are ignored (health checks talk to the target itself).
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import ssl
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import quote, urlsplit

import httpx2
import regex

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec, HttpHealth, ProbeKind
from windflow.domain.redaction import redact_text
from windflow.domain.results import ProbeResult
from windflow.outbound import OutboundPolicy, OutboundRefused, guarded_client

BODY_LIMIT = 64 * 1024
HEAD_LIMIT = 64 * 1024
MAX_IDLE_PER_TARGET = 2
IDLE_EXPIRY = 60.0
USER_AGENT = "windflow-probe/1"

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_PATH_SAFE = "/%:@!$&'()*+,;=-._~?"


class ProbeFailure(Exception):
    """An unhealthy outcome with a ready-made message."""


class _StaleConnection(Exception):
    """A reused keep-alive connection was closed by the server before any byte of the answer."""


# ---------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    display: str  # host:port for messages
    request: bytes
    head: bool


@lru_cache(maxsize=8192)
def _target(url: str, method: str, headers: tuple[tuple[str, str], ...]) -> _Target:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ProbeFailure(f"unsupported URL {redact_text(url)!r}")
    try:
        port = parts.port or 80
    except ValueError:
        raise ProbeFailure(f"invalid port in {redact_text(url)!r}") from None
    host_header = parts.netloc.rpartition("@")[2]
    path = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + quote(parts.query, safe=_PATH_SAFE)
    fields: dict[str, tuple[str, str]] = {
        "host": ("Host", host_header),
        "user-agent": ("User-Agent", USER_AGENT),
        "accept": ("Accept", "*/*"),
    }
    if parts.username is not None:
        creds = f"{parts.username}:{parts.password or ''}".encode()
        fields["authorization"] = ("Authorization", "Basic " + base64.b64encode(creds).decode())
    for name, value in headers:
        if not _TOKEN.match(name):
            raise ProbeFailure(f"invalid header name {name!r}")
        if any(c in value for c in "\r\n\x00"):
            raise ProbeFailure(f"invalid value for header {name!r}")
        fields[name.lower()] = (name, value)
    if method == "POST":
        fields["content-length"] = ("Content-Length", "0")
    lines = [f"{method} {path} HTTP/1.1", *(f"{n}: {v}" for n, v in fields.values())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace")
    host = parts.hostname
    display = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return _Target(host=host, port=port, display=display, request=request, head=method == "HEAD")


REGEX_TIMEOUT = 0.25
"""Seconds one ``body_regex`` match may take: a pattern with catastrophic backtracking fails the check instead of
stalling the worker (the match runs in a thread, with the ``regex`` engine's own time limit)."""


@lru_cache(maxsize=4096)
def _regex(pattern: str) -> regex.Pattern[str]:
    return regex.compile(pattern)


def _matches(pattern: str, text: str) -> bool | None:
    """Whether ``pattern`` matches ``text``; ``None`` when the match ran out of time."""
    try:
        return _regex(pattern).search(text, timeout=REGEX_TIMEOUT) is not None
    except TimeoutError:
        return None


# ---------------------------------------------------------------------------------------------- fast client


class _Conn(asyncio.Protocol):
    """One HTTP/1.1 connection: one request at a time, keep-alive, strict parsing."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.reused = False
        self._buf = bytearray()
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._got_bytes = False
        self._head_only = False
        self._limit = BODY_LIMIT
        self._state = "idle"
        self._status = 0
        self._remaining = 0
        self._body = bytearray()
        self.keep_alive = False

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None or self._waiter.done():
            # bytes nobody asked for (on an idle connection): the connection is unusable
            self.abort()
            return
        self._got_bytes = True
        self._buf += data
        try:
            self._parse()
        except ProbeFailure as exc:
            self._fail(exc)

    def eof_received(self) -> bool:
        self._on_close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: ARG002
        self._on_close()

    # -- use
    async def request(self, target: _Target, *, limit: int) -> tuple[int, bytes]:
        assert self.transport is not None
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        self._got_bytes = False
        self._head_only = target.head
        self._limit = limit
        self._state = "head"
        self._body = bytearray()
        self.keep_alive = False
        self.transport.write(target.request)
        return await self._waiter

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    # -- internals
    def _on_close(self) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._state == "close":
            self.keep_alive = False
            self._finish()
        elif not self._got_bytes and self.reused:
            waiter.set_exception(_StaleConnection())
        else:
            waiter.set_exception(ProbeFailure("connection closed before a complete response"))

    def _fail(self, exc: BaseException) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)
        self.abort()

    def _finish(self) -> None:
        self._state = "idle"
        if self._buf:  # pipelined garbage after the response
            self.keep_alive = False
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._status, bytes(self._body)))

    def _take_body(self, data: bytes | bytearray) -> bool:
        """Append to the body; True once the limit is reached (the rest is not read)."""
        room = self._limit - len(self._body)
        self._body += data[:room]
        if len(data) >= room:
            self.keep_alive = False  # the rest of the body is left unread: don't reuse
            return True
        return False

    def _parse(self) -> None:
        buf = self._buf
        while True:
            if self._state == "head":
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    if len(buf) > HEAD_LIMIT:
                        raise ProbeFailure("response headers too large")
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                if not self._read_head(head):
                    continue  # interim 1xx answer: the real one follows
                if self._state == "idle":
                    self._finish()
                    return
            elif self._state == "length":
                take = min(self._remaining, len(buf))
                chunk = bytes(buf[:take])
                del buf[:take]
                self._remaining -= take
                if self._take_body(chunk) or self._remaining == 0:
                    self._finish()
                    return
                return
            elif self._state == "close":
                chunk = bytes(buf)
                buf.clear()
                if self._take_body(chunk):
                    self._finish()
                return
            elif self._state == "chunk-size":
                end = buf.find(b"\r\n")
                if end < 0:
                    if len(buf) > 1024:
                        raise ProbeFailure("invalid chunked encoding")
                    return
                line = bytes(buf[:end]).split(b";", 1)[0].strip()
                del buf[: end + 2]
                try:
                    size = int(line, 16)
                except ValueError:
                    raise ProbeFailure("invalid chunked encoding") from None
                if size == 0:
                    self._state = "trailers"
                else:
                    self._remaining = size
                    self._state = "chunk-data"
            elif self._state == "chunk-data":
                if self._remaining:
                    take = min(self._remaining, len(buf))
                    chunk = bytes(buf[:take])
                    del buf[:take]
                    self._remaining -= take
                    if self._take_body(chunk):
                        self._finish()
                        return
                    if self._remaining:
                        return
                if len(buf) < 2:
                    return
                if buf[:2] != b"\r\n":
                    raise ProbeFailure("invalid chunked encoding")
                del buf[:2]
                self._state = "chunk-size"
            elif self._state == "trailers":
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                del buf[: end + 2]
                if end == 0:
                    self._finish()
                    return
            else:  # idle: unexpected bytes
                raise ProbeFailure("unexpected data from server")

    def _read_head(self, head: bytes) -> bool:
        """Parse a status line and headers; False for an interim 1xx answer."""
        lines = head.split(b"\r\n")
        status_line = lines[0].split(None, 2)
        if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/1."):
            raise ProbeFailure(f"invalid HTTP response {lines[0][:60]!r}")
        try:
            status = int(status_line[1])
        except ValueError:
            raise ProbeFailure(f"invalid HTTP status line {lines[0][:60]!r}") from None
        if 100 <= status < 200 and status != 101:
            return False
        length: int | None = None
        chunked = False
        close = False
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                raise ProbeFailure("invalid HTTP header line")
            key = name.strip().lower()
            if key == b"content-length":
                try:
                    length = int(value.strip())
                except ValueError:
                    raise ProbeFailure("invalid Content-Length") from None
                if length < 0:
                    raise ProbeFailure("invalid Content-Length")
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = b"close" in value.lower()
        self._status = status
        self.keep_alive = status_line[0] == b"HTTP/1.1" and not close and status != 101
        if self._head_only or status in (204, 304):
            self._state = "idle"
        elif chunked:
            self._state = "chunk-size"
        elif length is not None:
            self._remaining = length
            self._state = "length" if length else "idle"
        else:
            self._state = "close"
            self.keep_alive = False
        return True


@dataclass
class _LoopState:
    """Connections and clients of one event loop."""

    idle: dict[tuple[str, int], list[_Conn]] = field(default_factory=dict)
    clients: dict[tuple[bool, str], tuple[httpx2.AsyncClient, list[float]]] = field(default_factory=dict)
    last_sweep: float = 0.0


# ---------------------------------------------------------------------------------------------- the probe


class HttpProbe:
    """``HttpHealth`` checks; one instance serves every HTTP health check of a process."""

    kind = ProbeKind.HTTP

    def __init__(
        self,
        *,
        fast_http: bool = True,
        body_limit: int = BODY_LIMIT,
        max_idle_per_target: int = MAX_IDLE_PER_TARGET,
        idle_expiry: float = IDLE_EXPIRY,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self.fast_http = fast_http
        self.outbound = outbound or OutboundPolicy()
        self.body_limit = body_limit
        self.max_idle_per_target = max_idle_per_target
        self.idle_expiry = idle_expiry
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()
        self._ssl: dict[bool, ssl.SSLContext] = {}

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, HttpHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        started = time.perf_counter()
        try:
            async with asyncio.timeout(spec.timeout):
                if self.fast_http and spec.url.startswith("http://"):
                    status, body = await self._fetch_fast(spec)
                else:
                    status, body = await self._fetch_httpx(spec)
        except TimeoutError:
            return _result(False, started, f"timed out after {format_duration(spec.timeout)}")
        except ProbeFailure as exc:
            return _result(False, started, str(exc))
        except (OSError, httpx2.HTTPError, ssl.SSLError) as exc:
            return _result(False, started, _describe_error(exc, spec.url))
        latency = time.perf_counter() - started
        if status not in spec.expect_status:
            return _result(False, started, f"status {status} not in {spec.expect_status}", latency)
        if spec.body_contains is not None or spec.body_regex is not None:
            text = body.decode("utf-8", errors="replace")
            if spec.body_contains is not None and spec.body_contains not in text:
                return _result(
                    False, started, f"status {status} but body does not contain {spec.body_contains!r}", latency
                )
            if spec.body_regex is not None:
                matched = await asyncio.to_thread(_matches, spec.body_regex, text)
                if matched is None:
                    return _result(
                        False,
                        started,
                        f"status {status} but matching /{spec.body_regex}/ took more than {REGEX_TIMEOUT}s",
                        latency,
                    )
                if not matched:
                    return _result(
                        False, started, f"status {status} but body does not match /{spec.body_regex}/", latency
                    )
        if spec.max_latency is not None and latency > spec.max_latency:
            return _result(
                False,
                started,
                f"status {status} but slow: {latency * 1000:.0f} ms > {format_duration(spec.max_latency)}",
                latency,
            )
        return _result(True, started, f"status {status} in {latency * 1000:.1f} ms", latency)

    async def aclose(self) -> None:
        """Close pooled connections and clients of the running loop."""
        state = self._loops.pop(asyncio.get_running_loop(), None)
        if state is None:
            return
        for conns in state.idle.values():
            for conn in conns:
                conn.abort()
        for client, _ in state.clients.values():
            await client.aclose()

    # ------------------------------------------------------------------ fast path

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState()
        return state

    async def _fetch_fast(self, spec: HttpHealth) -> tuple[int, bytes]:
        target = _target(spec.url, spec.method, tuple(spec.headers.items()))
        state = self._state()
        key = (target.host, target.port)
        conn = self._checkout(state, key)
        try:
            if conn is None:
                conn = await self._connect(target, self.outbound)
            try:
                status, body = await conn.request(target, limit=self.body_limit)
            except _StaleConnection:
                conn = await self._connect(target, self.outbound)
                status, body = await conn.request(target, limit=self.body_limit)
        except BaseException:
            if conn is not None:
                conn.abort()  # timed out, cancelled or broken: never reused
            raise
        self._checkin(state, key, conn)
        return status, body

    @staticmethod
    async def _connect(target: _Target, outbound: OutboundPolicy) -> _Conn:
        """A connection to an address the outbound policy allows (the name is resolved once, here, and the
        connection goes to the address that was checked)."""
        loop = asyncio.get_running_loop()
        try:
            addresses = await outbound.resolve(target.host, target.port)
            last: OSError | None = None
            for _, address in addresses:
                try:
                    _, conn = await loop.create_connection(_Conn, address, target.port)
                    return conn
                except OSError as exc:
                    last = exc
            assert last is not None
            raise last
        except OutboundRefused as exc:
            raise ProbeFailure(f"{target.display}: {exc}") from None
        except ConnectionRefusedError:
            raise ProbeFailure(f"connection refused {target.display}") from None
        except socket.gaierror as exc:
            raise ProbeFailure(f"cannot resolve {target.host!r}: {exc.strerror or exc}") from None
        except OSError as exc:
            raise ProbeFailure(f"cannot connect to {target.display}: {exc.strerror or exc}") from None
        return conn

    def _checkout(self, state: _LoopState, key: tuple[str, int]) -> _Conn | None:
        conns = state.idle.get(key)
        now = time.monotonic()
        while conns:
            conn = conns.pop()
            if conn.closed or conn.transport is None or conn.transport.is_closing():
                continue
            if now - conn.idle_since > self.idle_expiry:
                conn.abort()
                continue
            conn.reused = True
            return conn
        return None

    def _checkin(self, state: _LoopState, key: tuple[str, int], conn: _Conn) -> None:
        now = time.monotonic()
        if not conn.keep_alive or conn.closed:
            conn.abort()
        else:
            conns = state.idle.setdefault(key, [])
            if len(conns) >= self.max_idle_per_target:
                conn.abort()
            else:
                conn.idle_since = now
                conns.append(conn)
        if now - state.last_sweep > self.idle_expiry:
            state.last_sweep = now
            self._sweep(state, now)

    def _sweep(self, state: _LoopState, now: float) -> None:
        """Drop idle connections (and https clients) of targets nobody probed lately."""
        for key in list(state.idle):
            keep = []
            for conn in state.idle[key]:
                if conn.closed or now - conn.idle_since > self.idle_expiry:
                    conn.abort()
                else:
                    keep.append(conn)
            if keep:
                state.idle[key] = keep
            else:
                del state.idle[key]
        for ckey, (client, used) in list(state.clients.items()):
            if now - used[0] > 5 * self.idle_expiry:
                del state.clients[ckey]
                asyncio.get_running_loop().create_task(client.aclose())

    # ------------------------------------------------------------------ httpx2 path

    def _ssl_context(self, verify: bool) -> ssl.SSLContext:
        ctx = self._ssl.get(verify)
        if ctx is None:
            ctx = self._ssl[verify] = httpx2.create_ssl_context(verify=verify, trust_env=False)
        return ctx

    def _client(self, spec: HttpHealth) -> httpx2.AsyncClient:
        state = self._state()
        url = httpx2.URL(spec.url)
        key = (spec.verify_tls, f"{url.scheme}://{url.host}:{url.port}")
        entry = state.clients.get(key)
        if entry is None:
            client = guarded_client(
                self.outbound,
                verify=self._ssl_context(spec.verify_tls),
                limits=httpx2.Limits(
                    max_connections=None,
                    max_keepalive_connections=self.max_idle_per_target,
                    keepalive_expiry=self.idle_expiry,
                ),
            )
            entry = state.clients[key] = (client, [0.0])
        entry[1][0] = time.monotonic()
        return entry[0]

    async def _fetch_httpx(self, spec: HttpHealth) -> tuple[int, bytes]:
        client = self._client(spec)
        # httpx's own timeout is a backstop; asyncio.timeout in check() is the real bound
        async with client.stream(spec.method, spec.url, headers=spec.headers, timeout=spec.timeout + 1.0) as resp:
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) >= self.body_limit:
                    break  # the stream is closed unread: httpcore drops the connection
            return resp.status_code, bytes(body[: self.body_limit])


def _describe_error(exc: BaseException, url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = 0
    target = f"{host}:{port}"
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused {target}"
        if isinstance(cause, socket.gaierror):
            return f"cannot resolve {host!r}: {cause.strerror or cause}"
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate of {target} not trusted: {cause.verify_message or cause}"
        if isinstance(cause, ssl.SSLError):
            return f"TLS error with {target}: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, httpx2.TimeoutException):
        return f"timed out ({target})"
    if isinstance(exc, httpx2.RemoteProtocolError):
        return f"{target}: invalid or closed response ({exc})"
    text = str(exc) or type(exc).__name__
    return redact_text(f"{target}: {text}")


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(
        healthy=healthy, latency_ms=round(latency * 1000, 3), message=message, checked_at=datetime.now(UTC)
    )
