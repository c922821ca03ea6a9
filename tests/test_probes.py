"""Probes against real targets: the stand-in service, a local HTTP(S) server, PostgreSQL, Redis, silent servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from pydantic import TypeAdapter

from tests.conftest import unavailable
from tests.helpers import processes_with
from tests.servers import free_port
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec
from windflow.domain.results import ProbeResult
from windflow.probes import build_probe_registry
from windflow.probes.exec import ExecProbe
from windflow.probes.http import HttpProbe
from windflow.probes.postgres import PostgresProbe
from windflow.probes.redis import RedisProbe
from windflow.probes.tcp import TcpProbe

pytestmark = pytest.mark.asyncio(loop_scope="session")

ROOT = Path(__file__).resolve().parent.parent
STANDIN = ROOT / "examples" / "services" / "standin.py"
HEALTH = TypeAdapter(HealthSpec)


def spec(**data: Any) -> Any:
    return HEALTH.validate_python(data)


def assert_result(result: ProbeResult) -> None:
    assert result.checked_at.tzinfo is not None and result.latency_ms >= 0


# ---------------------------------------------------------------------------------------------- servers


@dataclass
class LocalHttp:
    """A small HTTP/1.1 server on asyncio protocols with routes for the probe's edge cases."""

    port: int = 0
    connections: int = 0
    requests: list[dict[str, Any]] = field(default_factory=list)
    transports: set[asyncio.Transport] = field(default_factory=set)
    server: asyncio.AbstractServer | None = None

    def base(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _Handler(self), "127.0.0.1", 0, ssl=ssl_ctx)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        for transport in list(self.transports):
            transport.abort()
        await self.server.wait_closed()


def _response(status: int, body: bytes, *, headers: str = "", reason: str = "X") -> bytes:
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body


class _Handler(asyncio.Protocol):
    def __init__(self, owner: LocalHttp) -> None:
        self.owner = owner
        self.buf = b""
        self.hung = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.owner.connections += 1
        self.owner.transports.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        self.owner.transports.discard(self.transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while not self.hung and b"\r\n\r\n" in self.buf:
            head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
            self.owner.requests.append({"method": method, "path": path, "headers": headers})
            self.route(method, path, headers)

    def route(self, method: str, path: str, headers: dict[str, str]) -> None:
        assert self.transport is not None
        write = self.transport.write
        if path == "/health":
            write(_response(200, b'{"status": "ok", "version": "1.4.2"}', headers="Content-Type: application/json\r\n"))
        elif path == "/503":
            write(_response(503, b"maintenance"))
        elif path == "/hang":
            self.hung = True  # accept, read, never answer
        elif path == "/slow":
            asyncio.get_running_loop().call_later(0.3, write, _response(200, b"late"))
        elif path == "/chunked":
            write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n")
        elif path == "/continue":
            write(b"HTTP/1.1 100 Continue\r\n\r\n" + _response(200, b"after interim"))
        elif path == "/until-close":
            write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nread me until the end")
            self.transport.close()
        elif path == "/big":
            write(_response(200, b"a" * 300_000 + b"needle-at-the-end"))
        elif path == "/auth":
            ok = headers.get("authorization") == "Bearer s3cret-token" and headers.get("x-probe") == "yes"
            write(_response(200 if ok else 401, b"auth"))
        elif path == "/head":
            write(_response(200, b"") if method == "HEAD" else _response(405, b"HEAD only"))
        elif path == "/garbage":
            write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            write(_response(404, b"not found"))


@pytest_asyncio.fixture(loop_scope="session")
async def web() -> AsyncIterator[LocalHttp]:
    server = LocalHttp()
    await server.start()
    yield server
    await server.stop()


class _Silent(asyncio.Protocol):
    """Accepts connections and never says a word (not even the server greeting)."""

    transports: list[asyncio.BaseTransport] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        _Silent.transports.append(transport)


@pytest_asyncio.fixture(loop_scope="session")
async def silent_port() -> AsyncIterator[int]:
    server = await asyncio.get_running_loop().create_server(_Silent, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    for transport in _Silent.transports:
        transport.abort()
    _Silent.transports.clear()
    await server.wait_closed()


@pytest.fixture
def closed_port() -> int:
    return free_port()  # bound then released: nothing listens there


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        unavailable("openssl (for the TLS probe tests)")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def standin_http() -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--name", "probe-target", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    import socket

    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("stand-in did not start")
        time.sleep(0.02)
    yield port, proc
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------- http


@pytest.fixture(params=[True, False], ids=["fast", "httpx2"])
def http_probe(request: pytest.FixtureRequest) -> HttpProbe:
    return HttpProbe(fast_http=request.param)


async def test_http_healthy_standin_then_hung_then_dead(
    http_probe: HttpProbe, standin_http: tuple[int, subprocess.Popen[bytes]]
) -> None:
    port, proc = standin_http
    check = spec(
        kind="http",
        url=f"http://127.0.0.1:{port}/health",
        timeout="500ms",
        body_contains='"status": "ok"',
        body_regex=r'"pid": \d+',
    )
    ok = await http_probe.check(check)
    assert ok.healthy, ok.message
    assert "status 200" in ok.message
    assert_result(ok)

    # the stand-in hangs: /health stalls forever while the process lives on
    import httpx2

    async with httpx2.AsyncClient() as client:
        assert (await client.post(f"http://127.0.0.1:{port}/hang")).status_code == 200
    t0 = time.monotonic()
    hung = await http_probe.check(check)
    elapsed = time.monotonic() - t0
    assert not hung.healthy and hung.message == "timed out after 500ms"
    assert 0.45 <= elapsed < 1.5

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=5)
    dead = await http_probe.check(check)
    assert not dead.healthy and dead.message == f"connection refused 127.0.0.1:{port}"
    await http_probe.aclose()


async def test_http_status_and_body_checks(http_probe: HttpProbe, web: LocalHttp) -> None:
    base = web.base()
    result = await http_probe.check(spec(kind="http", url=f"{base}/503"))
    assert not result.healthy and result.message == "status 503 not in [200]"
    result = await http_probe.check(spec(kind="http", url=f"{base}/503", expect_status=[200, 503]))
    assert result.healthy
    result = await http_probe.check(spec(kind="http", url=f"{base}/health", body_contains="degraded"))
    assert not result.healthy and "does not contain 'degraded'" in result.message
    result = await http_probe.check(spec(kind="http", url=f"{base}/health", body_regex=r'"version": "2\.'))
    assert not result.healthy and "does not match" in result.message
    result = await http_probe.check(spec(kind="http", url=f"{base}/health", body_regex=r'"version": "1\.\d+'))
    assert result.healthy
    result = await http_probe.check(spec(kind="http", url=f"{base}/slow", max_latency="100ms", timeout="2s"))
    assert not result.healthy and "slow" in result.message and result.latency_ms >= 250
    result = await http_probe.check(
        spec(kind="http", url=f"{base}/auth", headers={"Authorization": "Bearer s3cret-token", "X-Probe": "yes"})
    )
    assert result.healthy, result.message
    result = await http_probe.check(spec(kind="http", url=f"{base}/head", method="HEAD"))
    assert result.healthy, result.message
    await http_probe.aclose()


async def test_http_response_framings(http_probe: HttpProbe, web: LocalHttp) -> None:
    base = web.base()
    for path, needle in [
        ("/chunked", "hello world"),
        ("/continue", "after interim"),
        ("/until-close", "until the end"),
    ]:
        result = await http_probe.check(spec(kind="http", url=f"{base}{path}", body_contains=needle))
        assert result.healthy, (path, result.message)
    # bodies are read up to a limit: a needle past it is not found, and nothing breaks
    big = await http_probe.check(spec(kind="http", url=f"{base}/big", body_contains="needle-at-the-end"))
    assert not big.healthy and "does not contain" in big.message
    assert (await http_probe.check(spec(kind="http", url=f"{base}/health"))).healthy
    garbage = await http_probe.check(spec(kind="http", url=f"{base}/garbage"))
    assert not garbage.healthy
    await http_probe.aclose()


async def test_http_keepalive_reuse_and_no_pool_poisoning(http_probe: HttpProbe, web: LocalHttp) -> None:
    base = web.base()
    healthy = spec(kind="http", url=f"{base}/health", timeout="1s")
    hang = spec(kind="http", url=f"{base}/hang", timeout="300ms")
    before = web.connections
    for _ in range(5):
        assert (await http_probe.check(healthy)).healthy
    assert web.connections - before == 1  # one keep-alive connection for five probes

    # several hung probes at once: each times out on time...
    t0 = time.monotonic()
    hung = await asyncio.gather(*(http_probe.check(hang) for _ in range(5)))
    assert all(not r.healthy and r.message == "timed out after 300ms" for r in hung)
    assert time.monotonic() - t0 < 1.3
    # ...and the next probes of the same origin are healthy at once, on a clean connection
    for _ in range(3):
        result = await http_probe.check(healthy)
        assert result.healthy, result.message
        assert result.latency_ms < 1000
    # the server closing an idle keep-alive connection is handled (a stale connection is retried once)
    for transport in list(web.transports):
        transport.close()
    await asyncio.sleep(0.05)
    result = await http_probe.check(healthy)
    assert result.healthy, result.message
    await http_probe.aclose()


async def test_http_server_that_never_answers(http_probe: HttpProbe, silent_port: int) -> None:
    t0 = time.monotonic()
    result = await http_probe.check(spec(kind="http", url=f"http://127.0.0.1:{silent_port}/health", timeout="400ms"))
    assert not result.healthy and result.message == "timed out after 400ms"
    assert 0.35 <= time.monotonic() - t0 < 1.4
    await http_probe.aclose()


async def test_http_connection_refused(http_probe: HttpProbe, closed_port: int) -> None:
    result = await http_probe.check(spec(kind="http", url=f"http://127.0.0.1:{closed_port}/health"))
    assert not result.healthy and result.message == f"connection refused 127.0.0.1:{closed_port}"
    await http_probe.aclose()


async def test_https_verify_switch(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    server = LocalHttp()
    await server.start(ssl_ctx=ctx)
    probe = HttpProbe()
    try:
        url = f"{server.base('https')}/health"
        insecure = await probe.check(spec(kind="http", url=url, verify_tls=False, body_contains="ok"))
        assert insecure.healthy, insecure.message
        strict = await probe.check(spec(kind="http", url=url, verify_tls=True))
        assert not strict.healthy and "certificate" in strict.message.lower()
        hang = await probe.check(
            spec(kind="http", url=f"{server.base('https')}/hang", verify_tls=False, timeout="300ms")
        )
        assert not hang.healthy and hang.message == "timed out after 300ms"
        assert (await probe.check(spec(kind="http", url=url, verify_tls=False))).healthy
    finally:
        await probe.aclose()
        await server.stop()


# ---------------------------------------------------------------------------------------------- tcp


async def test_tcp_probe(closed_port: int) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(STANDIN), "--name", "tcp-target", "--port", str(port), "--protocol", "tcp"],
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        probe = TcpProbe()
        check = spec(kind="tcp", host="127.0.0.1", port=port, timeout="1s")
        deadline = time.monotonic() + 10
        result = await probe.check(check)
        while not result.healthy and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            result = await probe.check(check)
        assert result.healthy and f"127.0.0.1:{port}" in result.message
        assert_result(result)
        refused = await probe.check(spec(kind="tcp", port=closed_port))
        assert not refused.healthy and refused.message == f"connection refused 127.0.0.1:{closed_port}"
        unresolvable = await probe.check(spec(kind="tcp", host="no-such-host.invalid", port=80))
        assert not unresolvable.healthy and "resolve" in unresolvable.message
    finally:
        proc.kill()
        proc.wait(timeout=5)


# ---------------------------------------------------------------------------------------------- exec


def live_with(marker: str) -> int:
    return len(processes_with(marker))


async def test_exec_probe() -> None:
    probe = ExecProbe()
    ok = await probe.check(spec(kind="exec", command=["true"]))
    assert ok.healthy and ok.message.startswith("exit 0")
    script = "echo checking; echo 'db not ready' >&2; exit 3"
    failing = await probe.check(spec(kind="exec", command=["sh", "-c", script]))
    assert not failing.healthy and failing.message == "exit 3: db not ready"
    env = await probe.check(
        spec(kind="exec", command=["sh", "-c", 'test "$PROBE_FLAG" = on'], env={"PROBE_FLAG": "on"})
    )
    assert env.healthy
    missing = await probe.check(spec(kind="exec", command=["no-such-command-xyz"]))
    assert not missing.healthy and "not found" in missing.message


async def test_exec_probe_timeout_kills_the_group() -> None:
    marker = f"{37 + uuid.uuid4().int % 1000}.4242"
    probe = ExecProbe()
    t0 = time.monotonic()
    result = await probe.check(
        spec(kind="exec", command=["sh", "-c", f"sleep {marker} & sleep {marker}; true"], timeout="400ms")
    )
    elapsed = time.monotonic() - t0
    assert not result.healthy and result.message.startswith("timed out after 400ms")
    assert 0.35 <= elapsed < 1.4
    deadline = time.monotonic() + 3
    while live_with(f"sleep {marker}") and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert live_with(f"sleep {marker}") == 0


# ---------------------------------------------------------------------------------------------- postgres


@pytest.mark.postgres
async def test_postgres_probe(postgres_url: str, closed_port: int, silent_port: int) -> None:
    probe = PostgresProbe()
    ok = await probe.check(spec(kind="postgres", dsn=postgres_url, query="SELECT 1"))
    assert ok.healthy, ok.message
    assert_result(ok)
    bad_query = await probe.check(spec(kind="postgres", dsn=postgres_url, query="SELECT * FROM no_such_table_x"))
    assert not bad_query.healthy and "no_such_table_x" in bad_query.message

    refused = await probe.check(spec(kind="postgres", dsn=f"postgresql://app:s3cretpw@127.0.0.1:{closed_port}/db"))
    assert not refused.healthy and "refused" in refused.message.lower()
    assert "s3cretpw" not in refused.message
    kv = await probe.check(spec(kind="postgres", dsn=f"host=127.0.0.1 port={closed_port} user=x password=s3cretpw"))
    assert not kv.healthy and "s3cretpw" not in kv.message

    t0 = time.monotonic()
    hung = await probe.check(spec(kind="postgres", dsn=f"postgresql://x@127.0.0.1:{silent_port}/db", timeout="500ms"))
    assert not hung.healthy and hung.message == "timed out after 500ms"
    assert time.monotonic() - t0 < 1.5
    slow = await probe.check(spec(kind="postgres", dsn=postgres_url, query="SELECT pg_sleep(5)", timeout="500ms"))
    assert not slow.healthy and slow.message == "timed out after 500ms"
    assert (await probe.check(spec(kind="postgres", dsn=postgres_url))).healthy


# ---------------------------------------------------------------------------------------------- redis


@pytest.mark.redis
async def test_redis_probe(redis_url: str, closed_port: int, silent_port: int) -> None:
    probe = RedisProbe()
    ok = await probe.check(spec(kind="redis", url=redis_url))
    assert ok.healthy and "PONG" in ok.message
    assert_result(ok)
    refused = await probe.check(spec(kind="redis", url=f"redis://:s3cretpw@127.0.0.1:{closed_port}/0"))
    assert not refused.healthy and refused.message == f"connection refused 127.0.0.1:{closed_port}"
    assert "s3cretpw" not in refused.message
    t0 = time.monotonic()
    hung = await probe.check(spec(kind="redis", url=f"redis://127.0.0.1:{silent_port}/0", timeout="500ms"))
    assert not hung.healthy and hung.message.startswith("timed out after 500ms")
    assert time.monotonic() - t0 < 1.5


# ---------------------------------------------------------------------------------------------- registry


async def test_registry_dispatches_by_kind(web: LocalHttp) -> None:
    registry = build_probe_registry()
    result = await registry.check(spec(kind="http", url=f"{web.base()}/health"))
    assert result.healthy
    result = await registry.check(spec(kind="tcp", port=web.port))
    assert result.healthy
    with pytest.raises(ConfigInvalid):  # a probe given another kind's spec is a programming error
        await TcpProbe().check(spec(kind="http", url=f"{web.base()}/health"))
    await registry.get("http").aclose()  # type: ignore[attr-defined]
