"""The watch of one task queue: one long-running, heartbeating activity over every service of the queue.

``watch_queue`` runs inside the ``Watcher`` workflow (id ``watch/{queue}``). It reads the registry, watches each
service desired ``running`` at the service's own interval — the process's exit through the driver (a pidfd for
processes), liveness and readiness probes with their thresholds and start periods — and, when what it observes
differs from what is desired (the process is gone, or liveness failed ``failure_threshold`` times), starts
``recover/{service}`` with the verdict (a running recovery is joined, not doubled). ``monitored: false``
services are observed and reported, never recovered.

It notices registry changes (a new or deleted service, a changed probe, a new desired state, a recovery that
took a service over or handed it back) through the store's change stamp, read every ``reload_every`` seconds, and
re-reads everything at least every ``FULL_RELOAD`` seconds (a hold that expired changes no row). Each service is
its own task: a slow or hanging probe delays nobody else. Observations are written in batches (states and
verdict evidence within ``FLUSH_EVERY``, plain probe results every ``record_every``), and events only go out on
a change. The engine sees one heartbeat per watcher, whatever the number of services.

A new attempt (another worker after this one died) re-adopts the processes from the driver's state files and
re-derives everything it observes: observed state is never authoritative, so losing it loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from temporalio import activity
from temporalio.client import Client

from windflow.activities._support import StateWriter, new_event, outbox
from windflow.domain.contracts import (
    SUPERVISABLE_STATES,
    WatchQueueInput,
    WatchQueueResult,
    WatchResult,
)
from windflow.domain.events import EventType, HealthCheck
from windflow.domain.health import HealthTracker, HealthVerdict
from windflow.domain.models import ServiceSpec
from windflow.domain.results import ProbeResult, RunStatus
from windflow.drivers.base import DriverRegistry
from windflow.persistence.models import ServiceRow
from windflow.persistence.repositories import ProbeResultRepository, ServiceRepository, applied_spec_of
from windflow.probes.base import ProbeRegistry
from windflow.temporal.watchers import start_recovery

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

services = ServiceRepository()
probe_results = ProbeResultRepository()
log = logging.getLogger(__name__)

#: states the watcher itself reports (and may replace); any other state belongs to whoever set it: an
#: initialization or an operator (starting, stopping, stopped, failed), or a recovery (recovering, backing_off,
#: blocked, gave_up)
WATCHED_STATES = frozenset({"healthy", "not_ready", "unhealthy", "unknown"})
#: re-read the whole registry at least this often, changed or not (a hold expires without a write)
FULL_RELOAD = 15.0
#: state changes and verdict evidence are written within this many seconds (one transaction per batch)
FLUSH_EVERY = 0.2
#: cut each service's probe history every this many batched writes of probe results
PRUNE_EVERY = 8
#: heartbeat at most this often (the SDK throttles further, to 80 % of the heartbeat timeout)
HEARTBEAT_EVERY = 1.0


def _now() -> datetime:
    return datetime.now(UTC)


def desired_of(row: Any) -> str | None:
    """The desired state of a stored service; a service brought up before desired state existed counts as
    ``running`` while its last state says windflow keeps it up."""
    return row.desired or ("running" if row.state in SUPERVISABLE_STATES else None)


def held(row: Any, now: datetime | None = None) -> bool:
    until = row.held_until
    if row.held_by is None or until is None:
        return False
    if until.tzinfo is None:
        until = until.replace(tzinfo=UTC)
    return until > (now or _now())


def watch_mode(row: Any, now: datetime | None = None) -> str:
    """How the watcher treats a service: ``watch`` (observe, report and recover), ``observe`` (report only:
    ``monitored: false``) or ``off`` (not desired running, a job, held by an operator path, or owned by an
    initialization, an operator's action or a recovery right now)."""
    if desired_of(row) != "running" or (row.spec or {}).get("kind") == "job":
        return "off"
    if held(row, now) or row.state not in WATCHED_STATES:
        return "off"
    return "watch" if row.monitored else "observe"


@dataclass
class _Target:
    spec: ServiceSpec
    mode: str
    key: str
    pid: int | None


@dataclass
class _Pending:
    """What the next batch writes."""

    states: dict[str, tuple[str, str, int | None, bool]] = field(default_factory=dict)
    evidence: dict[str, tuple[list[ProbeResult], str | None]] = field(default_factory=dict)
    probes: dict[str, list[ProbeResult]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.states or self.evidence)


class ObservationWriter:
    """Batches the watch's writes: states and evidence within ``FLUSH_EVERY``, probe results within
    ``record_every``; a state is written only while the row is in a state the watcher reports."""

    def __init__(self, db: Database, state: StateWriter, *, probe_history: int, record_every: float) -> None:
        self.db = db
        self.state = state
        self.probe_history = probe_history
        self.record_every = record_every
        self.pending = _Pending()
        self.reported: dict[str, str] = {}
        self.wake = asyncio.Event()
        self.last_probes = time.monotonic()
        self.probe_writes = 0

    def set_state(
        self, service_id: str, state: str, message: str = "", *, pid: int | None = None, process_gone: bool = False
    ) -> None:
        if self.reported.get(service_id) == state and service_id not in self.pending.states:
            return
        self.reported[service_id] = state
        self.pending.states[service_id] = (state, message, pid, process_gone)
        self.wake.set()

    def forget(self, service_id: str) -> None:
        self.reported.pop(service_id, None)

    def probe(self, service_id: str, result: ProbeResult) -> None:
        self.pending.probes.setdefault(service_id, []).append(result)

    def evidence(self, service_id: str, verdict: str | None) -> None:
        """The probe results gathered so far, with one HEALTH_CHECK event for the verdict."""
        results = self.pending.probes.pop(service_id, [])
        if results:
            self.pending.evidence[service_id] = (results, verdict)
            self.wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.record_every)
            await asyncio.sleep(FLUSH_EVERY)  # gather what comes in the meantime
            self.wake.clear()
            try:
                await self.flush()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is away: keep what is pending, try again
                log.exception("writing the watch's observations failed")
                await asyncio.sleep(1.0)

    async def flush(self, *, probes: bool | None = None) -> None:
        write_probes = probes if probes is not None else time.monotonic() - self.last_probes >= self.record_every
        batch = self.pending
        if not batch and not (write_probes and batch.probes):
            return
        keep_probes = {} if write_probes else batch.probes
        self.pending = _Pending(probes=keep_probes)

        async def work(session: AsyncSession) -> None:
            for service_id, (results, verdict) in batch.evidence.items():
                await self._probes_in(session, service_id, results, verdict)
            if write_probes and batch.probes:
                # one insert for every service's results; each service's history is cut every PRUNE_EVERY writes
                # (a history then holds at most probe_history plus that many batches)
                self.probe_writes += 1
                known = set(
                    (
                        await session.execute(select(ServiceRow.id).where(ServiceRow.id.in_(list(batch.probes))))
                    ).scalars()
                )
                await probe_results.add_many(
                    session=session,
                    results={sid: r[-50:] for sid, r in batch.probes.items() if sid in known},
                    keep=self.probe_history if self.probe_writes % PRUNE_EVERY == 0 else None,
                )
            for service_id, (state, message, pid, gone) in batch.states.items():
                row = await services.get(session=session, service_id=service_id)
                if row is None or row.state not in WATCHED_STATES or desired_of(row) != "running" or held(row):
                    continue  # someone else owns the service's state right now
                if row.state == state:  # events only on a change
                    continue
                await self.state.set_state_in(
                    session, service_id, state, source="watcher", message=message, pid=pid, process_gone=gone
                )

        try:
            await self.db.write_batched(work)
        except BaseException:
            # nothing was written: put the batch back (newer entries win)
            batch.states.update(self.pending.states)
            batch.evidence.update(self.pending.evidence)
            for sid, results in self.pending.probes.items():
                batch.probes.setdefault(sid, []).extend(results)
            self.pending = batch
            raise
        if write_probes:
            self.last_probes = time.monotonic()
        if self.state.on_commit:
            self.state.on_commit()

    async def _probes_in(
        self, session: AsyncSession, service_id: str, results: list[ProbeResult], verdict: str | None
    ) -> None:
        if not results or await services.get(session=session, service_id=service_id) is None:
            return
        await probe_results.add(session=session, service_id=service_id, results=results[-50:], keep=self.probe_history)
        if verdict is not None:
            last = results[-1]
            await outbox.add(
                session=session,
                event=new_event(
                    EventType.HEALTH_CHECK,
                    HealthCheck(
                        service_id=service_id,
                        healthy=last.healthy,
                        latency_ms=last.latency_ms,
                        message=last.message,
                        checked_at=last.checked_at,
                        verdict=verdict,
                    ),
                ),
            )


class WatchActivities:
    def __init__(
        self,
        *,
        db: Database,
        drivers: DriverRegistry,
        probes: ProbeRegistry,
        client: Client,
        probe_history: int = 1000,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        self.drivers = drivers
        self.probes = probes
        self.client = client
        self.probe_history = probe_history
        self.state = StateWriter(db, on_commit)

    async def forget_unobserved(self, host: str | None) -> list[str]:
        """At a worker's start (after a reboot, or after windflow was down): a service of this host's queue whose
        last observed state says it runs (healthy, not ready) but whose process is gone is ``unknown`` until the
        watcher observes it, so that nothing shows a stale ``healthy`` for a dead process. Returns their ids."""
        async with self.db.read() as session:
            rows = [
                r
                for r in await services.units(session=session)
                if (r.host or None) == host and r.state in ("healthy", "not_ready")
            ]
            specs = {}
            for row in rows:
                with contextlib.suppress(Exception):
                    specs[row.id] = await applied_spec_of(session=session, row=row)
        gone = []
        for service_id, spec in specs.items():
            with contextlib.suppress(Exception):
                if (await self.drivers.for_service(spec).status(spec)).status == RunStatus.STOPPED:
                    gone.append(service_id)
        if not gone:
            return []

        async def work(session: AsyncSession) -> None:
            for service_id in gone:
                row = await services.get(session=session, service_id=service_id)
                if row is not None and row.state in ("healthy", "not_ready"):
                    await self.state.set_state_in(
                        session,
                        service_id,
                        "unknown",
                        source="watcher",
                        message="not observed since windflow started: its process is gone",
                        process_gone=True,
                    )

        await self.db.write_batched(work)
        if self.state.on_commit:
            self.state.on_commit()
        return gone

    @activity.defn(name="watch_queue")
    async def watch_queue(self, req: WatchQueueInput) -> WatchQueueResult:
        """Watch every service of the queue until ``max_run`` has passed (then the workflow continues as new)."""
        watch = QueueWatch(self, req)
        return await watch.run()


class QueueWatch:
    """One attempt of ``watch_queue``: the per-service tasks, the registry reloads and the writer."""

    def __init__(self, owner: WatchActivities, req: WatchQueueInput) -> None:
        self.owner = owner
        self.req = req
        self.writer = ObservationWriter(
            owner.db, owner.state, probe_history=owner.probe_history, record_every=req.record_every
        )
        self.tasks: dict[str, tuple[str, asyncio.Task[None]]] = {}
        self.recoveries_started = 0
        self.stamp: str | None = None
        self.loaded_at = 0.0

    async def run(self) -> WatchQueueResult:
        writer = asyncio.create_task(self.writer.run(), name="watch-writer")
        deadline = time.monotonic() + self.req.max_run
        last_beat = 0.0
        try:
            while time.monotonic() < deadline:
                now = time.monotonic()
                if now - last_beat >= HEARTBEAT_EVERY:
                    activity.heartbeat({"watched": len(self.tasks), "recoveries": self.recoveries_started})
                    last_beat = now
                try:
                    await self.maybe_reload()
                except asyncio.CancelledError:
                    raise
                except Exception:  # the store is away: keep watching what we know
                    log.exception("reading the registry for the watch of %s failed", self.req.queue)
                await asyncio.sleep(self.req.reload_every)
        finally:
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
            for _, task in self.tasks.values():
                task.cancel()
            for _, task in self.tasks.values():
                with contextlib.suppress(BaseException):
                    await task
            # what was not written yet is dropped: observations are re-derived by the next attempt, and a write
            # finishing after this attempt ended could land after another worker's newer one
        return WatchQueueResult(
            watched=len(self.tasks),
            recoveries_started=self.recoveries_started,
            message=f"watched {len(self.tasks)} services for {self.req.max_run:g}s",
        )

    async def maybe_reload(self) -> None:
        stamp = await services.change_stamp(db=self.owner.db)
        if stamp == self.stamp and time.monotonic() - self.loaded_at < FULL_RELOAD:
            return
        targets = await self.targets()
        self.stamp = stamp
        self.loaded_at = time.monotonic()
        for service_id in list(self.tasks):
            target = targets.get(service_id)
            key, task = self.tasks[service_id]
            if target is None or target.key != key or task.done():
                task.cancel()
                del self.tasks[service_id]
                if target is None:
                    self.writer.forget(service_id)
        for service_id, target in targets.items():
            if service_id not in self.tasks:
                self.writer.forget(service_id)
                task = asyncio.create_task(self.watch_one(target), name=f"watch:{service_id}")
                self.tasks[service_id] = (target.key, task)

    async def targets(self) -> dict[str, _Target]:
        """Services of this queue the watch observes now (mode ``watch`` or ``observe``), keyed by id."""
        now = _now()
        out: dict[str, _Target] = {}
        async with self.owner.db.read() as session:
            rows = await services.units(session=session)  # each replica on its own
            for row in rows:
                if (row.host or None) != self.req.host:
                    continue
                mode = watch_mode(row, now)
                if mode == "off":
                    continue
                try:
                    spec = await applied_spec_of(session=session, row=row)
                except Exception as exc:  # a stored config that no longer validates: nothing to watch it by
                    log.warning("cannot watch %s: %s", row.id, exc)
                    continue
                digest = hashlib.sha256(spec.model_dump_json().encode()).hexdigest()[:16]
                out[row.id] = _Target(spec=spec, mode=mode, key=f"{mode}:{digest}:{row.pid}", pid=row.pid)
        return out

    # ----------------------------------------------------------------- one service

    async def watch_one(self, target: _Target) -> None:
        """Watch one service until its entry changes (then a new task takes over) or a verdict hands it to a
        recovery."""
        spec = target.spec
        while True:
            verdict = await self.observe(spec)
            recovered = await self.on_verdict(target, verdict)
            if not recovered:
                # observe only: report it, then look again at the probe's pace (a process that is gone stays
                # gone until someone starts it, which changes the entry and starts a new task)
                if verdict.verdict in ("exited", "not_running"):
                    await asyncio.Event().wait()
                health = spec.liveness_spec()
                await asyncio.sleep(health.interval if health else 1.0)

    async def _probe(self, spec: ServiceSpec, which: str) -> ProbeResult:
        probe = spec.liveness_spec() if which == "liveness" else spec.readiness_spec()
        if probe is None:
            status = await self.owner.drivers.for_service(spec).status(spec)
            return ProbeResult(
                healthy=status.status != RunStatus.STOPPED,
                latency_ms=0.0,
                message=f"driver says {status.status.value}",
                checked_at=_now(),
            )
        return await self.owner.probes.check(probe, service=spec.id)

    async def observe(self, spec: ServiceSpec) -> WatchResult:
        """The first bad verdict: the process is not running or exited, or liveness failed its threshold.
        Meanwhile reports ``healthy`` / ``not_ready`` as liveness and readiness say."""
        driver = self.owner.drivers.for_service(spec)
        status = await driver.status(spec)
        if status.status == RunStatus.STOPPED:
            return WatchResult(
                verdict="not_running", message=status.message or f"{spec.id} is not running", detected_at=_now()
            )
        since = status.started_at or _now()
        liveness = spec.liveness_spec()
        alive = HealthTracker(
            failure_threshold=liveness.failure_threshold if liveness else 1,
            success_threshold=liveness.success_threshold if liveness else 1,
            start_period=liveness.start_period if liveness else 0.0,
        )
        gate: dict[str, bool | None] = {"alive": liveness is None, "ready": None if spec.separate_readiness else True}
        pid = status.pid

        def report(message: str = "") -> None:
            if not gate["alive"] or gate["ready"] is None:
                return
            if gate["ready"]:
                self.writer.set_state(spec.id, "healthy", "healthy", pid=pid)
            else:
                self.writer.set_state(spec.id, "not_ready", f"not ready: {message}".strip(), pid=pid)

        exit_task = asyncio.create_task(driver.wait_exit(spec))
        ready_task = (
            asyncio.create_task(self._readiness(spec, since, gate, report)) if spec.separate_readiness else None
        )
        recent: list[ProbeResult] = []
        report()
        try:
            next_probe = time.monotonic()
            while True:
                probe_task: asyncio.Task[ProbeResult] | None = None
                if liveness is not None:
                    delay = max(0.0, next_probe - time.monotonic())
                    probe_task = asyncio.create_task(_after(delay, lambda: self._probe(spec, "liveness")))
                waiting: set[asyncio.Future[Any]] = {exit_task}
                if probe_task is not None:
                    waiting.add(probe_task)
                done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
                if exit_task in done:
                    info = exit_task.result()
                    if info is not None:
                        if probe_task is not None:
                            probe_task.cancel()
                        return WatchResult(
                            verdict="exited",
                            message=info.message or f"pid {info.pid} exited",
                            exit_code=info.exit_code,
                            signal=info.signal,
                            detected_at=info.exited_at,
                            probes=recent[-5:],
                        )
                    # this driver cannot observe exits: rely on the probe alone
                    exit_task = asyncio.create_task(asyncio.Event().wait())  # type: ignore[arg-type]
                if probe_task is None:
                    continue
                result = await probe_task
                next_probe += liveness.interval if liveness else 1.0
                if next_probe < time.monotonic():  # fell behind (a slow probe): re-anchor, no burst
                    next_probe = time.monotonic()
                self.writer.probe(spec.id, result)
                recent.append(result)
                del recent[:-20]
                previous = alive.verdict
                verdict = alive.observe(result.healthy, since_start=(_now() - since).total_seconds())
                if verdict == HealthVerdict.HEALTHY and previous != HealthVerdict.HEALTHY:
                    self.writer.evidence(spec.id, "healthy")
                    gate["alive"] = True
                    report()
                if verdict == HealthVerdict.UNHEALTHY:
                    failing = [r for r in recent if not r.healthy][-alive.failure_threshold :]
                    return WatchResult(
                        verdict="unhealthy",
                        message=f"probe failed {alive.consecutive_failures} times: {result.message}",
                        detected_at=_now(),
                        probes=failing,
                    )
        finally:
            for task in (exit_task, ready_task):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(BaseException):
                        await task

    async def _readiness(
        self, spec: ServiceSpec, since: datetime, gate: dict[str, bool | None], report: Callable[[str], None]
    ) -> None:
        probe = spec.readiness_spec()
        assert probe is not None
        tracker = HealthTracker(
            failure_threshold=probe.failure_threshold,
            success_threshold=probe.success_threshold,
            start_period=probe.start_period,
        )
        while True:
            result = await self.owner.probes.check(probe, service=spec.id)
            verdict = tracker.observe(result.healthy, since_start=(_now() - since).total_seconds())
            if verdict in (HealthVerdict.HEALTHY, HealthVerdict.UNHEALTHY):
                gate["ready"] = verdict == HealthVerdict.HEALTHY
                report(result.message)
            await asyncio.sleep(probe.interval)

    async def on_verdict(self, target: _Target, verdict: WatchResult) -> bool:
        """Record the verdict; in ``watch`` mode start (or join) the service's recovery and wait for it.
        Returns whether a recovery was involved."""
        spec = target.spec
        gone = verdict.verdict in ("exited", "not_running")
        driver = self.owner.drivers.for_service(spec)
        clean = getattr(driver, "kill_leftovers", None)
        if gone and callable(clean):
            with contextlib.suppress(Exception):  # what the dead main left behind (its group) goes with it
                await clean(spec)
        self.writer.evidence(spec.id, "unhealthy")
        if target.mode != "watch":
            self.writer.set_state(spec.id, "unhealthy", f"{verdict.verdict}: {verdict.message}", process_gone=gone)
            return False
        health = spec.liveness_spec()
        confirm = verdict.verdict == "unhealthy" and (health is None or health.failure_threshold < 2)
        try:
            handle = await start_recovery(
                self.owner.client,
                task_queue=self.req.workflow_task_queue or activity.info().task_queue,
                service_id=spec.id,
                reason=f"{verdict.verdict}: {verdict.message}"[:2000],
                actor="watcher",
                source="watcher",
                confirm=confirm,
                verdict=verdict,
            )
            self.recoveries_started += 1
            await handle.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Temporal away, or the recovery failed: look again shortly
            log.warning("recovery of %s: %s", spec.id, exc)
            await asyncio.sleep(1.0)
        # the recovery ended: watch again only while the service is still ours to watch (it was healthy after all);
        # a service that gave up, or that someone else owns now, waits for the next reload to replace this task
        async with self.owner.db.read() as session:
            row = await services.get(session=session, service_id=spec.id)
        if row is None or watch_mode(row) != target.mode or row.state == "gave_up":
            await asyncio.Event().wait()
        await asyncio.sleep(0.2)
        return True


async def _after(delay: float, make: Callable[[], Any]) -> Any:
    if delay > 0:
        await asyncio.sleep(delay)
    return await make()
