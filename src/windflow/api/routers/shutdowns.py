"""System shutdowns: stop every service, or some and their dependants, in reverse dependency order."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field
from temporalio.client import WorkflowExecutionStatus

from windflow.api.audit import record_now
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, TemporalDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import Conflict, NotFound
from windflow.domain.models import is_service_id
from windflow.domain.shutdown import TERMINAL_SHUTDOWN, ShutdownInput, ShutdownState, ShutdownStatus
from windflow.persistence.repositories import RunSummaryRepository, ServiceRepository
from windflow.temporal import handles, names
from windflow.temporal.links import workflow_link
from windflow.temporal.live import live_or_stored

router = APIRouter(prefix="/shutdowns", tags=["shutdowns"], responses=ERROR_RESPONSES)
runs = RunSummaryRepository()
services = ServiceRepository()
KIND = "shutdown"

CanControl = Annotated[Principal, Depends(require(Permission.SERVICES_CONTROL))]
CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]


class ShutdownCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    services: list[str] = Field(
        default_factory=list,
        max_length=10_000,
        description="Service ids to stop (their dependants are stopped first); empty = every service",
    )
    reason: str = Field("", max_length=500, description="Why (shown in the audit trail and the Temporal UI)")


class ShutdownLinks(BaseModel):
    self: str
    cancel: str
    temporal_ui: str | None = None


class ShutdownAccepted(BaseModel):
    run_id: str
    workflow_id: str
    status: ShutdownStatus
    links: ShutdownLinks


class ShutdownPublic(BaseModel):
    run_id: str
    workflow_id: str
    status: ShutdownStatus
    progress: int
    actor: str
    live: bool = Field(description="True when read from the running workflow, false when from the store")
    state: ShutdownState | None = None
    started_at: datetime
    finished_at: datetime | None
    links: ShutdownLinks


def links(resources: Any, run_id: str) -> ShutdownLinks:
    base = f"/api/v1/shutdowns/{run_id}"
    return ShutdownLinks(
        self=base, cancel=f"{base}/cancel", temporal_ui=workflow_link(resources.settings, names.down_id(run_id))
    )


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=ShutdownAccepted,
    summary="Shut down services in reverse dependency order",
)
async def start_shutdown(
    body: ShutdownCreate,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanControl,
    request_id: RequestIdDep,
    response: Response,
) -> ShutdownAccepted:
    wanted = list(dict.fromkeys(body.services))
    bad = [n for n in wanted if not is_service_id(n)]
    async with resources.db.read() as session:
        known = {r.id for r in await services.all(session=session)}
    unknown = [n for n in wanted if n not in known and n not in bad]
    if bad or unknown:
        details = [
            {
                "loc": ["body", "services", n],
                "msg": "not a service id" if n in bad else "no such service",
                "type": "value_error",
            }
            for n in [*bad, *unknown]
        ]
        raise ApiError(
            422, f"unknown services: {', '.join([*bad, *unknown])}", code="validation_error", details=details
        )
    if not known:
        raise ApiError(
            422,
            "the registry has no services to shut down",
            code="validation_error",
            details=[{"loc": ["body", "services"], "msg": "no services", "type": "value_error"}],
        )
    run_id = uuid.uuid4().hex[:16]
    workflow_id = names.down_id(run_id)
    started = datetime.now(UTC)
    state = ShutdownState(
        run_id=run_id,
        workflow_id=workflow_id,
        actor=principal.name,
        reason=body.reason,
        requested=wanted,
        started_at=started,
    )
    async with resources.db.write() as session:  # short: no Temporal call while the writer slot is held
        await runs.upsert(
            session=session,
            run_id=run_id,
            kind=KIND,
            workflow_id=workflow_id,
            status=ShutdownStatus.PENDING.value,
            actor=principal.name,
            started_at=started,
            summary=state.model_dump(mode="json"),
        )
    try:
        await handles.start_shutdown(
            client,
            task_queue=resources.settings.task_queue,
            request_id=request_id,
            inp=ShutdownInput(run_id=run_id, services=wanted, actor=principal.name, reason=body.reason),
        )
    except BaseException:  # the run never started: nothing of it stays
        async with resources.db.write() as session:
            await runs.delete(session=session, run_id=run_id)
        raise
    await record_now(
        resources.db,
        principal,
        "shutdown.start",
        workflow_id,
        request_id,
        details={"services": wanted, "reason": body.reason},
    )
    if resources.relay is not None:
        resources.relay.notify()
    link = links(resources, run_id)
    response.headers["Location"] = link.self
    return ShutdownAccepted(run_id=run_id, workflow_id=workflow_id, status=ShutdownStatus.PENDING, links=link)


def _public(row: Any, resources: Any, state: ShutdownState | None, live: bool) -> ShutdownPublic:
    return ShutdownPublic(
        run_id=row.run_id,
        workflow_id=row.workflow_id,
        status=state.status if state else ShutdownStatus(row.status),
        progress=state.progress if state else 0,
        actor=row.actor,
        live=live,
        state=state,
        started_at=row.started_at,
        finished_at=state.finished_at if state and state.status in TERMINAL_SHUTDOWN else row.finished_at,
        links=links(resources, row.run_id),
    )


@router.get("", response_model=PageOf[ShutdownPublic], summary="Shutdown history")
async def list_shutdowns(
    session: ReadSessionDep,
    resources: ResourcesDep,
    _: CanRead,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[ShutdownPublic]:
    page = await runs.get_all(session=session, kind=KIND, limit=limit, cursor=cursor)
    return PageOf[ShutdownPublic](
        items=[
            _public(r, resources, ShutdownState.model_validate(r.summary) if r.summary else None, False)
            for r in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.get("/{run_id}", response_model=ShutdownPublic, summary="One shutdown (live while running)")
async def get_shutdown(run_id: str, session: ReadSessionDep, resources: ResourcesDep, _: CanRead) -> ShutdownPublic:
    row = await runs.get(session=session, run_id=run_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"shutdown {run_id!r} not found", details={"run_id": run_id})
    read = await live_or_stored(
        resources.temporal,
        row.workflow_id,
        ShutdownState,
        stored=ShutdownState.model_validate(row.summary) if row.summary else None,
        running=row.finished_at is None,
    )
    return _public(row, resources, read.state, read.live)


@router.post(
    "/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel: what is stopped stays stopped, the rest keeps running",
)
async def cancel_shutdown(
    run_id: str, client: TemporalDep, resources: ResourcesDep, principal: CanControl, request_id: RequestIdDep
) -> dict[str, str]:
    async with resources.db.read() as session:  # short: none is held across the Temporal calls below
        row = await runs.get(session=session, run_id=run_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"shutdown {run_id!r} not found", details={"run_id": run_id})
    if await handles.execution_status(client, row.workflow_id) != WorkflowExecutionStatus.RUNNING:
        raise Conflict(f"shutdown {run_id} has already finished", details={"status": row.status})
    await client.get_workflow_handle(row.workflow_id).cancel()
    await record_now(resources.db, principal, "shutdown.cancel", row.workflow_id, request_id)
    if resources.relay is not None:
        resources.relay.notify()
    return {"run_id": run_id, "status": "cancelling"}
