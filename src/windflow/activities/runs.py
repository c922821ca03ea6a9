"""Activities that talk to Temporal itself (waiting on another run)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from temporalio import activity
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import (
    AwaitSupervisorInput,
    AwaitSupervisorResult,
    AwaitWorkflowInput,
    AwaitWorkflowResult,
    PauseInput,
    RecoverNowInput,
    RecoverNowResult,
    SupervisionState,
    SupervisorControlInput,
    SupervisorInput,
    SupervisorsInput,
    SupervisorsResult,
    SupervisorStatus,
)
from windflow.persistence.repositories import ServiceRepository
from windflow.temporal import names
from windflow.temporal import search_attributes as sa

if TYPE_CHECKING:
    from windflow.persistence.db import Database

services = ServiceRepository()

#: Supervisor starts in flight at once (each a describe and a start RPC) when an initialization hands over.
SUPERVISOR_START_CONCURRENCY = 16


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
                    out += [r.id for r in await services.replicas_of(session=session, service_id=service_id)
                            if (r.replica_index or 0) < wanted]
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

    @activity.defn(name="recover_via_supervisor")
    async def recover_via_supervisor(self, req: AwaitSupervisorInput) -> AwaitSupervisorResult:
        """Ask the service's supervisor to recover it and follow until it is done.

        ``supervised=False`` when the service has no running supervisor (the caller recovers it itself).
        """
        handle = self.client.get_workflow_handle(names.supervise_id(req.service_id))
        try:
            desc = await handle.describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return AwaitSupervisorResult(supervised=False)
            raise
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return AwaitSupervisorResult(supervised=False)
        before = await handle.query(names.STATUS, result_type=SupervisorStatus) if req.confirm else None
        answer = await handle.execute_update(
            names.RECOVER_NOW, RecoverNowInput(reason=req.reason, actor=req.actor, source=req.source,
                                           confirm=req.confirm),
            result_type=RecoverNowResult,
        )
        if not answer.attached and answer.state != SupervisionState.RECOVERING:
            return AwaitSupervisorResult(supervised=True, state=answer.state.value, message=answer.message)
        busy = {SupervisionState.RECOVERING, SupervisionState.BACKING_OFF, SupervisionState.BLOCKED,
                SupervisionState.WAITING_BUDGET}
        await asyncio.sleep(0.05)
        while True:
            status = await handle.query(names.STATUS, result_type=SupervisorStatus)
            if status.state not in busy:
                restarted = before is None or status.restarts_total > before.restarts_total
                return AwaitSupervisorResult(supervised=True, attached=answer.attached, state=status.state.value,
                                             attempt=status.attempt, message=status.message, restarted=restarted)
            activity.heartbeat(status.state.value)
            await asyncio.sleep(req.poll)

    # ----------------------------------------------------------------- supervisors

    async def _running(self, workflow_id: str) -> bool:
        try:
            desc = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return desc.status == WorkflowExecutionStatus.RUNNING

    async def _start_supervisor(self, service_id: str, task_queue: str, actor: str) -> bool:
        """Start ``supervise/{service_id}`` unless it runs; True when this call started it."""
        workflow_id = names.supervise_id(service_id)
        if await self._running(workflow_id):
            return False
        await self.client.start_workflow(
            names.SERVICE_SUPERVISOR,
            SupervisorInput(service_id=service_id),
            id=workflow_id,
            task_queue=task_queue or activity.info().task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
            memo={"actor": actor},
            search_attributes=TypedSearchAttributes([SearchAttributePair(sa.KIND, "supervisor"),
                                                     SearchAttributePair(sa.SERVICE, service_id),
                                                     SearchAttributePair(sa.STATE, "starting")]),
            static_summary=f"supervises {service_id}",
        )
        return True

    @activity.defn(name="ensure_supervisors")
    async def ensure_supervisors(self, req: SupervisorsInput) -> SupervisorsResult:
        """Every named (monitored) service gets a running supervisor."""
        out = SupervisorsResult()
        gate = asyncio.Semaphore(SUPERVISOR_START_CONCURRENCY)  # one start is one RPC: overlap them, boundedly

        resume = set(await self._units(list(req.resume)))
        req = req.model_copy(update={"service_ids": await self._units(list(req.service_ids))})

        async def start(service_id: str) -> bool:
            async with gate:
                started = await self._start_supervisor(service_id, req.task_queue, req.actor)
                if not started and service_id in resume:
                    # desired running again (an initialization started it): a supervisor a stop paused, or one
                    # that gave up, watches again; a running one ignores the signal
                    await self.client.get_workflow_handle(names.supervise_id(service_id)).signal(names.RESUME)
                    out.resumed.append(service_id)
                activity.heartbeat(service_id)
                return started

        outcomes = await asyncio.gather(*(start(s) for s in req.service_ids))
        for service_id, started in zip(req.service_ids, outcomes, strict=True):
            (out.started if started else out.already_running).append(service_id)
        return out

    @activity.defn(name="stop_stale_supervisors")
    async def stop_stale_supervisors(self, req: SupervisorsInput) -> SupervisorsResult:
        """Supervisors of services that are gone or no longer monitored are told to stop."""
        out = SupervisorsResult()
        keep = set(await self._units(list(req.service_ids)))
        query = "WindflowKind = 'supervisor' AND ExecutionStatus = 'Running'"
        async for execution in self.client.list_workflows(query):
            service_id = execution.id.removeprefix(names.SUPERVISE_PREFIX)
            if service_id not in keep:
                await self.client.get_workflow_handle(execution.id).signal(names.STOP_SUPERVISION)
                out.stopped.append(service_id)
        return out

    @activity.defn(name="pause_supervisor")
    async def pause_supervisor(self, req: SupervisorControlInput) -> bool:
        """Pause supervision (returns once it is paused); False when the service has no supervisor. A
        replicated service: each of its replicas'."""
        units = await self._units([req.service_id])
        if units != [req.service_id]:
            paused = [await self.pause_supervisor(req.model_copy(update={"service_id": u})) for u in units]
            return any(paused)
        workflow_id = names.supervise_id(req.service_id)
        if not await self._running(workflow_id):
            return False
        await self.client.get_workflow_handle(workflow_id).execute_update(
            names.PAUSE, PauseInput(reason=req.reason, actor=req.actor), result_type=SupervisorStatus)
        return True

    @activity.defn(name="resume_supervisor")
    async def resume_supervisor(self, req: SupervisorControlInput) -> str:
        """Resume supervision, or start it; returns resumed | started (a replicated service: its replicas')."""
        units = await self._units([req.service_id])
        if units != [req.service_id]:
            done = [await self.resume_supervisor(req.model_copy(update={"service_id": u})) for u in units]
            return "started" if "started" in done else "resumed"
        workflow_id = names.supervise_id(req.service_id)
        if await self._running(workflow_id):
            await self.client.get_workflow_handle(workflow_id).signal(names.RESUME)
            return "resumed"
        await self._start_supervisor(req.service_id, req.task_queue, req.actor)
        return "started"
