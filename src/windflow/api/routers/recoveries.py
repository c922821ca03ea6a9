"""Recovery, supervision and control of one service: trigger, follow, decide, act, measure.

Supervision is the queue's watcher (``watch/{queue}``) plus, while the service is in trouble, its recovery
(``recover/{service}``): `GET …/supervision` answers from both.
"""

from __future__ import annotations

import asyncio
import statistics
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import WorkflowExecutionStatus
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.audit import record, record_now
from windflow.api.bodies import RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, TemporalDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.contracts import (
    ControlInput,
    ControlResult,
    DecisionInput,
    SupervisorStatus,
)
from windflow.persistence.repositories import ProbeResultRepository, RunSummaryRepository, ServiceRepository
from windflow.temporal import handles, names
from windflow.temporal.handles import start_recovery
from windflow.temporal.links import workflow_link
from windflow.temporal.watchers import ensure_watcher, watcher_queue
from windflow.workflows.supervision import ServiceRecovery

router = APIRouter(prefix="/services/{service_id}", tags=["recovery"], responses=ERROR_RESPONSES)
services = ServiceRepository()
runs = RunSummaryRepository()
probes = ProbeResultRepository()

CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]
CanRecover = Annotated[Principal, Depends(require(Permission.RECOVERY_TRIGGER))]
CanControl = Annotated[Principal, Depends(require(Permission.SERVICES_CONTROL))]


class RecoveryCreate(RequestBody):
    reason: str = Field("manual", max_length=500)


class RecoveryAccepted(BaseModel):
    service_id: str
    workflow_id: str
    run_id: str
    attached: bool = Field(description="True when a recovery of this service was already running: this joined it")
    supervised: bool = Field(description="The service is monitored and its queue's watcher runs")
    temporal_ui: str | None = None


class RecoveryPublic(BaseModel):
    run_id: str
    workflow_id: str
    service_id: str | None
    status: str
    started_at: datetime
    finished_at: datetime | None
    summary: dict[str, Any]


class SupervisionPublic(BaseModel):
    service_id: str
    supervised: bool = Field(description="The service is monitored and its queue's watcher runs")
    watcher: str | None = Field(
        None, description="The workflow id of the watcher of the service's queue (watch/{queue})"
    )
    recovering: bool = Field(False, description="A recovery (recover/{service}) runs now")
    state: str | None = Field(None, description="The service's status (the read model)")
    status: SupervisorStatus | None = Field(
        None, description="The running recovery's status, else the last one recorded"
    )
    live: bool = Field(
        False,
        description="True when the status came from the running recovery itself, false "
        "when it is the last one recorded in the store",
    )
    message: str | None = Field(None, description="Why the status is not live, when it is not")


#: how long `GET …/supervision` waits for the recovery to answer its query: one whose worker died is answered
#: for from the store, at once, instead of holding the request until the engine gives up
QUERY_TIMEOUT = timedelta(seconds=3)


class ActionCreate(RequestBody):
    action: Literal["start", "stop", "restart"]
    wait: bool = Field(True, description="Wait until the action is done (healthy after start/restart)")
    timeout: float = Field(120.0, gt=0, le=3600)


class DecisionCreate(RequestBody):
    decision: Literal["approve", "keep_stopped"]


class ServiceMetrics(BaseModel):
    service_id: str
    state: str
    restarts_total: int
    restarts_1h: int
    restarts_24h: int
    recoveries_24h: int
    time_to_recover_p50: float | None = Field(None, description="Seconds, recoveries in the last 24 h")
    time_to_recover_max: float | None = None
    availability_1h: float | None = Field(None, description="Share of passing probes, 0..1")
    availability_24h: float | None = None
    latency_ms_p50: float | None = None
    last_check: datetime | None = None


async def _running(client: Client, workflow_id: str) -> bool:
    """Whether ``workflow_id`` runs: the raw describe RPC, whose answer's status is all this needs (the SDK's
    ``describe()`` also decodes the whole description: memo, search attributes, pending activities)."""
    request = DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
    )
    try:
        answer = await client.workflow_service.describe_workflow_execution(request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return answer.workflow_execution_info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING


def _watcher_of(resources: Any, row: Any) -> str:
    return names.watch_id(watcher_queue(resources.settings.task_queue, row.host))


@router.post(
    "/recoveries",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecoveryAccepted,
    summary="Recover a service now (joins a running recovery)",
)
async def trigger_recovery(
    service_id: str,
    body: RecoveryCreate,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanRecover,
    request_id: RequestIdDep,
) -> RecoveryAccepted:
    # a short read, not a session held across the Temporal calls below: under load, requests holding a pooled
    # connection while they wait for a second one (the audit write) would exhaust the pool
    async with resources.db.read() as session:
        row = await services.require(session=session, service_id=service_id)
        monitored, watcher = row.monitored, _watcher_of(resources, row)
    # whether the watcher runs does not depend on the start: asked alongside (start and audit, one after the other)
    supervisor = asyncio.ensure_future(_running(client, watcher))
    try:
        started = await start_recovery(
            client,
            task_queue=resources.settings.task_queue,
            service_id=service_id,
            reason=body.reason,
            actor=principal.name,
            source="api",
            request_id=request_id,
        )
        workflow_id, attached = started.workflow_id, started.attached
        await record_now(
            resources.db,
            principal,
            "recovery.trigger",
            workflow_id,
            request_id,
            details={"reason": body.reason, "attached": attached},
        )
        supervised = monitored and await supervisor
    finally:  # on success it was awaited; else the start or the audit failed and the answer is that error
        if not supervisor.done():
            supervisor.cancel()
        elif not supervisor.cancelled():
            supervisor.exception()  # retrieved: its own failure is not this answer's
    return RecoveryAccepted(
        service_id=service_id,
        workflow_id=workflow_id,
        run_id=started.run_id,
        attached=attached,
        supervised=supervised,
        temporal_ui=workflow_link(resources.settings, workflow_id),
    )


@router.get("/recoveries", response_model=PageOf[RecoveryPublic], summary="Recovery history (from the store)")
async def list_recoveries(
    service_id: str,
    session: ReadSessionDep,
    _: CanRead,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[RecoveryPublic]:
    await services.require(session=session, service_id=service_id)
    page = await runs.get_all(session=session, kind="recovery", service_id=service_id, limit=limit, cursor=cursor)
    return PageOf[RecoveryPublic](
        items=[
            RecoveryPublic(
                run_id=r.run_id,
                workflow_id=r.workflow_id,
                service_id=r.service_id,
                status=r.status,
                started_at=r.started_at,
                finished_at=r.finished_at,
                summary=r.summary or {},
            )
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get(
    "/supervision",
    response_model=SupervisionPublic,
    summary="Supervision of the service: its queue's watcher, and its recovery when one runs",
)
async def get_supervision(
    service_id: str, session: ReadSessionDep, client: TemporalDep, resources: ResourcesDep, _: CanRead
) -> SupervisionPublic:
    row = await services.require(session=session, service_id=service_id)
    stored = (row.state_detail or {}).get("supervision")
    recorded = SupervisorStatus.model_validate(stored) if stored else None
    watcher = _watcher_of(resources, row)
    watched, recovering = await asyncio.gather(
        _running(client, watcher), _running(client, names.recover_id(service_id))
    )
    out = SupervisionPublic(
        service_id=service_id,
        supervised=row.monitored and watched,
        watcher=watcher,
        recovering=recovering,
        state=row.state,
        status=recorded,
    )
    if not recovering:
        out.message = "no recovery runs: the last recorded status" if recorded else "no recovery so far"
        return out
    try:
        out.status = await client.get_workflow_handle(names.recover_id(service_id)).query(
            ServiceRecovery.query_status, rpc_timeout=QUERY_TIMEOUT
        )
        out.live = True
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.CANCELLED):
            raise
        seconds = QUERY_TIMEOUT.total_seconds()
        out.message = (
            f"the recovery did not answer within {seconds:g}s (no worker runs it right now, or its "
            "worker is restarting): the last recorded status"
        )
    return out


@router.post(
    "/supervision",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=SupervisionPublic,
    summary="Make sure the service's queue is watched (idempotent)",
)
async def start_supervision(
    service_id: str,
    session: ReadSessionDep,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanControl,
    request_id: RequestIdDep,
) -> SupervisionPublic:
    row = await services.require(session=session, service_id=service_id)
    if not row.monitored:
        raise ApiError(409, f"{service_id} is not monitored: set monitored: true first", code="conflict")
    handle = await ensure_watcher(client, task_queue=resources.settings.task_queue, host=row.host)
    async with resources.db.write() as wsession:
        await record(wsession, principal, "supervision.start", handle.id, request_id)
    return SupervisionPublic(service_id=service_id, supervised=True, watcher=handle.id, state=row.state)


@router.post(
    "/recoveries/decision",
    response_model=SupervisionPublic,
    summary="Decide on an escalated recovery waiting for an operator (on_give_up: ask)",
)
async def decide(
    service_id: str,
    body: DecisionCreate,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanRecover,
    request_id: RequestIdDep,
) -> SupervisionPublic:
    handle = client.get_workflow_handle(names.recover_id(service_id))
    try:
        st: SupervisorStatus = await handle.execute_update(  # by name: the SDK types an async update's result
            names.DECIDE, DecisionInput(decision=body.decision, actor=principal.name), result_type=SupervisorStatus
        )
    except WorkflowUpdateFailedError as exc:
        raise ApiError(409, f"no decision pending for {service_id}: {exc.cause}", code="conflict") from None
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise ApiError(409, f"no decision pending for {service_id}: no recovery runs", code="conflict") from None
    async with resources.db.write() as wsession:
        await record(
            wsession,
            principal,
            "recovery.decision",
            names.recover_id(service_id),
            request_id,
            details={"decision": body.decision},
        )
    return SupervisionPublic(service_id=service_id, supervised=True, recovering=True, status=st, live=True)


@router.post(
    "/actions",
    response_model=ControlResult,
    summary="start | stop | restart (a stop or restart holds the service: no recovery meanwhile)",
    responses={202: {"model": ControlResult}},
)
async def act(
    service_id: str,
    body: ActionCreate,
    session: ReadSessionDep,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanControl,
    request_id: RequestIdDep,
    response: Response,
) -> ControlResult:
    await services.require(session=session, service_id=service_id)
    handle = await handles.start_control(
        client,
        task_queue=resources.settings.task_queue,
        nonce=uuid.uuid4().hex[:12],
        inp=ControlInput(service_id=service_id, action=body.action, actor=principal.name, timeout=body.timeout),
    )
    workflow_id = handle.id
    result = ControlResult(service_id=service_id, action=body.action, ok=True, message="accepted")
    if body.wait:
        result = await handle.result()
    else:
        response.status_code = status.HTTP_202_ACCEPTED
    async with resources.db.write() as wsession:
        await record(
            wsession,
            principal,
            f"service.{body.action}",
            service_id,
            request_id,
            outcome="success" if result.ok else "failure",
            details={"workflow_id": workflow_id, "message": result.message},
        )
    return result


@router.get("/metrics", response_model=ServiceMetrics, summary="Restarts, time to recover, availability")
async def metrics(service_id: str, session: ReadSessionDep, _: CanRead) -> ServiceMetrics:
    row = await services.require(session=session, service_id=service_id)
    now = datetime.now(UTC)
    recent = await runs.get_all(session=session, kind="recovery", service_id=service_id, limit=500)
    day = [r for r in recent.items if r.started_at >= now - timedelta(days=1)]
    hour = [r for r in day if r.started_at >= now - timedelta(hours=1)]
    durations = [
        float(seconds)
        for r in day
        if r.status == "recovered" and isinstance(seconds := r.summary.get("seconds"), int | float)
    ]
    checks = await probes.recent(session=session, service_id=service_id, limit=200)
    latencies = [c.latency_ms for c in checks if c.healthy]
    return ServiceMetrics(
        service_id=service_id,
        state=row.state,
        restarts_total=row.restarts_total or 0,
        restarts_1h=sum(_restarts_of(r) for r in hour),
        restarts_24h=sum(_restarts_of(r) for r in day),
        recoveries_24h=len(durations),
        time_to_recover_p50=statistics.median(durations) if durations else None,
        time_to_recover_max=max(durations) if durations else None,
        availability_1h=await probes.availability(session=session, service_id=service_id, window=timedelta(hours=1)),
        availability_24h=await probes.availability(session=session, service_id=service_id, window=timedelta(days=1)),
        latency_ms_p50=statistics.median(latencies) if latencies else None,
        last_check=checks[0].checked_at if checks else None,
    )


def _restarts_of(run: Any) -> int:
    """The restarts a recorded recovery made (its attempts)."""
    attempts = (run.summary or {}).get("attempts")
    return int(attempts) if isinstance(attempts, int) else 0
