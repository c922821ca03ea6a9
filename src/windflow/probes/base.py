"""Health checks: one Protocol, one class per probe kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from windflow.domain.errors import ConfigInvalid
from windflow.domain.models import HealthSpec, ProbeKind
from windflow.domain.results import ProbeResult
from windflow.metrics import observe_probe


@runtime_checkable
class HealthProbe(Protocol):
    kind: ProbeKind

    async def check(self, spec: HealthSpec) -> ProbeResult:
        """Run one probe; never raises for an unhealthy target and never outlives ``spec.timeout``."""
        ...


class ProbeRegistry:
    def __init__(self, probes: Mapping[ProbeKind, HealthProbe]) -> None:
        self._probes = dict(probes)

    def get(self, kind: ProbeKind | str) -> HealthProbe:
        try:
            return self._probes[ProbeKind(kind)]
        except (KeyError, ValueError):
            raise ConfigInvalid(f"no probe registered for kind {kind!r}") from None

    def kinds(self) -> list[ProbeKind]:
        return sorted(self._probes)

    async def check(self, spec: HealthSpec, *, service: str | None = None) -> ProbeResult:
        """Run the probe of ``spec.kind``; every probe's duration goes into the probe metric here, labelled
        with ``service`` (the id of the service probed) when the caller names it."""
        result = await self.get(spec.kind).check(spec)
        observe_probe(spec.kind, result.latency_ms, service=service)
        return result
