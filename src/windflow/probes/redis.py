"""Redis health checks: PING on a fresh connection (redis.asyncio), no retries, then ``aclose()``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec, ProbeKind, RedisHealth
from windflow.domain.redaction import redact_text
from windflow.domain.results import ProbeResult


def _target(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError:
        port = 6379
    return f"{parts.hostname or '?'}:{port}"


class RedisProbe:
    kind = ProbeKind.REDIS

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, RedisHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        started = time.perf_counter()
        target = _target(spec.url)
        try:
            # no retries: the health state machine decides what a failure means
            client = aioredis.Redis.from_url(
                spec.url,
                socket_connect_timeout=spec.timeout,
                socket_timeout=spec.timeout,
                retry=Retry(NoBackoff(), 0),
                single_connection_client=True,
            )
        except (ValueError, RedisError) as exc:
            return _result(False, started, redact_text(f"invalid Redis URL: {exc}"))
        try:
            async with asyncio.timeout(spec.timeout):
                pong = await client.ping()
        except TimeoutError:
            _close_later(client)  # closing a hung connection must not stretch the probe past its timeout
            return _result(False, started, f"timed out after {format_duration(spec.timeout)} ({target})")
        except (RedisError, OSError) as exc:
            _close_later(client)
            return _result(False, started, _describe(exc, target))
        except BaseException:
            _close_later(client)
            raise
        with contextlib.suppress(Exception):
            await client.aclose()
        latency = time.perf_counter() - started
        if not pong:
            return _result(False, started, f"PING to {target} not answered with PONG", latency)
        return _result(True, started, f"PONG from {target} in {latency * 1000:.1f} ms", latency)


_closing: set[asyncio.Task[None]] = set()


def _close_later(client: aioredis.Redis) -> None:
    async def close() -> None:
        with contextlib.suppress(Exception):
            await client.aclose()

    task = asyncio.get_running_loop().create_task(close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


def _describe(exc: BaseException, target: str) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return f"connection refused {target}"
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if "Connection refused" in text:
        return f"connection refused {target}"
    return redact_text(f"{target}: {text}")


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(
        healthy=healthy, latency_ms=round(latency * 1000, 3), message=message, checked_at=datetime.now(UTC)
    )
