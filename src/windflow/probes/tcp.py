"""TCP health checks: the port accepts a connection within the timeout."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from datetime import UTC, datetime

from windflow.domain.durations import format_duration
from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec, ProbeKind, TcpHealth
from windflow.domain.results import ProbeResult


class TcpProbe:
    kind = ProbeKind.TCP

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, TcpHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        target = f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(spec.timeout):
                _, writer = await asyncio.open_connection(spec.host, spec.port)
                latency = time.perf_counter() - started
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except TimeoutError:
            return _result(False, started, f"timed out after {format_duration(spec.timeout)} connecting to {target}")
        except ConnectionRefusedError:
            return _result(False, started, f"connection refused {target}")
        except socket.gaierror as exc:
            return _result(False, started, f"cannot resolve {spec.host!r}: {exc.strerror or exc}")
        except OSError as exc:
            return _result(False, started, f"cannot connect to {target}: {exc.strerror or exc}")
        return _result(True, started, f"connected to {target} in {latency * 1000:.1f} ms", latency)


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(healthy=healthy, latency_ms=round(latency * 1000, 3), message=message,
                       checked_at=datetime.now(UTC))
