"""The ``noop`` driver: starts nothing. For dry runs and for services something else manages."""

# ruff: noqa: ARG002  (Protocol methods that ignore their arguments)

from __future__ import annotations

from windflow.domain.models import DriverKind, ServiceSpec
from windflow.domain.results import DriverResult, ExitInfo, RunStatus, ServiceStatus


class NoopDriver:
    kind = DriverKind.NOOP

    async def start(self, service: ServiceSpec) -> DriverResult:
        return DriverResult(ok=True, action="start", changed=False, message="noop")

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        return DriverResult(ok=True, action="stop", changed=False, message="noop")

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        return DriverResult(ok=True, action="restart", changed=False, message="noop")

    async def status(self, service: ServiceSpec) -> ServiceStatus:
        return ServiceStatus(status=RunStatus.UNKNOWN, message="noop: not observed")

    async def wait_exit(self, service: ServiceSpec) -> ExitInfo | None:
        return None
