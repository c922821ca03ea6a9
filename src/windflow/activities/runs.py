"""Activities that talk to Temporal itself: waiting on another run, the watchers, recoveries on demand, and the
hold an operator path puts on a service while it drives it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import (
    AwaitSupervisorInput,
    AwaitSupervisorResult,
    AwaitWorkflowInput,
    AwaitWorkflowResult,
    StartRecoveriesInput,
    SupervisorControlInput,
    SupervisorsInput,
    SupervisorsResult,
    WatchersInput,
    WatchersResult,
)
from windflow.persistence.repositories import ServiceRepository
from windflow.temporal import names
from windflow.temporal.watchers import end_supervisors, ensure_watcher, recovery_id, start_recovery, watcher_queue

if TYPE_CHECKING:
    from windflow.persistence.db import Database

services = ServiceRepository()
#: recovery starts in flight at once (one RPC each)
START_CONCURRENCY = 16


class TemporalActivities:
    def __init__(self, *, client: Client, db: Database | None = None) -> None:
        self.client = client
        self.db = db

    async def _units(self, service_ids: list[str]) -> list[str]:
        """The ids supervision works on: a replicated service's replicas (each supervised on its own) in its
        place, every other id as it is."""
        if self.db is None or not service_ids:
            return list(service_ids)
        out: list[str] = []
        async with self.db.read() as session:
            for service_id in service_ids:
                row = await services.get(session=session, service_id=service_id)
                if row is not None and row.replicated:
                    wanted = int((row.spec or {}).get("replicas") or 0)
                    out += [
                        r.id
                        for r in await services.replicas_of(session=session, service_id=service_id)
                        if (r.replica_index or 0) < wanted
                    ]
                else:
                    out.append(service_id)
        return out

    @activity.defn(name="await_workflow")
    async def await_workflow(self, req: AwaitWorkflowInput) -> AwaitWorkflowResult:
        """Return once ``workflow_id`` has closed (any outcome); heartbeat while waiting."""
        handle = self.client.get_workflow_handle(req.workflow_id)
        while True:
            try:
                desc = await handle.describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    return AwaitWorkflowResult(workflow_id=req.workflow_id, status="not_found")
                raise
            if desc.status not in (None, WorkflowExecutionStatus.RUNNING):
                return AwaitWorkflowResult(workflow_id=req.workflow_id, status=desc.status.name.lower())
            activity.heartbeat(desc.status.name if desc.status else "unknown")
            await asyncio.sleep(req.poll)

    # ----------------------------------------------------------------- watchers and recoveries

    async def _hosts(self) -> set[str | None]:
        """The hosts whose queues have services (None: the shared queue, always watched)."""
        hosts: set[str | None] = {None}
        if self.db is not None:
            async with self.db.read() as session:
                hosts |= {row.host or None for row in await services.units(session=session)}
        return hosts

    @activity.defn(name="ensure_watchers")
    async def ensure_watchers(self, req: WatchersInput) -> WatchersResult:
        """Every queue with services has its running watcher (``watch/{queue}``); leftover ``supervise/*``
        workflows of the previous version end."""
        task_queue = req.task_queue or activity.info().task_queue
        hosts = set(req.hosts) if req.hosts is not None else await self._hosts()
        out = WatchersResult()
        for host in sorted(hosts, key=lambda h: h or ""):
            queue = watcher_queue(task_queue, host)
            running = await self._running(names.watch_id(queue))
            await ensure_watcher(self.client, task_queue=task_queue, host=host)
            (out.already_running if running else out.started).append(queue)
            activity.heartbeat(queue)
        if req.end_supervisors:
            out.terminated_supervisors = await end_supervisors(self.client)
        return out

    @activity.defn(name="start_recoveries")
    async def start_recoveries(self, req: StartRecoveriesInput) -> list[str]:
        """Start ``recover/{service}`` for each named service (joining any that runs); the ids started."""
        gate = asyncio.Semaphore(START_CONCURRENCY)
        task_queue = req.task_queue or activity.info().task_queue

        async def start(service_id: str) -> None:
            async with gate:
                await start_recovery(
                    self.client,
                    task_queue=task_queue,
                    service_id=service_id,
                    reason=req.reason,
                    actor=req.actor,
                    source=req.source,
                )
                activity.heartbeat(service_id)

        await asyncio.gather(*(start(s) for s in req.service_ids))
        return list(req.service_ids)

    # ----------------------------------------------------------------- kept for runs of the previous version

    @activity.defn(name="recover_via_supervisor")
    async def recover_via_supervisor(self, req: AwaitSupervisorInput) -> AwaitSupervisorResult:
        """Recoveries started by the previous version asked a supervisor first: none runs any more, so the
        recovery goes on by itself."""
        return AwaitSupervisorResult(supervised=False, message=f"{req.service_id} has no supervisor")

    @activity.defn(name="ensure_supervisors")
    async def ensure_supervisors(self, req: SupervisorsInput) -> SupervisorsResult:
        """What an initialization calls at its end (and sweeps of the previous version): the watchers now (the
        supervisors of the previous version are ended by the worker's start and the sweep, not on this path)."""
        await self.ensure_watchers(WatchersInput(task_queue=req.task_queue, actor=req.actor, end_supervisors=False))
        return SupervisorsResult(already_running=list(req.service_ids))

    @activity.defn(name="stop_stale_supervisors")
    async def stop_stale_supervisors(self, req: SupervisorsInput) -> SupervisorsResult:  # noqa: ARG002
        """Leftover ``supervise/*`` workflows end (the watchers took their services over)."""
        ended = await end_supervisors(self.client)
        return SupervisorsResult(stopped=[e.removeprefix(names.SUPERVISE_PREFIX) for e in ended])

    # ----------------------------------------------------------------- holds

    async def _running(self, workflow_id: str) -> bool:
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def _set_hold(self, service_id: str, holder: str | None, seconds: float = 0.0) -> None:
        if self.db is None:
            return
        async with self.db.write() as session:
            row = await services.get(session=session, service_id=service_id)
            if row is None:
                return
            row.held_by = holder
            row.held_until = datetime.now(UTC) + timedelta(seconds=seconds) if holder else None

    @activity.defn(name="pause_supervisor")
    async def pause_supervisor(self, req: SupervisorControlInput) -> bool:
        """Hold the service for an operator path (stop, restart, rollout, shutdown): no recovery restarts it
        until released (or ``hold_for`` passes); a recovery in flight is cancelled and waited for. True when the
        service is held."""
        info = activity.info()
        units = await self._units([req.service_id])  # a replicated service: each of its replicas, and itself
        for unit in dict.fromkeys([req.service_id, *units]):
            await self._set_hold(unit, f"{info.workflow_id}: {req.reason}"[:200], req.hold_for)
        for unit in units:
            handle = self.client.get_workflow_handle(recovery_id(unit))
            if not await self._running(handle.id):
                continue
            try:
                await handle.cancel()
            except RPCError as exc:
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            while await self._running(handle.id):
                activity.heartbeat("waiting for the recovery to end")
                await asyncio.sleep(0.2)
        return self.db is not None

    @activity.defn(name="resume_supervisor")
    async def resume_supervisor(self, req: SupervisorControlInput) -> str:
        """Release the hold; the queue's watcher (made sure to run) watches the service again. Returns
        ``resumed``."""
        for unit in dict.fromkeys([req.service_id, *await self._units([req.service_id])]):
            await self._set_hold(unit, None)
        host = None
        if self.db is not None:
            async with self.db.read() as session:
                row = await services.get(session=session, service_id=req.service_id)
                host = row.host if row is not None else None
        await ensure_watcher(self.client, task_queue=req.task_queue or activity.info().task_queue, host=host)
        return "resumed"
