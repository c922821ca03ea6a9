"""Supervision activities: watch a service, check its dependencies, run one recovery attempt.

``watch_service`` is the only long-running one: it probes on the service's own interval in this
worker (a probe is not a workflow task) and returns as soon as the process exits (seen at once through
the driver) or the probe has failed ``failure_threshold`` times in a row.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio import activity

from windflow.activities._support import StateWriter, add_new_events, new_event, outbox
from windflow.domain.contracts import (
    SUPERVISABLE_STATES,
    DependencyCheckInput,
    DependencyCheckResult,
    RecordSupervisionInput,
    RecoverStepInput,
    RecoverStepResult,
    SweepPlan,
    WaitDependenciesInput,
    WatchInput,
    WatchResult,
)
from windflow.domain.errors import WindflowError
from windflow.domain.events import EVENT_DATA_MODELS, EventType, HealthCheck, make_event
from windflow.domain.health import HealthTracker, HealthVerdict
from windflow.domain.models import ServiceSpec
from windflow.domain.results import ProbeResult, RunStatus
from windflow.drivers.base import DriverRegistry
from windflow.metrics import RECOVERY_DURATION, count_restart
from windflow.persistence.repositories import (
    ProbeResultRepository,
    RunSummaryRepository,
    ServiceRepository,
    applied_spec_of,
    spec_of,
)
from windflow.probes.base import ProbeRegistry

if TYPE_CHECKING:
    from windflow.persistence.db import Database

services = ServiceRepository()
probe_results = ProbeResultRepository()
runs = RunSummaryRepository()
log = logging.getLogger(__name__)

#: the evidence of a verdict is written once the restart it triggers has been spawned (see _record_later), or
#: after this many seconds when no restart follows in this worker
EVIDENCE_DELAY = 1.0
#: probe cadence while a restarted service comes up: fine-grained, recovery time is the product's figure
RECOVERY_POLL = 0.02
RECOVERY_POLL_MAX = 0.25


def _now() -> datetime:
    return datetime.now(UTC)




def _is_job(row: Any) -> bool:
    """A stored service that is a job (``kind: job``): it runs to completion and is never supervised."""
    return (row.spec or {}).get("kind") == "job"

class _Readiness:
    """A watched service's two verdicts, liveness and readiness, and the one state they make: ``healthy`` (alive
    and ready) or ``not_ready`` (alive, not ready: dependants wait, nothing restarts it)."""

    def __init__(self, spec: ServiceSpec) -> None:
        self.service_id = spec.id
        self.is_alive = False
        self.is_ready: bool | None = None
        self.recorded: str | None = None

    async def alive(self, state: StateWriter) -> None:
        self.is_alive = True
        await self._record(state, "")

    async def ready(self, ready: bool, message: str, state: StateWriter) -> None:
        self.is_ready = ready
        await self._record(state, message)

    async def _record(self, state: StateWriter, message: str) -> None:
        if not self.is_alive or self.is_ready is None:
            return
        wanted = "healthy" if self.is_ready else "not_ready"
        if wanted != self.recorded:
            self.recorded = wanted
            await state.set_state(self.service_id, wanted, source="supervisor",
                                  message="healthy" if self.is_ready else f"not ready: {message}".strip())


class SupervisionActivities:
    def __init__(
        self,
        *,
        db: Database,
        drivers: DriverRegistry,
        probes: ProbeRegistry,
        budget: Any | None = None,
        probe_history: int = 1000,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.drivers = drivers
        self.probes = probes
        self.budget = budget
        self.probe_history = probe_history
        self.state = StateWriter(db, on_commit)
        self.on_commit = on_commit
        self._evidence: dict[str, tuple[asyncio.Task[None], asyncio.Event]] = {}

    # ----------------------------------------------------------------- probes and records

    async def _probe(self, spec: ServiceSpec, which: str = "readiness") -> ProbeResult:
        """One check of ``which`` probe: ``readiness`` (is it ready: a dependency check) or ``liveness`` (is it
        alive: what restarts it); without that probe, whether the driver sees it running."""
        if spec.replicated:  # a replicated service (a dependency) is ready when min_ready replicas are
            results = await asyncio.gather(*(self._probe(spec.replica_spec(k), which)
                                             for k in range(spec.replicas or 0)))
            ready = sum(1 for r in results if r.healthy)
            return ProbeResult(healthy=ready >= spec.ready_needed(), latency_ms=max(r.latency_ms for r in results),
                               message=f"{ready}/{len(results)} replicas ready ({spec.ready_needed()} needed)",
                               checked_at=_now())
        probe = spec.liveness_spec() if which == "liveness" else spec.readiness_spec()
        if probe is None:
            status = await self.drivers.for_service(spec).status(spec)
            return ProbeResult(healthy=status.status != RunStatus.STOPPED, latency_ms=0.0,
                               message=f"driver says {status.status.value}", checked_at=_now())
        return await self.probes.check(probe, service=spec.id)

    async def _record_probes(self, spec: ServiceSpec, results: list[ProbeResult], verdict: str | None,
                             publish: bool) -> None:
        if not results:
            return
        async with self.db.write() as session:
            if await services.get(session=session, service_id=spec.id) is None:
                return
            await probe_results.add(session=session, service_id=spec.id, results=results, keep=self.probe_history)
            if publish:
                last = results[-1]
                await outbox.add(session=session, event=new_event(
                    EventType.HEALTH_CHECK,
                    HealthCheck(service_id=spec.id, healthy=last.healthy, latency_ms=last.latency_ms,
                                message=last.message, checked_at=last.checked_at, verdict=verdict)))
        if self.on_commit:
            self.on_commit()

    def _record_later(self, spec: ServiceSpec, results: list[ProbeResult], verdict: str) -> None:
        """Record the evidence of a verdict after the restart it triggers, not before returning the verdict.

        The write is ORM work on this worker's event loop plus SQLite's write lock: done at once it competes
        with the workflow task, the activity dispatch and the restart-budget lease that stand between a
        crash and the new process (measured: tens of ms on a loaded 2-core machine). ``recover_step`` in
        this worker releases it right after the spawn and before its own state writes, so the events keep
        their order (unhealthy evidence, then recovering, then healthy); otherwise it goes after
        ``EVIDENCE_DELAY``.
        """
        go = asyncio.Event()

        async def record() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(go.wait(), EVIDENCE_DELAY)
            try:
                await self._record_probes(spec, results, verdict, publish=True)
            except Exception:  # evidence, not state: log it, the supervision goes on
                log.exception("recording the probe results of %s failed", spec.id)

        task = asyncio.create_task(record())
        self._evidence[spec.id] = (task, go)
        task.add_done_callback(
            lambda t: self._evidence.pop(spec.id) if self._evidence.get(spec.id, (None,))[0] is t else None)

    async def _evidence_written(self, service_id: str) -> None:
        """Write the pending evidence of this service's last verdict now, and wait for it."""
        pending = self._evidence.get(service_id)
        if pending is not None:
            task, go = pending
            go.set()
            await asyncio.shield(task)

    # ----------------------------------------------------------------- watch

    @activity.defn(name="watch_service")
    async def watch_service(self, req: WatchInput) -> WatchResult:
        """Return the first bad verdict: the process exited, or the probe failed ``failure_threshold`` times."""
        spec = req.spec
        await self._evidence_written(spec.id)  # the previous verdict's evidence goes before anything new
        driver = self.drivers.for_service(spec)
        status = await driver.status(spec)
        if status.status == RunStatus.STOPPED:
            return WatchResult(verdict="not_running", message=status.message or f"{spec.id} is not running",
                               detected_at=_now())
        exit_task = asyncio.create_task(driver.wait_exit(spec))
        health = spec.liveness_spec()  # only liveness failures end the watch (and restart the service)
        since = req.since or status.started_at or _now()
        # readiness probed on its own: failing it makes the service not_ready, never restarts it
        gate = _Readiness(spec) if spec.separate_readiness else None
        ready_task = asyncio.create_task(self._watch_readiness(spec, since, gate)) if gate is not None else None
        if gate is not None and health is None:  # no liveness probe: alive is the process running, as it is
            await gate.alive(self.state)
        tracker = HealthTracker(
            failure_threshold=health.failure_threshold if health else 1,
            success_threshold=health.success_threshold if health else 1,
            start_period=health.start_period if health else 0.0,
        )
        unrecorded: list[ProbeResult] = []
        recent: list[ProbeResult] = []
        last_record = time.monotonic()
        healthy_since: float | None = None
        verdict = HealthVerdict.UNKNOWN
        probe_task: asyncio.Task[ProbeResult] | None = None
        # wake up often enough that a heartbeat goes out well within the heartbeat timeout, probes or not
        beat = activity.info().heartbeat_timeout
        wake = min(5.0, beat.total_seconds() / 3) if beat else 5.0
        try:
            next_probe = time.monotonic()
            while True:
                activity.heartbeat({"verdict": verdict.value, "checks": len(recent)})
                if health is not None and probe_task is None:
                    delay = max(0.0, next_probe - time.monotonic())
                    probe_task = asyncio.create_task(self._after(delay, lambda: self._probe(spec, "liveness")))
                waiting: set[asyncio.Future[Any]] = {exit_task}
                if probe_task is not None:
                    waiting.add(probe_task)
                done, _ = await asyncio.wait(waiting, timeout=wake, return_when=asyncio.FIRST_COMPLETED)
                if exit_task in done:
                    info = exit_task.result()
                    if info is not None:
                        self._record_later(spec, unrecorded, "unhealthy")
                        return WatchResult(
                            verdict="exited", message=info.message or f"pid {info.pid} exited",
                            exit_code=info.exit_code, signal=info.signal, detected_at=info.exited_at,
                            healthy_for=(time.monotonic() - healthy_since) if healthy_since else 0.0,
                            probes=recent[-5:],
                        )
                    # this driver cannot observe exits: rely on the probe alone
                    exit_task = asyncio.create_task(asyncio.Event().wait())  # type: ignore[arg-type]
                if probe_task is not None and probe_task in done:
                    result = probe_task.result()
                    probe_task = None
                    next_probe += health.interval if health else 1.0
                    if next_probe < time.monotonic():  # fell behind (slow probe): re-anchor, no burst
                        next_probe = time.monotonic()
                    unrecorded.append(result)
                    recent.append(result)
                    del recent[:-20]
                    previous = verdict
                    elapsed = (_now() - since).total_seconds()
                    verdict = tracker.observe(result.healthy, since_start=elapsed)
                    if verdict == HealthVerdict.HEALTHY and previous != HealthVerdict.HEALTHY:
                        healthy_since = time.monotonic()
                        await self._record_probes(spec, unrecorded, "healthy", publish=True)
                        unrecorded = []
                        last_record = time.monotonic()
                        if gate is None:
                            await self.state.set_state(spec.id, "healthy", source="supervisor", message="healthy")
                        else:
                            await gate.alive(self.state)
                    if verdict == HealthVerdict.UNHEALTHY:
                        self._record_later(spec, unrecorded, "unhealthy")
                        failing = [r for r in recent if not r.healthy][-tracker.failure_threshold:]
                        return WatchResult(
                            verdict="unhealthy",
                            message=f"probe failed {tracker.consecutive_failures} times: {result.message}",
                            detected_at=_now(),
                            healthy_for=(time.monotonic() - healthy_since) if healthy_since else 0.0,
                            probes=failing,
                        )
                if unrecorded and time.monotonic() - last_record >= req.record_every:
                    await self._record_probes(spec, unrecorded, None, publish=False)
                    unrecorded = []
                    last_record = time.monotonic()
        finally:
            for task in (exit_task, probe_task, ready_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _watch_readiness(self, spec: ServiceSpec, since: datetime, gate: _Readiness) -> None:
        """Probe readiness at its own interval for as long as the watch runs; record ``not_ready`` and ``healthy``
        as its verdict changes (a service is ``healthy`` when both alive and ready)."""
        probe = spec.readiness_spec()
        assert probe is not None
        tracker = HealthTracker(failure_threshold=probe.failure_threshold, success_threshold=probe.success_threshold,
                                start_period=probe.start_period)
        while True:
            result = await self.probes.check(probe, service=spec.id)
            verdict = tracker.observe(result.healthy, since_start=(_now() - since).total_seconds())
            if verdict in (HealthVerdict.HEALTHY, HealthVerdict.UNHEALTHY):
                await gate.ready(verdict == HealthVerdict.HEALTHY, result.message, self.state)
            await asyncio.sleep(probe.interval)

    @staticmethod
    async def _after(delay: float, make: Callable[[], Any]) -> Any:
        if delay > 0:
            await asyncio.sleep(delay)
        return await make()

    # ----------------------------------------------------------------- dependencies

    async def _specs(self, ids: list[str]) -> dict[str, ServiceSpec]:
        async with self.db.read() as session:
            return {s.id: s for s in await services.specs(session=session, ids=ids)}

    @activity.defn(name="check_dependencies")
    async def check_dependencies(self, req: DependencyCheckInput) -> DependencyCheckResult:
        """Probe each direct dependency now: which are unhealthy (dead is not the same as blocked)."""
        specs = await self._specs(req.depends_on)
        # a job is not watched once it completed: it cannot block a recovery
        probed = [d for d in req.depends_on if d in specs and not specs[d].is_job]
        results = await asyncio.gather(*(self._probe(specs[d]) for d in probed))
        out = DependencyCheckResult()
        for name, result in zip(probed, results, strict=True):
            if not result.healthy:
                out.unhealthy.append(name)
                out.messages[name] = result.message
        return out

    @activity.defn(name="wait_dependencies")
    async def wait_dependencies(self, req: WaitDependenciesInput) -> DependencyCheckResult:
        """Heartbeat until every direct dependency answers its probe again."""
        while True:
            result = await self.check_dependencies(DependencyCheckInput(service_id=req.service_id,
                                                                        depends_on=req.depends_on))
            if not result.unhealthy:
                return result
            activity.heartbeat({"waiting_for": result.unhealthy})
            await asyncio.sleep(req.poll)

    # ----------------------------------------------------------------- one recovery attempt

    @activity.defn(name="recover_step")
    async def recover_step(self, req: RecoverStepInput) -> RecoverStepResult:
        """Confirm → take a restart-budget lease → restart (idempotent) → wait until healthy."""
        spec = req.spec
        begin = time.monotonic()
        driver = self.drivers.for_service(spec)
        if req.confirm:
            result = await self._probe(spec, "liveness")
            if result.healthy:
                return RecoverStepResult(outcome="healthy", message=f"re-probe passed: {result.message}",
                                         probes=[result], elapsed=time.monotonic() - begin)
        lease = None
        if self.budget is not None:
            granted = await self.budget.acquire(service_id=spec.id, holder=req.holder)
            if not granted.granted:
                return RecoverStepResult(outcome="budget", message=granted.reason,
                                         retry_after=max(0.1, float(granted.retry_after)))
            lease = granted
        try:
            return await self._restart_and_wait(req, driver, begin)
        finally:
            if lease is not None:
                with contextlib.suppress(Exception):
                    await self.budget.release(lease_id=lease.id)  # type: ignore[union-attr]

    async def _restart_and_wait(self, req: RecoverStepInput, driver: Any, begin: float) -> RecoverStepResult:
        spec = req.spec
        status = await driver.status(spec)
        already = (
            status.status == RunStatus.RUNNING
            and status.started_at is not None
            and status.started_at >= req.requested_at
        )
        restarted = True
        if already:
            pid = status.pid  # a previous try of this very attempt restarted it (the worker died after)
        else:
            # the store writes (the verdict's evidence, then this state) run alongside the restart, not before
            # it: on SQLite they can wait for the lock held by the supervisor's own record_supervision
            async def mark() -> None:
                await self._evidence_written(spec.id)
                await self.state.set_state(
                    spec.id, "recovering", source=req.source, process_gone=True,
                    message=f"restarting ({req.reason}), attempt {req.attempt} of {req.max_attempts}")

            marking = asyncio.ensure_future(mark())
            try:
                result = await driver.restart(spec)
            except WindflowError as exc:
                await marking
                return RecoverStepResult(outcome="failed", message=f"restart failed: {exc.message}",
                                         elapsed=time.monotonic() - begin)
            except BaseException:
                marking.cancel()
                with contextlib.suppress(BaseException):
                    await marking
                raise
            await marking
            if not result.ok:
                return RecoverStepResult(outcome="failed", message=f"restart failed: {result.message}",
                                         elapsed=time.monotonic() - begin)
            count_restart(spec.id, req.reason, req.source)
            pid = result.pid
        since = time.monotonic()
        health = spec.liveness_spec()  # recovered = alive again; readiness is the watch's to report (not_ready)
        tracker = HealthTracker(
            failure_threshold=10**6, success_threshold=health.success_threshold if health else 1,
            start_period=health.start_period if health else 0.0,
        )
        recent: list[ProbeResult] = []
        poll = RECOVERY_POLL
        while True:
            status = await driver.status(spec)
            if status.status == RunStatus.STOPPED:
                await self._record_probes(spec, recent[-10:], "unhealthy", publish=True)
                await self.state.set_state(spec.id, "recovering", source=req.source, restarted=not already,
                                           process_gone=True)
                message = f"exited while starting: {status.message}".strip()
                return RecoverStepResult(outcome="failed", message=message, pid=pid, restarted=restarted,
                                         elapsed=time.monotonic() - begin, probes=recent[-5:])
            result = await self._probe(spec, "liveness")
            recent.append(result)
            del recent[:-20]
            if tracker.observe(result.healthy) == HealthVerdict.HEALTHY:
                await self._record_probes(spec, recent[-10:], "healthy", publish=True)
                took = (_now() - req.recovery_started_at).total_seconds() if req.recovery_started_at else None
                await self.state.set_state(spec.id, "healthy", source=req.source, pid=pid, message="recovered",
                                           restarted=not already,
                                           status={"recovered": True, "recovery_seconds": took,
                                                   "attempts": req.attempts_here, "reason": req.reason})
                RECOVERY_DURATION.observe(time.monotonic() - begin)
                return RecoverStepResult(outcome="recovered", message=result.message, pid=pid, restarted=restarted,
                                         elapsed=time.monotonic() - begin, probes=[result])
            waited = time.monotonic() - since
            if waited >= req.timeout:
                await self._record_probes(spec, recent[-10:], "unhealthy", publish=True)
                await self.state.set_state(spec.id, "recovering", source=req.source, pid=pid, restarted=not already)
                return RecoverStepResult(outcome="failed", restarted=restarted, pid=pid,
                                         message=f"not healthy {req.timeout:g}s after restart: {result.message}",
                                         elapsed=time.monotonic() - begin, probes=recent[-5:])
            activity.heartbeat({"waited": round(waited, 3), "last": result.message})
            await asyncio.sleep(poll)
            poll = min(poll * 1.25, RECOVERY_POLL_MAX)

    # ----------------------------------------------------------------- records

    @activity.defn(name="record_supervision")
    async def record_supervision(self, req: RecordSupervisionInput) -> None:
        """Service state column, recovery summaries and events, in one transaction (idempotent ids)."""
        status = req.status
        async with self.db.write() as session:
            row = await services.get(session=session, service_id=status.service_id)
            supervision = {"supervision": status.model_dump(mode="json")}
            if row is not None and req.service_state is not None and req.service_state != row.state:
                # a change of status (blocked, gave up, back to healthy, ...) is a SERVICE_STATUS_UPDATE like any
                verdict = status.last_verdict
                gone = req.service_state == "blocked" and verdict is not None \
                    and verdict.verdict in ("exited", "not_running")
                if req.service_state == "gave_up":
                    row.gave_up_version = row.applied_version or row.current_version
                await self.state.set_state_in(
                    session, status.service_id, req.service_state, source="supervisor", message=status.message,
                    detail=supervision, process_gone=gone,
                    status={"reason": status.message, "attempts": status.attempt})
            elif row is not None:
                row.state_detail = {**(row.state_detail or {}), **supervision}
            if req.recovery is not None:
                summary = dict(req.recovery)
                for key in ("started_at", "finished_at"):
                    if isinstance(summary.get(key), str):
                        summary[key] = datetime.fromisoformat(summary[key])
                await runs.upsert(session=session, **summary)
            events = []
            for event_id, item in zip(req.event_ids, req.events, strict=True):
                event_type = EventType(item["event_type"])
                data = EVENT_DATA_MODELS[event_type].model_validate(item["data"])
                events.append(make_event(event_type, data, event_id=event_id, timestamp=req.timestamp))
            await add_new_events(session, events)
        if self.on_commit:
            self.on_commit()

    @activity.defn(name="load_spec_or_none")
    async def load_spec_or_none(self, service_id: str) -> ServiceSpec | None:
        """What runs (the applied version; see :func:`applied_spec_of`), or None for a deleted service."""
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=service_id)
            return await applied_spec_of(session=session, row=row) if row is not None else None

    @activity.defn(name="dependants_of")
    async def dependants_of(self, service_id: str) -> list[str]:
        """Direct dependants flagged ``restart_with_dependencies``."""
        async with self.db.read() as session:
            specs = await services.specs(session=session)
        return sorted(s.id for s in specs if service_id in s.depends_on and s.restart_with_dependencies)

    @activity.defn(name="sweep_plan")
    async def sweep_plan(self, _: str = "") -> SweepPlan:
        """Monitored services desired running, whatever their state (a crash, a failed rollback, a reboot), and
        the given-up ones whose applied version is not the one they gave up with (their config was fixed)."""
        async with self.db.read() as session:
            rows = await services.units(session=session)  # each replica on its own
        plan = SweepPlan()
        for row in rows:
            desired = row.desired or ("running" if row.state in SUPERVISABLE_STATES else None)
            if not row.monitored or desired != "running" or _is_job(row):  # a job is never supervised
                continue
            plan.supervise.append(row.id)
            applied = row.applied_version or row.current_version
            if row.state == "gave_up" and row.gave_up_version is not None and row.gave_up_version != applied:
                plan.retry.append(row.id)
        return plan

    @activity.defn(name="list_monitored")
    async def list_monitored(self, _: str = "") -> list[ServiceSpec]:
        """Monitored services windflow has brought up and keeps up (``SUPERVISABLE_STATES``)."""
        async with self.db.read() as session:
            rows = await services.units(session=session)  # each replica on its own
        # never brought up, still being brought up by an initialization, or stopped: not supervised
        return [spec_of(row) for row in rows
                if row.monitored and row.state in SUPERVISABLE_STATES and not _is_job(row)]


