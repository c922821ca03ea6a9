"""Recovery, supervision and control of one service: trigger, follow, decide, act, measure."""

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
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
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
    SupervisorInput,
    SupervisorStatus,
)
from windflow.persistence.repositories import ProbeResultRepository, RunSummaryRepository, ServiceRepository
from windflow.temporal import handles, names
from windflow.temporal import search_attributes as sa
from windflow.temporal.handles import start_recovery
from windflow.temporal.links import workflow_link
from windflow.workflows.supervision import ServiceSupervisor

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
    supervised: bool
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
    supervised: bool
    status: SupervisorStatus | None = None
    live: bool = Field(False, description="True when the status came from the running supervisor itself, false "
                       "when it is the last one recorded in the store")
    message: str | None = Field(None, description="Why the status is not live, when it is not")


#: how long `GET …/supervision` waits for the supervisor to answer its query: a supervisor whose worker died is
#: answered for from the store, at once, instead of holding the request until the engine gives up
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


async def _supervisor_running(client: Client, service_id: str) -> bool:
    """Whether ``supervise/{service_id}`` runs: the raw describe RPC, whose answer's status is all this needs (the
    SDK's ``describe()`` also decodes the whole description: memo, search attributes, pending activities)."""
    request = DescribeWorkflowExecutionRequest(namespace=client.namespace,
                                               execution=WorkflowExecution(workflow_id=names.supervise_id(service_id)))
    try:
        answer = await client.workflow_service.describe_workflow_execution(request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return answer.workflow_execution_info.status == WorkflowExecutionStatus.WORKFLOW_EXECUTION_STATUS_RUNNING


@router.post("/recoveries", status_code=status.HTTP_202_ACCEPTED, response_model=RecoveryAccepted,
             summary="Recover a service now (joins a running recovery)")
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
    await services.require_exists(db=resources.db, service_id=service_id)
    # whether a supervisor runs does not depend on the start: asked alongside (start and audit, one after the other)
    supervisor = asyncio.ensure_future(_supervisor_running(client, service_id))
    try:
        started = await start_recovery(client, task_queue=resources.settings.task_queue, service_id=service_id,
                                       reason=body.reason, actor=principal.name, source="api", request_id=request_id)
        workflow_id, attached = started.workflow_id, started.attached
        await record_now(resources.db, principal, "recovery.trigger", workflow_id, request_id,
                         details={"reason": body.reason, "attached": attached})
        supervised = await supervisor
    finally:  # on success it was awaited; else the start or the audit failed and the answer is that error
        if not supervisor.done():
            supervisor.cancel()
        elif not supervisor.cancelled():
            supervisor.exception()  # retrieved: its own failure is not this answer's
    return RecoveryAccepted(service_id=service_id, workflow_id=workflow_id, run_id=started.run_id, attached=attached,
                            supervised=supervised, temporal_ui=workflow_link(resources.settings, workflow_id))


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
        items=[RecoveryPublic(run_id=r.run_id, workflow_id=r.workflow_id, service_id=r.service_id, status=r.status,
                              started_at=r.started_at, finished_at=r.finished_at, summary=r.summary or {})
               for r in page.items],
        next_cursor=page.next_cursor,
    )


@router.get("/supervision", response_model=SupervisionPublic, summary="Live supervision state (query)")
async def get_supervision(service_id: str, session: ReadSessionDep, client: TemporalDep,
                          _: CanRead) -> SupervisionPublic:
    row = await services.require(session=session, service_id=service_id)
    stored = (row.state_detail or {}).get("supervision")
    recorded = SupervisorStatus.model_validate(stored) if stored else None
    if not await _supervisor_running(client, service_id):
        return SupervisionPublic(service_id=service_id, supervised=False, status=recorded,
                                 message="no supervisor runs: the last recorded status")
    try:
        live = await client.get_workflow_handle(names.supervise_id(service_id)).query(
            ServiceSupervisor.query_status, rpc_timeout=QUERY_TIMEOUT)
    except RPCError as exc:
        if exc.status not in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE, RPCStatusCode.CANCELLED):
            raise
        seconds = QUERY_TIMEOUT.total_seconds()
        return SupervisionPublic(
            service_id=service_id, supervised=True, status=recorded, live=False,
            message=f"the supervisor did not answer within {seconds:g}s (no worker runs it right now, or its worker "
                    "is restarting): the last recorded status")
    return SupervisionPublic(service_id=service_id, supervised=True, status=live, live=True)


@router.post("/supervision", status_code=status.HTTP_202_ACCEPTED, response_model=SupervisionPublic,
             summary="Start supervising the service (idempotent)")
async def start_supervision(service_id: str, session: ReadSessionDep, client: TemporalDep, resources: ResourcesDep,
                            principal: CanControl, request_id: RequestIdDep) -> SupervisionPublic:
    spec_row = await services.require(session=session, service_id=service_id)
    if not spec_row.monitored:
        raise ApiError(409, f"{service_id} is not monitored: set monitored: true first", code="conflict")
    await client.start_workflow(
        ServiceSupervisor.run, SupervisorInput(service_id=service_id), id=names.supervise_id(service_id),
        task_queue=resources.settings.task_queue, id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        memo={"actor": principal.name},
        search_attributes=TypedSearchAttributes([SearchAttributePair(sa.KIND, "supervisor"),
                                                 SearchAttributePair(sa.SERVICE, service_id)]),
        static_summary=f"supervises {service_id}",
    )
    async with resources.db.write() as wsession:
        await record(wsession, principal, "supervision.start", names.supervise_id(service_id), request_id)
    return SupervisionPublic(service_id=service_id, supervised=True)


@router.post("/recoveries/decision", response_model=SupervisionPublic,
             summary="Decide on an escalated recovery waiting for an operator (on_give_up: ask)")
async def decide(service_id: str, body: DecisionCreate, client: TemporalDep, resources: ResourcesDep,
                 principal: CanRecover, request_id: RequestIdDep) -> SupervisionPublic:
    handle = client.get_workflow_handle(names.supervise_id(service_id))
    try:
        st: SupervisorStatus = await handle.execute_update(  # by name: the SDK types an async update's result
            names.DECIDE, DecisionInput(decision=body.decision, actor=principal.name), result_type=SupervisorStatus)
    except WorkflowUpdateFailedError as exc:
        raise ApiError(409, f"no decision pending for {service_id}: {exc.cause}", code="conflict") from None
    async with resources.db.write() as wsession:
        await record(wsession, principal, "recovery.decision", names.supervise_id(service_id), request_id,
                     details={"decision": body.decision})
    return SupervisionPublic(service_id=service_id, supervised=True, status=st)


@router.post("/actions", response_model=ControlResult, summary="start | stop | restart (a stop pauses supervision)",
             responses={202: {"model": ControlResult}})
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
        client, task_queue=resources.settings.task_queue, nonce=uuid.uuid4().hex[:12],
        inp=ControlInput(service_id=service_id, action=body.action, actor=principal.name, timeout=body.timeout))
    workflow_id = handle.id
    result = ControlResult(service_id=service_id, action=body.action, ok=True, message="accepted")
    if body.wait:
        result = await handle.result()
    else:
        response.status_code = status.HTTP_202_ACCEPTED
    async with resources.db.write() as wsession:
        await record(wsession, principal, f"service.{body.action}", service_id, request_id,
                     outcome="success" if result.ok else "failure",
                     details={"workflow_id": workflow_id, "message": result.message})
    return result


@router.get("/metrics", response_model=ServiceMetrics, summary="Restarts, time to recover, availability")
async def metrics(service_id: str, session: ReadSessionDep, _: CanRead) -> ServiceMetrics:
    row = await services.require(session=session, service_id=service_id)
    now = datetime.now(UTC)
    supervision = (row.state_detail or {}).get("supervision") or {}
    restart_times = [datetime.fromisoformat(t) for t in supervision.get("restarts", [])]
    recent = await runs.get_all(session=session, kind="recovery", service_id=service_id, limit=500)
    day = [r for r in recent.items if r.started_at >= now - timedelta(days=1)]
    durations = [float(seconds) for r in day
                 if r.status == "recovered" and isinstance(seconds := r.summary.get("seconds"), int | float)]
    checks = await probes.recent(session=session, service_id=service_id, limit=200)
    latencies = [c.latency_ms for c in checks if c.healthy]
    return ServiceMetrics(
        service_id=service_id,
        state=row.state,
        restarts_total=int(supervision.get("restarts_total", 0)),
        restarts_1h=sum(1 for t in restart_times if t >= now - timedelta(hours=1)),
        restarts_24h=sum(1 for t in restart_times if t >= now - timedelta(days=1)),
        recoveries_24h=len(durations),
        time_to_recover_p50=statistics.median(durations) if durations else None,
        time_to_recover_max=max(durations) if durations else None,
        availability_1h=await probes.availability(session=session, service_id=service_id, window=timedelta(hours=1)),
        availability_24h=await probes.availability(session=session, service_id=service_id,
                                                   window=timedelta(days=1)),
        latency_ms_p50=statistics.median(latencies) if latencies else None,
        last_check=checks[0].checked_at if checks else None,
    )
