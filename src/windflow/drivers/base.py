"""How a service is started, stopped, restarted and observed. One small Protocol; one class per kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import DriverKind, ServiceSpec
from windflow.domain.results import DriverResult, ExitInfo, ServiceStatus


@runtime_checkable
class ServiceDriver(Protocol):
    kind: DriverKind

    async def start(self, service: ServiceSpec) -> DriverResult:
        """Start the service. Idempotent: a running service is reported with ``changed=False``."""
        ...

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        """Stop the service (grace period before force). Idempotent: stopping a stopped one succeeds."""
        ...

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult: ...

    async def status(self, service: ServiceSpec) -> ServiceStatus: ...

    async def wait_exit(self, service: ServiceSpec) -> ExitInfo | None:
        """Return when the running service exits; ``None`` at once if this driver cannot observe exits."""
        ...


class DriverRegistry:
    """Drivers keyed by kind; built once in the composition root."""

    def __init__(self, drivers: Mapping[DriverKind, ServiceDriver]) -> None:
        self._drivers = dict(drivers)

    def for_service(self, service: ServiceSpec) -> ServiceDriver:
        return self.get(service.driver)

    def get(self, kind: DriverKind) -> ServiceDriver:
        try:
            return self._drivers[kind]
        except KeyError:
            raise ConfigInvalid(f"no driver registered for kind {kind.value!r}") from None

    def kinds(self) -> list[DriverKind]:
        return sorted(self._drivers)
