"""How services are started, stopped, restarted and observed: one driver class per kind.

The concrete drivers are imported inside :func:`build_driver_registry`, so that importing
``windflow.drivers.base`` (as activity modules do, and workflows through them) stays cheap and pulls in
neither httpx2 nor subprocess machinery.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from windflow.drivers.base import DriverRegistry, ServiceDriver

__all__ = ["DriverRegistry", "ServiceDriver", "build_driver_registry"]


def build_driver_registry(*, data_dir: Path, outbound: Any = None) -> DriverRegistry:
    """All drivers; the process driver keeps its state files and logs under ``data_dir``; the http driver
    connects where ``outbound`` (a :class:`windflow.outbound.OutboundPolicy`; None: defaults) allows."""
    from windflow.domain.models import DriverKind
    from windflow.drivers.command import CommandDriver
    from windflow.drivers.http import HttpDriver
    from windflow.drivers.noop import NoopDriver
    from windflow.drivers.process import ProcessDriver

    return DriverRegistry(
        {
            DriverKind.PROCESS: ProcessDriver(data_dir=Path(data_dir)),
            DriverKind.COMMAND: CommandDriver(),
            DriverKind.HTTP: HttpDriver(outbound=outbound),
            DriverKind.NOOP: NoopDriver(),
        }
    )
