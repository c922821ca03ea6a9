"""Service activities: validate, load, start, stop, restart, probe, wait until healthy.

All are idempotent (the drivers are), heartbeat while they wait, and raise typed errors: a
``ApplicationError`` whose ``type`` is the domain error's class name.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.exceptions import ApplicationError

from windflow.activities._support import StateWriter, new_event, outbox, to_application_error
from windflow.domain.contracts import (
    CheckHealthInput,
    ServiceActionInput,
    ServiceActionResult,
    ValidateSystemInput,
    ValidateSystemResult,
    WaitHealthyInput,
    WaitHealthyResult,
)
from windflow.domain.errors import ConfigInvalid, DriverFailed, HealthCheckFailed, NotFound, WindflowError
from windflow.domain.events import EventType, HealthCheck
from windflow.domain.graph import closure, layers
from windflow.domain.health import HealthTracker, HealthVerdict
from windflow.domain.models import ServiceSpec
from windflow.domain.results import DriverResult, ProbeResult, RunStatus
from windflow.domain.system import Problem, graph_problems, problems_from
from windflow.drivers.base import DriverRegistry
from windflow.metrics import count_restart
from windflow.persistence.repositories import ProbeResultRepository, ServiceRepository, spec_of
from windflow.probes.base import ProbeRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

services = ServiceRepository()
probe_results = ProbeResultRepository()
log = logging.getLogger(__name__)

#: how often wait_healthy probes while a service comes up (faster than the steady-state interval, never
#: slower): every STARTUP_POLL for the first STARTUP_FAST seconds, where most services become healthy (a
#: refused connect costs ~0.1 ms), then backing off ×1.5 up to STARTUP_POLL_MAX for slow starters. The
#: cadence is the detection delay on every hop of an initialization's critical path: with a backoff from
#: the first probe on, a service that binds after 0.3–1 s was seen up to 0.1–0.5 s late.
STARTUP_POLL = 0.025
STARTUP_FAST = 2.0
STARTUP_POLL_MAX = 0.5
#: wait_healthy heartbeats at most this often (its heartbeat timeout is at least 5 s)
HEARTBEAT_EVERY = 0.5


class ServiceActivities:
    def __init__(
        self,
        *,
        db: Database,
        drivers: DriverRegistry,
        probes: ProbeRegistry,
        probe_history: int = 1000,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.drivers = drivers
        self.probes = probes
        self.probe_history = probe_history
        self.state = StateWriter(db, on_commit)

    # ----------------------------------------------------------------- registry

    @activity.defn(name="validate_system")
    async def validate_system(self, req: ValidateSystemInput) -> ValidateSystemResult:
        """Re-validate every stored config of the requested components (and their dependencies)."""
        async with self.db.read() as session:
            rows = await services.all(session=session)
        raw = {r.id: r for r in rows}
        graph = {r.id: list(r.depends_on or []) for r in rows}
        problems: list[Problem] = []
        unknown = [c for c in req.components if c not in raw]
        for name in unknown:
            problems.append(Problem(loc=["components", name], msg="no such service", type="missing"))
        wanted = closure(graph, [c for c in req.components if c in raw]) if req.components else set(raw)
        specs: list[ServiceSpec] = []
        for name in sorted(wanted):
            try:
                specs.append(spec_of(raw[name]))
            except Exception as exc:  # a stored config that no longer validates
                from pydantic import ValidationError

                if isinstance(exc, ValidationError):
                    problems.extend(problems_from(exc, ["services", name]))
                else:
                    problems.append(Problem(loc=["services", name], msg=str(exc)))
        sub = {name: [d for d in graph.get(name, []) if d in wanted or d not in raw] for name in wanted}
        problems.extend(graph_problems(sub))
        if not wanted and not problems:
            problems.append(Problem(loc=["components"], msg="the registry has no services to initialize"))
        if problems:
            return ValidateSystemResult(valid=False, problems=[p.model_dump() for p in problems])
        return ValidateSystemResult(valid=True, specs=specs, plan=layers(sub))

    @activity.defn(name="load_service")
    async def load_service(self, service_id: str) -> ServiceSpec:
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=service_id)
        if row is None:
            raise to_application_error(NotFound(f"service {service_id!r} not found"))
        return spec_of(row)

    @activity.defn(name="validate_config")
    async def validate_config(self, data: dict) -> ServiceSpec:  # type: ignore[type-arg]
        from pydantic import ValidationError

        try:
            return ServiceSpec.model_validate(data)
        except ValidationError as exc:
            problems = problems_from(exc)
            raise to_application_error(
                ConfigInvalid(f"invalid config: {problems[0].path}: {problems[0].msg}",
                              details=[p.model_dump() for p in problems])
            ) from None

    # ----------------------------------------------------------------- control

    async def _drive(self, action: str, req: ServiceActionInput) -> DriverResult:
        driver = self.drivers.for_service(req.spec)
        try:
            if action == "start":
                result = await driver.start(req.spec)
            elif action == "stop":
                result = await driver.stop(req.spec, grace=req.grace)
            else:
                result = await driver.restart(req.spec, grace=req.grace)
        except WindflowError as exc:
            await self.state.set_state(req.spec.id, "failed", source=req.source, message=f"{action}: {exc.message}")
            raise to_application_error(exc) from None
        if not result.ok:
            log.warning("%s %s failed: %s", action, req.spec.id, result.message)
            await self.state.set_state(req.spec.id, "failed", source=req.source,
                                       message=f"{action}: {result.message}")
            raise to_application_error(DriverFailed(f"{action} {req.spec.id}: {result.message}",
                                                    details={"output": result.output[-2000:]}))
        log.info("%s %s: %s", action, req.spec.id, result.message or ("done" if result.changed else "no change"))
        return result

    @activity.defn(name="start_service")
    async def start_service(self, req: ServiceActionInput) -> ServiceActionResult:
        result = await self._drive("start", req)
        if result.changed or result.pid:
            await self.state.set_state(req.spec.id, "starting", source=req.source, pid=result.pid,
                                       message="started" if result.changed else "already running",
                                       detail={"run_id": req.run_id} if req.run_id else None)
        return ServiceActionResult(result=result)

    @activity.defn(name="stop_service")
    async def stop_service(self, req: ServiceActionInput) -> ServiceActionResult:
        activity.heartbeat("stopping")
        result = await self._drive("stop", req)
        await self.state.set_state(req.spec.id, "stopped", source=req.source,
                                   message="stopped" if result.changed else "was not running")
        return ServiceActionResult(result=result)

    @activity.defn(name="restart_service")
    async def restart_service(self, req: ServiceActionInput) -> ServiceActionResult:
        activity.heartbeat("restarting")
        result = await self._drive("restart", req)
        if result.changed:
            count_restart(req.spec.id, source=req.source)
        await self.state.set_state(req.spec.id, "starting", source=req.source, pid=result.pid, message="restarted")
        return ServiceActionResult(result=result)

    # ----------------------------------------------------------------- health

    async def _store_probes(self, spec: ServiceSpec, results: list[ProbeResult], verdict: str | None, *,
                            state: str | None = None, source: str = "", message: str = "",
                            detail: dict | None = None) -> None:  # type: ignore[type-arg]
        """Record probe results (and, with ``state``, the service's new state) in one transaction."""
        if not results and state is None:
            return

        async def work(session: AsyncSession) -> None:
            if await services.get(session=session, service_id=spec.id) is None:
                return
            if results:
                last = results[-1]
                await probe_results.add(session=session, service_id=spec.id, results=results,
                                        keep=self.probe_history)
                await outbox.add(session=session, event=new_event(
                    EventType.HEALTH_CHECK,
                    HealthCheck(service_id=spec.id, healthy=last.healthy, latency_ms=last.latency_ms,
                                message=last.message, checked_at=last.checked_at, verdict=verdict),
                ))
            if state is not None:
                await self.state.set_state_in(session, spec.id, state, source=source, message=message, detail=detail)

        await self.db.write_batched(work)
        if self.state.on_commit:
            self.state.on_commit()

    @activity.defn(name="check_health")
    async def check_health(self, req: CheckHealthInput) -> ProbeResult:
        if req.spec.health is None:
            status = await self.drivers.for_service(req.spec).status(req.spec)
            healthy = status.status != RunStatus.STOPPED
            result = ProbeResult(healthy=healthy, latency_ms=0.0, message=f"no probe; driver says {status.status}",
                                 checked_at=datetime.now(UTC))
        else:
            result = await self.probes.check(req.spec.health, service=req.spec.id)
        if req.record:
            await self._store_probes(req.spec, [result], None)
        return result

    @activity.defn(name="wait_healthy")
    async def wait_healthy(self, req: WaitHealthyInput) -> WaitHealthyResult:
        """Probe until healthy (``success_threshold`` passes in a row); heartbeat every round.

        Fails at once (non-retryable) when the process is gone, and after ``timeout`` otherwise.
        """
        spec = req.spec
        driver = self.drivers.for_service(spec)
        begin = time.monotonic()
        health = spec.health
        tracker = HealthTracker(
            failure_threshold=health.failure_threshold if health else 1,
            success_threshold=health.success_threshold if health else 1,
            start_period=health.start_period if health else 0.0,
        )
        # No "starting" write here: every caller ran start_service / restart_service just before, and those
        # record it. One store write less per component on each start.
        recent: list[ProbeResult] = []
        checks = 0
        last_beat = 0.0
        poll = STARTUP_POLL
        while True:
            elapsed = time.monotonic() - begin
            if req.require_running:
                status = await driver.status(spec)
                if status.status == RunStatus.STOPPED:
                    message = f"{spec.id} exited while starting" + (f": {status.message}" if status.message else "")
                    await self._store_probes(spec, recent[-10:], "unhealthy", state="failed", source=req.source,
                                             message=message)
                    raise ApplicationError(message, {"checks": checks}, type="ProcessExited", non_retryable=True)
            if health is None:
                result = ProbeResult(healthy=True, latency_ms=0.0, message="no health check; process running",
                                     checked_at=datetime.now(UTC))
            else:
                result = await self.probes.check(health, service=spec.id)
            checks += 1
            recent.append(result)
            del recent[:-50]
            verdict = tracker.observe(result.healthy, since_start=elapsed)
            if elapsed - last_beat >= HEARTBEAT_EVERY or checks == 1:  # each beat is converted and queued:
                last_beat = elapsed  # at 40 rounds a second, beating every round costs more than the probe
                activity.heartbeat({"checks": checks, "elapsed": round(elapsed, 3), "last": result.message})
            if verdict == HealthVerdict.HEALTHY:
                await self._store_probes(spec, recent[-10:], "healthy", state="healthy", source=req.source,
                                         message="healthy", detail={"healthy_since": datetime.now(UTC).isoformat()})
                return WaitHealthyResult(healthy=True, elapsed=time.monotonic() - begin, checks=checks, last=result,
                                         message=result.message)
            if elapsed >= req.timeout:
                message = f"{spec.id} not healthy after {req.timeout:g}s: {result.message}"
                await self._store_probes(spec, recent[-10:], "unhealthy", state="failed", source=req.source,
                                         message=message)
                raise to_application_error(HealthCheckFailed(message, details={
                    "checks": checks, "last": [r.model_dump(mode="json") for r in recent[-5:]]}))
            interval = health.interval if health else 0.5
            await asyncio.sleep(min(poll, interval, max(0.0, req.timeout - elapsed)))
            if elapsed >= STARTUP_FAST:
                poll = min(poll * 1.5, STARTUP_POLL_MAX)
