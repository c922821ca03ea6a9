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
from typing import TYPE_CHECKING, Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from windflow.activities._support import StateWriter, heartbeating, new_event, outbox, to_application_error
from windflow.domain.contracts import (
    CheckHealthInput,
    RunJobInput,
    RunJobResult,
    ScaleInput,
    ScalePlan,
    ServiceActionInput,
    ServiceActionResult,
    ValidateSystemInput,
    ValidateSystemResult,
    WaitHealthyInput,
    WaitHealthyResult,
)
from windflow.domain.errors import DriverFailed, HealthCheckFailed, NotFound, WindflowError
from windflow.domain.events import EventType, HealthCheck
from windflow.domain.graph import closure, layers
from windflow.domain.health import HealthTracker, HealthVerdict
from windflow.domain.models import ServiceSpec
from windflow.domain.results import DriverResult, ExitInfo, ProbeResult, RunStatus
from windflow.domain.system import Problem, condition_problems, graph_problems, problems_from
from windflow.drivers.base import DriverRegistry, ServiceDriver
from windflow.metrics import count_restart
from windflow.persistence.job_models import JobRunRepository, JobRunRow
from windflow.persistence.repositories import ProbeResultRepository, ServiceRepository, spec_of
from windflow.probes.base import ProbeRegistry

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

services = ServiceRepository()
probe_results = ProbeResultRepository()
job_runs = JobRunRepository()
log = logging.getLogger(__name__)

#: who sets the desired state through the service activities (a supervisor's give-up stop does not)
DESIRED_SOURCES = frozenset({"initialization", "user", "shutdown"})

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
#: how long ServiceScale's plan waits for the API to commit the replica count it started the run for
SCALE_COMMIT_WAIT = 10.0
#: a job's failure message carries at most this many of its last stderr lines, and this many characters
FAILURE_LINES = 5
FAILURE_CHARS = 1000
#: lines of a job's output kept with its run
JOB_TAIL_LINES = 20


def failure_cause(lines: list[str]) -> str:
    """The last lines of a service's stderr, joined for a one-line message and capped in size."""
    text = " | ".join(line.strip() for line in lines[-FAILURE_LINES:] if line.strip())
    return text if len(text) <= FAILURE_CHARS else "…" + text[-FAILURE_CHARS:]


def job_exit_outcome(spec: ServiceSpec, info: ExitInfo | None) -> tuple[int | None, bool, str, bool]:
    """A job's exit as ``(exit_code, succeeded, message, message names the cause)``."""
    if info is None:  # a driver that cannot observe exits (noop): the start is the run
        return 0, True, f"{spec.id} completed", False
    exit_code = info.exit_code
    ok = exit_code is not None and exit_code in spec.success_exit_codes
    if info.signal is not None:  # the driver's message names the signal (and the cause)
        return exit_code, ok, f"{spec.id} {info.message}", True
    if exit_code is None:
        return exit_code, ok, f"{spec.id} {info.message or 'exited'} (exit status unknown)", False
    message = f"{spec.id} exited with code {exit_code}"
    if not ok:
        message += f" (success: {', '.join(map(str, spec.success_exit_codes))})"
    return exit_code, ok, message, False


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
        if not problems:
            problems.extend(condition_problems(specs))
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
            await self.state.set_state(req.spec.id, "failed", source=req.source, message=f"{action}: {result.message}")
            raise to_application_error(
                DriverFailed(f"{action} {req.spec.id}: {result.message}", details={"output": result.output[-2000:]})
            )
        log.info("%s %s: %s", action, req.spec.id, result.message or ("done" if result.changed else "no change"))
        return result

    @staticmethod
    def _desired(req: ServiceActionInput, desired: str) -> dict[str, Any]:
        """An initialization's or a user's act sets the desired state; a supervisor's or a rollout's does not."""
        if req.source not in DESIRED_SOURCES:
            return {}
        return {"desired": desired, "actor": req.actor or req.source}

    @activity.defn(name="start_service")
    async def start_service(self, req: ServiceActionInput) -> ServiceActionResult:
        if req.spec.replicated:  # its replicas, in order
            return await self._each_replica(req, "start", self._start_one)
        return await self._start_one(req)

    async def _start_one(self, req: ServiceActionInput) -> ServiceActionResult:
        result = await self._drive("start", req)
        if result.changed or result.pid or req.source in DESIRED_SOURCES:
            await self.state.set_state(
                req.spec.id,
                "starting",
                source=req.source,
                pid=result.pid,
                message="started" if result.changed else "already running",
                detail={"run_id": req.run_id} if req.run_id else None,
                applied_content=req.spec.content(),
                **self._desired(req, "running"),
            )
        return ServiceActionResult(result=result)

    @activity.defn(name="stop_service")
    async def stop_service(self, req: ServiceActionInput) -> ServiceActionResult:
        activity.heartbeat("stopping")
        if req.spec.replicated:  # its replicas, the highest index first
            if req.source in DESIRED_SOURCES:
                await self.state.set_state(
                    req.spec.id, "stopping", source=req.source, message="stopping", **self._desired(req, "stopped")
                )
            return await self._each_replica(req, "stop", self._stop_one, reverse=True)
        return await self._stop_one(req)

    async def _stop_one(self, req: ServiceActionInput) -> ServiceActionResult:
        if req.source in DESIRED_SOURCES:  # desired stopped at once: "stopping" while the stop takes its grace
            await self.state.set_state(
                req.spec.id, "stopping", source=req.source, message="stopping", **self._desired(req, "stopped")
            )
        result = await heartbeating(self._drive("stop", req), "stopping")  # the stop may take its grace
        await self.state.set_state(
            req.spec.id,
            "stopped",
            source=req.source,
            message="stopped" if result.changed else "was not running",
            **self._desired(req, "stopped"),
        )
        return ServiceActionResult(result=result)

    @activity.defn(name="restart_service")
    async def restart_service(self, req: ServiceActionInput) -> ServiceActionResult:
        activity.heartbeat("restarting")
        if req.spec.replicated:  # one replica after the other, in order
            return await self._each_replica(req, "restart", self._restart_one)
        return await self._restart_one(req)

    async def _restart_one(self, req: ServiceActionInput) -> ServiceActionResult:
        result = await heartbeating(self._drive("restart", req), "restarting")
        if result.changed:
            count_restart(req.spec.id, source=req.source)
        await self.state.set_state(
            req.spec.id,
            "starting",
            source=req.source,
            pid=result.pid,
            message="restarted",
            applied_content=req.spec.content(),
            **self._desired(req, "running"),
        )
        return ServiceActionResult(result=result)

    @activity.defn(name="scale_plan")
    async def scale_plan(self, req: ScaleInput) -> ScalePlan:
        """A replicated service as saved and the replicas the registry has. The API starts the run before it
        commits the new count: wait (heartbeating) until the store says ``target``, at most SCALE_COMMIT_WAIT
        seconds (then the stored count wins: someone changed it again)."""
        deadline = time.monotonic() + SCALE_COMMIT_WAIT
        while True:
            async with self.db.read() as session:
                row = await services.get(session=session, service_id=req.service_id)
                if row is None or not row.replicated:
                    return ScalePlan()
                if row.spec.get("replicas") == req.target or time.monotonic() >= deadline:
                    replicas = await services.replicas_of(session=session, service_id=req.service_id)
                    return ScalePlan(spec=spec_of(row), existing=[r.replica_index or 0 for r in replicas])
            activity.heartbeat("waiting for the new count to be committed")
            await asyncio.sleep(0.05)

    @activity.defn(name="remove_replica")
    async def remove_replica(self, replica_id: str) -> bool:
        """Forget a replica a scale-down stopped; its service's status is counted again without it."""
        parent_id = replica_id.partition("/")[0]

        async def work(session: AsyncSession) -> bool:
            removed = await services.remove_replica(session=session, replica_id=replica_id)
            parent = await services.get(session=session, service_id=parent_id)
            if parent is not None and parent.replicated:
                await self.state.refresh_replica_set(session, parent, source="user")
            return removed

        removed = await self.db.write_batched(work)
        if self.state.on_commit:
            self.state.on_commit()
        return bool(removed)

    async def _replica_specs(self, spec: ServiceSpec, *, existing: bool = False) -> list[ServiceSpec]:
        """The replicas of a replicated service: ``0 … replicas-1`` from its config; with ``existing``, every
        replica the registry still has (one a scale-down is removing included), as stored."""
        if not existing:
            return [spec.replica_spec(k) for k in range(spec.replicas or 0)]
        async with self.db.read() as session:
            rows = await services.replicas_of(session=session, service_id=spec.id)
        wanted = {r.id for r in [spec.replica_spec(k) for k in range(spec.replicas or 0)]}
        return [spec.replica_spec(r.replica_index or 0) if r.id in wanted else spec_of(r) for r in rows]

    async def _each_replica(
        self,
        req: ServiceActionInput,
        action: str,
        one: Callable[[ServiceActionInput], Any],
        *,
        reverse: bool = False,
    ) -> ServiceActionResult:
        """``one`` for each replica of a replicated service, one after the other; the desired state set on the
        service is set on each replica. Idempotent as ``one`` is: a retried call finds the first ones done."""
        units = await self._replica_specs(req.spec, existing=action == "stop")
        if reverse:
            units.reverse()
        if req.source in DESIRED_SOURCES:
            await self.state.set_state(
                req.spec.id,
                "stopping" if action == "stop" else "starting",
                source=req.source,
                **self._desired(req, "stopped" if action == "stop" else "running"),
            )
        parts: list[str] = []
        changed = False
        for unit in units:
            done = await one(req.model_copy(update={"spec": unit}))
            changed |= done.result.changed
            parts.append(f"{unit.id}: {done.result.message or action}")
        return ServiceActionResult(
            result=DriverResult(ok=True, action=action, changed=changed, message="; ".join(parts))
        )

    # ----------------------------------------------------------------- health

    async def _store_probes(
        self,
        spec: ServiceSpec,
        results: list[ProbeResult],
        verdict: str | None,
        *,
        state: str | None = None,
        source: str = "",
        message: str = "",
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Record probe results (and, with ``state``, the service's new state) in one transaction."""
        if not results and state is None:
            return

        async def work(session: AsyncSession) -> None:
            if await services.get(session=session, service_id=spec.id) is None:
                return
            if results:
                last = results[-1]
                await probe_results.add(session=session, service_id=spec.id, results=results, keep=self.probe_history)
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
            if state is not None:
                await self.state.set_state_in(session, spec.id, state, source=source, message=message, detail=detail)

        await self.db.write_batched(work)
        if self.state.on_commit:
            self.state.on_commit()

    @activity.defn(name="check_health")
    async def check_health(self, req: CheckHealthInput) -> ProbeResult:
        probe = req.spec.readiness_spec()
        if probe is None:
            status = await self.drivers.for_service(req.spec).status(req.spec)
            healthy = status.status != RunStatus.STOPPED
            result = ProbeResult(
                healthy=healthy,
                latency_ms=0.0,
                message=f"no probe; driver says {status.status}",
                checked_at=datetime.now(UTC),
            )
        else:
            result = await self.probes.check(probe, service=req.spec.id)
        if req.record:
            await self._store_probes(req.spec, [result], None)
        return result

    @activity.defn(name="wait_healthy")
    async def wait_healthy(self, req: WaitHealthyInput) -> WaitHealthyResult:
        """Probe until healthy (``success_threshold`` passes in a row); heartbeat every round.

        Fails at once (non-retryable) when the process is gone, and after ``timeout`` otherwise. A replicated
        service is healthy once ``min_ready`` of its replicas are (each probed as a service of its own)."""
        if req.spec.replicated:
            return await self._wait_replicas(req)
        return await self._wait_one(req)

    async def _wait_replicas(self, req: WaitHealthyInput) -> WaitHealthyResult:
        begin = time.monotonic()
        needed = req.spec.ready_needed()
        units = await self._replica_specs(req.spec)
        tasks = {
            asyncio.ensure_future(self._wait_one(req.model_copy(update={"spec": u}), beat=False)): u.id for u in units
        }
        ready: list[str] = []
        failed: list[str] = []
        try:
            pending = set(tasks)
            while pending and len(ready) < needed:
                done, pending = await asyncio.wait(
                    pending, timeout=HEARTBEAT_EVERY, return_when=asyncio.FIRST_COMPLETED
                )
                activity.heartbeat({"ready": len(ready), "needed": needed})
                for task in done:
                    if task.exception() is None:
                        ready.append(tasks[task])
                    else:
                        failed.append(f"{tasks[task]}: {task.exception()}")
                if len(units) - len(failed) < needed:
                    break
        finally:
            for task in tasks:  # the replicas not ready yet are left to their supervision
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        elapsed = time.monotonic() - begin
        if len(ready) < needed:
            message = f"{req.spec.id}: {len(ready)}/{len(units)} replicas ready, {needed} needed" + (
                f" ({'; '.join(failed)})" if failed else ""
            )
            raise ApplicationError(message, {"ready": ready}, type="HealthCheckFailed", non_retryable=True)
        message = f"{len(ready)}/{len(units)} replicas ready ({needed} needed)"
        return WaitHealthyResult(healthy=True, elapsed=elapsed, checks=len(ready), message=message)

    async def _wait_one(self, req: WaitHealthyInput, *, beat: bool = True) -> WaitHealthyResult:
        spec = req.spec
        driver = self.drivers.for_service(spec)
        begin = time.monotonic()
        health = spec.readiness_spec()  # ready, not only alive: what dependants and initializations wait for
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
                    await self._store_probes(
                        spec, recent[-10:], "unhealthy", state="failed", source=req.source, message=message
                    )
                    raise ApplicationError(message, {"checks": checks}, type="ProcessExited", non_retryable=True)
            if health is None:
                result = ProbeResult(
                    healthy=True,
                    latency_ms=0.0,
                    message="no health check; process running",
                    checked_at=datetime.now(UTC),
                )
            else:
                result = await self.probes.check(health, service=spec.id)
            checks += 1
            recent.append(result)
            del recent[:-50]
            verdict = tracker.observe(result.healthy, since_start=elapsed)
            if beat and (elapsed - last_beat >= HEARTBEAT_EVERY or checks == 1):  # each beat is converted and queued:
                last_beat = elapsed  # at 40 rounds a second, beating every round costs more than the probe
                activity.heartbeat({"checks": checks, "elapsed": round(elapsed, 3), "last": result.message})
            if verdict == HealthVerdict.HEALTHY:
                await self._store_probes(
                    spec,
                    recent[-10:],
                    "healthy",
                    state="healthy",
                    source=req.source,
                    message="healthy",
                    detail={"healthy_since": datetime.now(UTC).isoformat()},
                )
                return WaitHealthyResult(
                    healthy=True, elapsed=time.monotonic() - begin, checks=checks, last=result, message=result.message
                )
            if elapsed >= req.timeout:
                message = f"{spec.id} not healthy after {req.timeout:g}s: {result.message}"
                await self._store_probes(
                    spec, recent[-10:], "unhealthy", state="failed", source=req.source, message=message
                )
                raise to_application_error(
                    HealthCheckFailed(
                        message, details={"checks": checks, "last": [r.model_dump(mode="json") for r in recent[-5:]]}
                    )
                )
            interval = health.interval if health else 0.5
            await asyncio.sleep(min(poll, interval, max(0.0, req.timeout - elapsed)))
            if elapsed >= STARTUP_FAST:
                poll = min(poll * 1.5, STARTUP_POLL_MAX)

    # ----------------------------------------------------------------- jobs

    def _log_tail(self, spec: ServiceSpec, stream: str, lines: int) -> list[str]:
        tail = getattr(self.drivers.for_service(spec), "log_tail", None)
        return list(tail(spec.id, lines=lines, stream=stream)) if tail is not None else []

    async def _job_exit_or_timeout(
        self, driver: ServiceDriver, spec: ServiceSpec, pid: int | None, clock: float
    ) -> asyncio.Future[ExitInfo | None]:
        """Wait (heartbeating) for the job's exit, at most its ``timeout``; the wait, done or not. A cancelled
        initialization stops the job: it must not go on alone."""
        waiter = asyncio.ensure_future(driver.wait_exit(spec))
        try:
            while True:
                activity.heartbeat({"pid": pid, "elapsed": round(time.monotonic() - clock, 3)})
                left = None if spec.timeout is None else spec.timeout - (time.monotonic() - clock)
                if left is not None and left <= 0:
                    return waiter
                done, _ = await asyncio.wait([waiter], timeout=min(1.0, left) if left is not None else 1.0)
                if done:
                    return waiter
        except asyncio.CancelledError:
            waiter.cancel()
            await driver.stop(spec)
            raise

    @activity.defn(name="run_job")
    async def run_job(self, req: RunJobInput) -> RunJobResult:
        """Run one attempt of a job (``kind: job``) to completion: start it, wait for its exit within its
        ``timeout`` (then stop it), record the run. A failed attempt is a result, not an error: the workflow
        retries it under the job's restart policy. ``run: once`` skips a job whose applied version succeeded.

        Idempotent: a retried call (the worker died) finds the process still running and waits for it (its exit
        code is then unknown, as it is no longer our child, and the attempt counts as failed)."""
        async with self.db.read() as session:
            row = await services.get(session=session, service_id=req.service_id)
            if row is None:
                raise to_application_error(NotFound(f"service {req.service_id!r} not found"))
            spec = spec_of(row)
            version = row.current_version
            done = (
                await job_runs.last_success(session=session, service_id=spec.id, version=version)
                if spec.run == "once"
                else None
            )
        if done is not None:
            message = (
                f"skipped: version {version} already completed (run: once) at "
                f"{done.finished_at.isoformat(timespec='seconds')}"
            )
            await self.state.set_state(spec.id, "completed", source=req.source, message=message, process_gone=True)
            return RunJobResult(
                succeeded=True,
                skipped=True,
                version=version,
                exit_code=done.exit_code,
                duration=0.0,
                message=message,
                log_tail=list(done.log_tail or []),
            )
        driver = self.drivers.for_service(spec)
        began = datetime.now(UTC)
        clock = time.monotonic()
        pid: int | None = None
        exit_code: int | None = None
        cause_given = False
        try:
            started = await driver.start(spec)
            pid = started.pid
            await self.state.set_state(
                spec.id,
                "starting",
                source=req.source,
                pid=pid,
                message="job running",
                detail={"run_id": req.run_id} if req.run_id else None,
            )
            waiter = await self._job_exit_or_timeout(driver, spec, pid, clock)
            if not waiter.done():
                waiter.cancel()
                await driver.stop(spec)
                ok = False
                message = f"{spec.id} timed out after {spec.timeout:g}s and was stopped"
            else:
                exit_code, ok, message, cause_given = job_exit_outcome(spec, waiter.result())
        except WindflowError as exc:  # could not start (no such program, bad cwd)
            ok, message = False, f"{spec.id}: {exc.message}"
        duration = time.monotonic() - clock
        stderr = self._log_tail(spec, "stderr", JOB_TAIL_LINES)
        tail = stderr or self._log_tail(spec, "stdout", JOB_TAIL_LINES)
        if not ok and stderr and not cause_given:
            message += f": {failure_cause(stderr)}"
        run = JobRunRow(
            service_id=spec.id,
            version=version,
            run_id=req.run_id,
            attempt=req.attempt,
            succeeded=ok,
            exit_code=exit_code,
            started_at=began,
            finished_at=datetime.now(UTC),
            duration=round(duration, 3),
            message=message,
            log_tail=tail,
        )
        summary = {
            "version": version,
            "succeeded": ok,
            "exit_code": exit_code,
            "duration": round(duration, 3),
            "finished_at": run.finished_at.isoformat(),
            "attempt": req.attempt,
        }

        async def record(session: AsyncSession) -> None:
            if await services.get(session=session, service_id=spec.id) is None:
                return
            await job_runs.add(session=session, row=run)
            # the attempt is over (exited, or stopped after its timeout): no pid of it stays in the registry
            await self.state.set_state_in(
                session,
                spec.id,
                "completed" if ok else "failed",
                source=req.source,
                message=message,
                detail={"job": summary},
                process_gone=True,
            )

        await self.db.write_batched(record)
        if self.state.on_commit:
            self.state.on_commit()
        return RunJobResult(
            succeeded=ok,
            version=version,
            exit_code=exit_code,
            duration=round(duration, 3),
            pid=pid,
            message=message,
            log_tail=tail,
        )
