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
from windflow.outbound import OutboundPolicy, OutboundRefused


class TcpProbe:
    """Connects only where the outbound policy allows (link-local and metadata addresses never), to the address
    it checked."""

    kind = ProbeKind.TCP

    def __init__(self, *, outbound: OutboundPolicy | None = None) -> None:
        self.outbound = outbound or OutboundPolicy()

    async def check(self, spec: HealthSpec) -> ProbeResult:
        if not isinstance(spec, TcpHealth):
            raise ConfigInvalid(f"{type(self).__name__} cannot run a {spec.kind} check")
        if not isinstance(spec.port, int):  # a replica's probe has its template resolved before it runs
            raise ConfigInvalid(f"tcp probe port {spec.port!r} is a template: it names a port per replica")
        target = f"[{spec.host}]:{spec.port}" if ":" in spec.host else f"{spec.host}:{spec.port}"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(spec.timeout):
                writer = await self._connect(spec.host, spec.port)
                latency = time.perf_counter() - started
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
        except TimeoutError:
            return _result(False, started, f"timed out after {format_duration(spec.timeout)} connecting to {target}")
        except OutboundRefused as exc:
            return _result(False, started, f"{target}: {exc}")
        except ConnectionRefusedError:
            return _result(False, started, f"connection refused {target}")
        except socket.gaierror as exc:
            return _result(False, started, f"cannot resolve {spec.host!r}: {exc.strerror or exc}")
        except OSError as exc:
            return _result(False, started, f"cannot connect to {target}: {exc.strerror or exc}")
        return _result(True, started, f"connected to {target} in {latency * 1000:.1f} ms", latency)

    async def _connect(self, host: str, port: int) -> asyncio.StreamWriter:
        last: OSError | None = None
        for _, address in await self.outbound.resolve(host, port):
            try:
                return await _open(address, port)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last


async def _open(host: str, port: int) -> asyncio.StreamWriter:
    _, writer = await asyncio.open_connection(host, port)
    return writer


def _result(healthy: bool, started: float, message: str, latency: float | None = None) -> ProbeResult:
    if latency is None:
        latency = time.perf_counter() - started
    return ProbeResult(
        healthy=healthy, latency_ms=round(latency * 1000, 3), message=message, checked_at=datetime.now(UTC)
    )
