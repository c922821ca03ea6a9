"""System initializations: start, list, inspect (live while running), cancel, retry a component."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import text
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.audit import record
from windflow.api.bodies import RequestBody
from windflow.api.deps import (
    ReadSessionDep,
    RequestIdDep,
    ResourcesDep,
    TemporalDep,
    WriteSessionDep,
    get_temporal,
)
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.contracts import (
    TERMINAL_INIT,
    InitInput,
    InitOptions,
    InitState,
    InitStatus,
    RetryComponentInput,
)
from windflow.domain.errors import Conflict, NotFound
from windflow.persistence.repositories import RunSummaryRepository, ServiceRepository
from windflow.run_health import RunTrouble, inspect_run, mark_run
from windflow.workflows import search_attributes as sa
from windflow.workflows.initialization import SystemInitialization

router = APIRouter(prefix="/initializations", tags=["initializations"], responses=ERROR_RESPONSES)
runs = RunSummaryRepository()
KIND = "initialization"

CanInit = Annotated[Principal, Depends(require(Permission.INITIALIZE_SYSTEM))]
CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]

_CLOSED = {
    WorkflowExecutionStatus.COMPLETED: InitStatus.SUCCEEDED,
    WorkflowExecutionStatus.FAILED: InitStatus.FAILED,
    WorkflowExecutionStatus.CANCELED: InitStatus.CANCELLED,
    WorkflowExecutionStatus.TERMINATED: InitStatus.CANCELLED,
    WorkflowExecutionStatus.TIMED_OUT: InitStatus.FAILED,
}


class InitializationCreate(RequestBody, InitOptions):
    queue: bool = Field(False, description="If a full initialization is running, run after it instead of 409")


class Links(BaseModel):
    self: str
    cancel: str
    temporal_ui: str | None = None


class InitializationAccepted(BaseModel):
    run_id: str
    workflow_id: str
    status: InitStatus
    queued_after: str | None = None
    links: Links


class InitializationPublic(BaseModel):
    run_id: str
    workflow_id: str
    status: InitStatus
    progress: int
    actor: str
    live: bool = Field(description="True when read from the running workflow, false when from the store")
    validate_only: bool = Field(False, description="A dry run: configs and the graph were checked, nothing started")
    state: InitState | None = None
    started_at: datetime
    finished_at: datetime | None
    error: str | None = Field(None, description="What keeps the run from going on, or how Temporal ended it, when "
                              "its own records cannot say (a workflow task that keeps failing, a terminated run)")
    links: Links


#: how long a read waits for the running workflow to answer its status query
QUERY_TIMEOUT = timedelta(seconds=3)


def _dry_run(summary: dict[str, Any] | None) -> bool:
    """Whether a stored run was validate-only (its options are in the recorded state)."""
    return bool(((summary or {}).get("options") or {}).get("validate_only"))


def workflow_id_of(run_id: str) -> str:
    return f"init/{run_id}"


def links(resources: Any, run_id: str) -> Links:
    base = f"/api/v1/initializations/{run_id}"
    return Links(self=base, cancel=f"{base}/cancel",
                 temporal_ui=resources.settings.temporal_ui_link(workflow_id_of(run_id)))


async def _closed_status(client: Client, workflow_id: str) -> InitStatus | None:
    """The workflow's closed status, or None while it runs (or is unknown to Temporal)."""
    try:
        desc = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return InitStatus.FAILED
        raise
    return _CLOSED.get(desc.status) if desc.status else None


async def _running_full_init(session: Any, client: Client) -> str | None:
    """The run id of an unfinished full initialization; stale store rows are reconciled with Temporal."""
    for row in await runs.running(session=session, kind=KIND):
        options = (row.summary or {}).get("options") or {}
        if options.get("components") or options.get("validate_only"):
            continue
        closed = await _closed_status(client, row.workflow_id)
        if closed is None:
            return row.run_id
        row.status = closed.value
        row.finished_at = datetime.now(UTC)
    return None


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=InitializationAccepted,
             summary="Start an initialization")
async def start_initialization(
    body: InitializationCreate,
    session: WriteSessionDep,
    resources: ResourcesDep,
    principal: CanInit,
    request_id: RequestIdDep,
    response: Response,
) -> InitializationAccepted:
    options = InitOptions.model_validate(body.model_dump(exclude={"queue"}))
    full = not options.components and not options.validate_only
    if options.components:  # a typo is a 422 now, not a run that fails (and stays in the history as FAILED)
        known = {r.id for r in await ServiceRepository().all(session=session)}
        unknown = [c for c in options.components if c not in known]
        if unknown:
            raise ApiError(422, f"unknown services: {', '.join(unknown)}", code="validation_error",
                           details=[{"loc": ["body", "components", c], "msg": "no such service",
                                     "type": "value_error"} for c in unknown])
    client = await get_temporal(resources)  # after the checks: a bad request is a 422 even with Temporal down
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(7253001)"))  # serialize starters
    queued_after = None
    if full:
        running = await _running_full_init(session, client)
        if running and not body.queue:
            raise Conflict(f"initialization {running} is running; cancel it or ask to queue",
                           details={"running": running, "links": links(resources, running).model_dump()})
        queued_after = workflow_id_of(running) if running else None
    run_id = uuid.uuid4().hex[:16]
    workflow_id = workflow_id_of(run_id)
    state = InitState(run_id=run_id, workflow_id=workflow_id, actor=principal.name, options=options,
                      started_at=datetime.now(UTC))
    await runs.upsert(session=session, run_id=run_id, kind=KIND, workflow_id=workflow_id,
                      status=InitStatus.PENDING.value, actor=principal.name, started_at=state.started_at,
                      summary=state.model_dump(mode="json"))
    await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=options, actor=principal.name, wait_for=queued_after),
        id=workflow_id,
        task_queue=resources.settings.task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        memo={"actor": principal.name, "request_id": request_id},
        search_attributes=TypedSearchAttributes([
            SearchAttributePair(sa.KIND, KIND),
            SearchAttributePair(sa.STATUS, InitStatus.PENDING.value),
            SearchAttributePair(sa.ACTOR, principal.name),
        ]),
        static_summary=f"initialization by {principal.name}"
        + (" (validate only)" if options.validate_only else "")
        + (f": {', '.join(options.components)}" if options.components else ""),
    )
    await record(session, principal, "initialization.start", workflow_id, request_id,
                 details={"options": options.model_dump(mode="json"), "queued_after": queued_after})
    link = links(resources, run_id)
    response.headers["Location"] = link.self
    return InitializationAccepted(run_id=run_id, workflow_id=workflow_id, status=InitStatus.PENDING,
                                  queued_after=queued_after, links=link)


@router.get("", response_model=PageOf[InitializationPublic], summary="Initialization history")
async def list_initializations(
    session: ReadSessionDep,
    resources: ResourcesDep,
    _: CanRead,
    status_filter: Annotated[InitStatus | None, Query(alias="status")] = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[InitializationPublic]:
    page = await runs.get_all(session=session, kind=KIND, limit=limit, cursor=cursor,
                           status=status_filter.value if status_filter else None)
    items = [
        InitializationPublic(
            run_id=r.run_id, workflow_id=r.workflow_id, status=InitStatus(r.status),
            progress=int((r.summary or {}).get("progress", 0)), actor=r.actor, live=False, state=None,
            validate_only=_dry_run(r.summary),
            started_at=r.started_at, finished_at=r.finished_at, links=links(resources, r.run_id),
        )
        for r in page.items
    ]
    return PageOf[InitializationPublic](items=items, next_cursor=page.next_cursor)


async def _handle(session: Any, run_id: str, client: Client) -> tuple[Any, WorkflowHandle[Any, Any]]:
    row = await runs.get(session=session, run_id=run_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"initialization {run_id!r} not found", details={"run_id": run_id})
    return row, client.get_workflow_handle(row.workflow_id)


@router.get("/{run_id}", response_model=InitializationPublic, summary="One initialization (live while running)")
async def get_initialization(
    run_id: str, session: ReadSessionDep, resources: ResourcesDep, _: CanRead
) -> InitializationPublic:
    row = await runs.get(session=session, run_id=run_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"initialization {run_id!r} not found", details={"run_id": run_id})
    state: InitState | None = None
    live = False
    error = (row.summary or {}).get("error")
    status: InitStatus | None = None
    if row.finished_at is None:
        try:
            client = await resources.temporal.get()
            # asked alongside: a run whose workflow task keeps failing may still answer queries, wrongly "alive"
            trouble, state = await asyncio.gather(
                inspect_run(client, row.workflow_id),
                client.get_workflow_handle(row.workflow_id).query(SystemInitialization.status,
                                                                  rpc_timeout=QUERY_TIMEOUT),
                return_exceptions=True)
            if isinstance(trouble, RunTrouble):
                error = trouble.message
                status = InitStatus(trouble.status) if trouble.closed and trouble.status else None
            if isinstance(state, BaseException):  # no worker to answer the query: fall back to the store
                state = None
            else:
                live = True
        except Exception:  # Temporal down: fall back to the store
            state = None
    if state is None:
        state = InitState.model_validate(row.summary) if row.summary else None
    return InitializationPublic(
        run_id=row.run_id, workflow_id=row.workflow_id,
        status=status or (state.status if state else InitStatus(row.status)),
        progress=state.progress if state else 0,
        actor=row.actor, live=live, state=state, started_at=row.started_at,
        validate_only=state.options.validate_only if state else _dry_run(row.summary),
        finished_at=state.finished_at if state and state.status in TERMINAL_INIT else row.finished_at,
        error=error, links=links(resources, run_id),
    )


@router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, summary="Cancel (rolls back by default)")
async def cancel_initialization(
    run_id: str, session: WriteSessionDep, client: TemporalDep, principal: CanInit, request_id: RequestIdDep
) -> dict[str, str]:
    row, handle = await _handle(session, run_id, client)
    trouble = await inspect_run(client, row.workflow_id)
    if trouble is not None and trouble.closed:  # the worker's run watchdog records how it ended
        raise Conflict(f"initialization {run_id} has already ended ({trouble.message})",
                       details={"status": row.status})
    if trouble is not None:
        # its workflow task keeps failing: it would never see a cancel request. End it in Temporal; what it started
        # is left as it is (no rollback runs), and the run records why
        message = f"cancelled by {principal.name} while {trouble.message}; nothing was rolled back"
        await handle.terminate(reason=message)
        await mark_run(session, row, message=message, status=InitStatus.CANCELLED.value)
        await record(session, principal, "initialization.cancel", row.workflow_id, request_id,
                     details={"terminated": trouble.message})
        return {"run_id": run_id, "status": "cancelled"}
    await handle.cancel()
    await record(session, principal, "initialization.cancel", row.workflow_id, request_id)
    return {"run_id": run_id, "status": "cancelling"}


@router.post("/{run_id}/components/{component}/retry", summary="Retry one failed component in the same run")
async def retry_component(
    run_id: str,
    component: str,
    session: WriteSessionDep,
    client: TemporalDep,
    principal: CanInit,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    row, handle = await _handle(session, run_id, client)
    try:
        result = await handle.execute_update(SystemInitialization.retry_component,
                                             RetryComponentInput(component=component))
    except WorkflowUpdateFailedError as exc:
        reason = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
        raise ApiError(409, f"cannot retry {component}: {reason}", code="conflict",
                       details={"component": component}) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"initialization {run_id} is no longer running") from None
        raise
    await record(session, principal, "initialization.retry_component", f"{row.workflow_id}/{component}", request_id)
    return {"run_id": run_id, "component": component, "accepted": result.accepted, "message": result.message}
