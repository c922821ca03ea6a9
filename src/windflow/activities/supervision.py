"""Recovery activities: what a recovery starts from, dependency checks, one recovery attempt, records.

The watching itself is ``activities.watch`` (one activity per task queue); these serve ``ServiceRecovery``
(``recover/{service}``), ``ServiceControl`` and the sweep.
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
    RecoveryTarget,
    SweepPlan,
    WaitDependenciesInput,
)
from windflow.domain.errors import WindflowError
from windflow.domain.events import EVENT_DATA_MODELS, EventType, HealthCheck, make_event
from windflow.domain.health import HealthTracker, HealthVerdict
from windflow.domain.models import ServiceSpec
from windflow.domain.results import ProbeResult, RunStatus
from windflow.domain.status import RECOVERY
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


def _desired(row: Any) -> str | None:
    return row.desired or ("running" if row.state in SUPERVISABLE_STATES else None)


def _held(row: Any) -> bool:
    until = row.held_until
    if row.held_by is None or until is None:
        return False
    return (until if until.tzinfo else until.replace(tzinfo=UTC)) > _now()


def _is_job(row: Any) -> bool:
    """A stored service that is a job (``kind: job``): it runs to completion and is never supervised."""
    return (row.spec or {}).get("kind") == "job"


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
            results = await asyncio.gather(
                *(self._probe(spec.replica_spec(k), which) for k in range(spec.replicas or 0))
            )
            ready = sum(1 for r in results if r.healthy)
            return ProbeResult(
                healthy=ready >= spec.ready_needed(),
                latency_ms=max(r.latency_ms for r in results),
                message=f"{ready}/{len(results)} replicas ready ({spec.ready_needed()} needed)",
                checked_at=_now(),
            )
        probe = spec.liveness_spec() if which == "liveness" else spec.readiness_spec()
        if probe is None:
            status = await self.drivers.for_service(spec).status(spec)
            return ProbeResult(
                healthy=status.status != RunStatus.STOPPED,
                latency_ms=0.0,
                message=f"driver says {status.status.value}",
                checked_at=_now(),
            )
        return await self.probes.check(probe, service=spec.id)

    async def _record_probes(
        self, spec: ServiceSpec, results: list[ProbeResult], verdict: str | None, publish: bool
    ) -> None:
        if not results:
            return
        async with self.db.write() as session:
            if await services.get(session=session, service_id=spec.id) is None:
                return
            await probe_results.add(session=session, service_id=spec.id, results=results, keep=self.probe_history)
            if publish:
                last = results[-1]
                await outbox.add(
                    session=session,
                    event=new_event(
                        EventType.HEALTH_CHECK,
                        HealthCheck(
                            service_id=spec.id,
                            healthy=last.healthy,
                            latency_ms=last.latency_ms,
                            message=last.message,
                            checked_at=last.checked_at,
                            verdict=verdict,
                        ),
                    ),
                )
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
            lambda t: self._evidence.pop(spec.id) if self._evidence.get(spec.id, (None,))[0] is t else None
        )

    async def _evidence_written(self, service_id: str) -> None:
        """Write the pending evidence of this service's last verdict now, and wait for it."""
        pending = self._evidence.get(service_id)
        if pending is not None:
            task, go = pending
            go.set()
            await asyncio.shield(task)

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
            result = await self.check_dependencies(
                DependencyCheckInput(service_id=req.service_id, depends_on=req.depends_on)
            )
            if not result.unhealthy:
                return result
            activity.heartbeat({"waiting_for": result.unhealthy})
            await asyncio.sleep(req.poll)

    # ----------------------------------------------------------------- one recovery attempt

    @activity.defn(name="begin_recovery")
    async def begin_recovery(self, service_id: str) -> RecoveryTarget:
        """What a recovery of ``service_id`` starts from: the applied spec (None: deleted), the desired state and
        any hold, and the attempts carried over — a recovery that ended ``recovered`` less than ``reset_after``
        ago left its count, which this one continues (a crash loop reaches the start limit across recoveries)."""
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=service_id)
            if row is None:
                return RecoveryTarget()
            spec = await applied_spec_of(session=session, row=row)
            last = await runs.last_of(session=session, kind="recovery", service_id=service_id)
        target = RecoveryTarget(
            spec=spec, desired=_desired(row), state=row.state, held_by=row.held_by if _held(row) else None
        )
        if last is not None and last.status == "recovered" and last.finished_at is not None:
            finished = last.finished_at if last.finished_at.tzinfo else last.finished_at.replace(tzinfo=UTC)
            target.healthy_since = finished
            if (_now() - finished).total_seconds() < spec.restart.reset_after:
                target.attempt = int((last.summary or {}).get("attempt") or 0)
        return target

    async def _refusal(self, service_id: str) -> str | None:
        """Why a recovery must not restart ``service_id`` now: desired stopped (an operator stopped it), held by
        an operator path, or deleted; None when it may."""
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=service_id)
        if row is None:
            return "the service was deleted"
        if _desired(row) == "stopped":
            return f"desired stopped ({row.desired_reason or row.desired_by or 'stopped'})"
        if _held(row):
            return f"held by {row.held_by}"
        return None

    @activity.defn(name="recover_step")
    async def recover_step(self, req: RecoverStepInput) -> RecoverStepResult:
        """Confirm → take a restart-budget lease → restart (idempotent) → wait until healthy.

        Never restarts a service desired stopped or held by an operator path (outcome ``skipped``)."""
        spec = req.spec
        begin = time.monotonic()
        refusal = await self._refusal(spec.id)
        if refusal is not None:
            return RecoverStepResult(outcome="skipped", message=f"not restarted: {refusal}")
        driver = self.drivers.for_service(spec)
        if req.confirm:
            result = await self._probe(spec, "liveness")
            if result.healthy:
                return RecoverStepResult(
                    outcome="healthy",
                    message=f"re-probe passed: {result.message}",
                    probes=[result],
                    elapsed=time.monotonic() - begin,
                )
        lease = None
        if self.budget is not None:
            granted = await self.budget.acquire(service_id=spec.id, holder=req.holder)
            if not granted.granted:
                return RecoverStepResult(
                    outcome="budget", message=granted.reason, retry_after=max(0.1, float(granted.retry_after))
                )
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
                    spec.id,
                    "recovering",
                    source=req.source,
                    process_gone=True,
                    message=f"restarting ({req.reason}), attempt {req.attempt} of {req.max_attempts}",
                )

            marking = asyncio.ensure_future(mark())
            try:
                result = await driver.restart(spec)
            except WindflowError as exc:
                await marking
                return RecoverStepResult(
                    outcome="failed", message=f"restart failed: {exc.message}", elapsed=time.monotonic() - begin
                )
            except BaseException:
                marking.cancel()
                with contextlib.suppress(BaseException):
                    await marking
                raise
            await marking
            if not result.ok:
                return RecoverStepResult(
                    outcome="failed", message=f"restart failed: {result.message}", elapsed=time.monotonic() - begin
                )
            count_restart(spec.id, req.reason, req.source)
            pid = result.pid
        since = time.monotonic()
        health = spec.liveness_spec()  # recovered = alive again; readiness is the watch's to report (not_ready)
        tracker = HealthTracker(
            failure_threshold=10**6,
            success_threshold=health.success_threshold if health else 1,
            start_period=health.start_period if health else 0.0,
        )
        recent: list[ProbeResult] = []
        poll = RECOVERY_POLL
        while True:
            status = await driver.status(spec)
            if status.status == RunStatus.STOPPED:
                await self._record_probes(spec, recent[-10:], "unhealthy", publish=True)
                await self.state.set_state(
                    spec.id, "recovering", source=req.source, restarted=restarted, process_gone=True
                )
                message = f"exited while starting: {status.message}".strip()
                return RecoverStepResult(
                    outcome="failed",
                    message=message,
                    pid=pid,
                    restarted=restarted,
                    elapsed=time.monotonic() - begin,
                    probes=recent[-5:],
                )
            result = await self._probe(spec, "liveness")
            recent.append(result)
            del recent[:-20]
            if tracker.observe(result.healthy) == HealthVerdict.HEALTHY:
                await self._record_probes(spec, recent[-10:], "healthy", publish=True)
                took = (_now() - req.recovery_started_at).total_seconds() if req.recovery_started_at else None
                await self.state.set_state(
                    spec.id,
                    "healthy",
                    source=req.source,
                    pid=pid,
                    message="recovered",
                    restarted=restarted,
                    status={
                        "recovered": True,
                        "recovery_seconds": took,
                        "attempts": req.attempts_here,
                        "reason": req.reason,
                    },
                )
                RECOVERY_DURATION.observe(time.monotonic() - begin)
                return RecoverStepResult(
                    outcome="recovered",
                    message=result.message,
                    pid=pid,
                    restarted=restarted,
                    elapsed=time.monotonic() - begin,
                    probes=[result],
                )
            waited = time.monotonic() - since
            if waited >= req.timeout:
                await self._record_probes(spec, recent[-10:], "unhealthy", publish=True)
                await self.state.set_state(spec.id, "recovering", source=req.source, pid=pid, restarted=restarted)
                return RecoverStepResult(
                    outcome="failed",
                    restarted=restarted,
                    pid=pid,
                    message=f"not healthy {req.timeout:g}s after restart: {result.message}",
                    elapsed=time.monotonic() - begin,
                    probes=recent[-5:],
                )
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
                gone = (
                    req.service_state == "blocked"
                    and verdict is not None
                    and verdict.verdict in ("exited", "not_running")
                )
                if req.service_state == "gave_up":
                    row.gave_up_version = row.applied_version or row.current_version
                await self.state.set_state_in(
                    session,
                    status.service_id,
                    req.service_state,
                    source="supervisor",
                    message=status.message,
                    detail=supervision,
                    process_gone=gone,
                    status={"reason": status.message, "attempts": status.attempt},
                )
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
            rows = await services.all(session=session)
        out = []
        for row in rows:
            if _desired(row) != "running" or row.state in RECOVERY or row.state in ("stopped", "stopping"):
                continue
            spec = spec_of(row)
            if service_id in spec.depends_on and spec.restart_with_dependencies:
                out.append(row.id)
        return sorted(out)

    @activity.defn(name="sweep_plan")
    async def sweep_plan(self, _: str = "") -> SweepPlan:
        """``supervise``: the monitored services desired running (their queues need a watcher); ``recover``: those
        among them that are neither healthy nor in a recovery nor being brought up or held (a crash the watcher
        did not see through, a failed rollback, an initialization's failure); ``retry``: given-up ones whose
        applied version is not the one they gave up with (their config was fixed)."""
        async with self.db.read() as session:
            rows = await services.units(session=session)  # each replica on its own
        plan = SweepPlan()
        for row in rows:
            if not row.monitored or _desired(row) != "running" or _is_job(row):  # a job is never supervised
                continue
            plan.supervise.append(row.id)
            plan.hosts = sorted({*plan.hosts, row.host or ""})
            applied = row.applied_version or row.current_version
            if row.state == "gave_up":
                if row.gave_up_version is not None and row.gave_up_version != applied:
                    plan.retry.append(row.id)
            elif (
                row.state not in ("healthy", "not_ready", "starting", "stopping", "completed")
                and row.state not in RECOVERY
                and not _held(row)
            ):
                plan.recover.append(row.id)
        return plan

    @activity.defn(name="list_monitored")
    async def list_monitored(self, _: str = "") -> list[ServiceSpec]:
        """Monitored services windflow has brought up and keeps up (``SUPERVISABLE_STATES``)."""
        async with self.db.read() as session:
            rows = await services.units(session=session)  # each replica on its own
        # never brought up, still being brought up by an initialization, or stopped: not supervised
        return [spec_of(row) for row in rows if row.monitored and row.state in SUPERVISABLE_STATES and not _is_job(row)]
