"""PostgreSQL health checks: connect (psycopg 3, async), run ``spec.query``, close."""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime

import psycopg

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec, PostgresHealth, ProbeKind
from windflow.domain.redaction import redact_text
from windflow.domain.results import ProbeResult


def _first_lines(text: str, limit: int = 300) -> str:
    """psycopg messages span lines (a hint follows the error): keep the error, on one line."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    out = lines[0] if lines else text
    return out[:limit]


class PostgresProbe:
    kind = ProbeKind.POSTGRES

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, PostgresHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        started = time.perf_counter()
        # libpq rounds connect_timeout to whole seconds, minimum 2: asyncio.timeout is the real bound
        connect_timeout = max(2, math.ceil(spec.timeout))
        try:
            async with asyncio.timeout(spec.timeout):
                conn = await psycopg.AsyncConnection.connect(spec.dsn, connect_timeout=connect_timeout, autocommit=True)
                try:
                    await conn.execute(spec.query)
                finally:
                    await conn.close()
        except TimeoutError:
            return _result(False, started, f"timed out after {format_duration(spec.timeout)}")
        except psycopg.Error as exc:
            return _result(False, started, redact_text(_first_lines(str(exc)) or type(exc).__name__))
        except OSError as exc:
            return _result(False, started, redact_text(f"{type(exc).__name__}: {exc}"))
        latency = time.perf_counter() - started
        return _result(True, started, f"{spec.query!r} ok in {latency * 1000:.1f} ms", latency)


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(
        healthy=healthy, latency_ms=round(latency * 1000, 3), message=message, checked_at=datetime.now(UTC)
    )
