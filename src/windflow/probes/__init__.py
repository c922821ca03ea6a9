"""Health checks: one probe class per kind.

The concrete probes are imported inside :func:`build_probe_registry`, so importing ``windflow.probes.base``
stays cheap (no httpx2, psycopg or redis).
"""

from __future__ import annotations

from typing import Any

from windflow.probes.base import HealthProbe, ProbeRegistry

__all__ = ["HealthProbe", "ProbeRegistry", "build_probe_registry"]


def build_probe_registry(*, outbound: Any = None) -> ProbeRegistry:
    """One instance per kind, shared by every check of the process (the HTTP probe pools connections).
    ``outbound``: the :class:`windflow.outbound.OutboundPolicy` HTTP checks connect under (None: defaults)."""
    from windflow.domain.models import ProbeKind
    from windflow.probes.exec import ExecProbe
    from windflow.probes.http import HttpProbe
    from windflow.probes.postgres import PostgresProbe
    from windflow.probes.redis import RedisProbe
    from windflow.probes.tcp import TcpProbe

    return ProbeRegistry(
        {
            ProbeKind.HTTP: HttpProbe(outbound=outbound),
            ProbeKind.TCP: TcpProbe(outbound=outbound),
            ProbeKind.EXEC: ExecProbe(),
            ProbeKind.POSTGRES: PostgresProbe(),
            ProbeKind.REDIS: RedisProbe(),
        }
    )
