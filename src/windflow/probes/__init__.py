"""Health checks: one probe class per kind.

The concrete probes are imported inside :func:`build_probe_registry`, so importing ``windflow.probes.base``
stays cheap (no httpx2, psycopg or redis).
"""

from __future__ import annotations

from windflow.probes.base import HealthProbe, ProbeRegistry

__all__ = ["HealthProbe", "ProbeRegistry", "build_probe_registry"]


def build_probe_registry() -> ProbeRegistry:
    """One instance per kind, shared by every check of the process (the HTTP probe pools connections)."""
    from windflow.domain.models import ProbeKind
    from windflow.probes.exec import ExecProbe
    from windflow.probes.http import HttpProbe
    from windflow.probes.postgres import PostgresProbe
    from windflow.probes.redis import RedisProbe
    from windflow.probes.tcp import TcpProbe

    return ProbeRegistry({
        ProbeKind.HTTP: HttpProbe(),
        ProbeKind.TCP: TcpProbe(),
        ProbeKind.EXEC: ExecProbe(),
        ProbeKind.POSTGRES: PostgresProbe(),
        ProbeKind.REDIS: RedisProbe(),
    })
