"""System initializations: start, list, inspect (live while running), cancel, retry a component."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from sqlalchemy import text
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.audit import record, record_now
from windflow.api.bodies import RequestBody
from windflow.api.deps import (
    ReadSessionDep,
    RequestIdDep,
    ResourcesDep,
    TemporalDep,
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
)
from windflow.domain.errors import Conflict, NotFound
from windflow.persistence.repositories import RunSummaryRepository, ServiceRepository
from windflow.run_health import RunTrouble, inspect_run, mark_run
from windflow.temporal import handles, names
from windflow.temporal.links import workflow_link
from windflow.temporal.live import live_or_stored

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
    error: str | None = Field(
        None,
        description="What keeps the run from going on, or how Temporal ended it, when "
        "its own records cannot say (a workflow task that keeps failing, a terminated run)",
    )
    links: Links


def _dry_run(summary: dict[str, Any] | None) -> bool:
    """Whether a stored run was validate-only (its options are in the recorded state)."""
    return bool(((summary or {}).get("options") or {}).get("validate_only"))


def links(resources: Any, run_id: str) -> Links:
    base = f"/api/v1/initializations/{run_id}"
    return Links(
        self=base, cancel=f"{base}/cancel", temporal_ui=workflow_link(resources.settings, names.init_id(run_id))
    )


def _full(row: Any) -> bool:
    options = (row.summary or {}).get("options") or {}
    return not options.get("components") and not options.get("validate_only")


async def _closed_status(client: Client, workflow_id: str) -> InitStatus | None:
    """The workflow's closed status, or None while it runs (a run Temporal does not know has failed)."""
    status = await handles.execution_status(client, workflow_id)
    if status is None:
        return InitStatus.FAILED
    return _CLOSED.get(status)


async def _ended_in_temporal(resources: Any, client: Client) -> dict[str, InitStatus]:
    """How Temporal ended the full initializations the store still has as running (stale rows), by run id.
    Asked with no store transaction open: a slow or unreachable Temporal holds no writer slot."""
    async with resources.db.read() as session:
        unfinished = [(r.run_id, r.workflow_id) for r in await runs.running(session=session, kind=KIND) if _full(r)]
    ended: dict[str, InitStatus] = {}
    for run_id, workflow_id in unfinished:
        closed = await _closed_status(client, workflow_id)
        if closed is not None:
            ended[run_id] = closed
    return ended


async def _running_full_init(session: Any, ended: dict[str, InitStatus]) -> str | None:
    """The run id of an unfinished full initialization; rows of runs Temporal has ended are closed."""
    for row in await runs.running(session=session, kind=KIND):
        if not _full(row):
            continue
        closed = ended.get(row.run_id)
        if closed is None:  # running, or started since Temporal was asked
            return row.run_id
        row.status = closed.value
        row.finished_at = datetime.now(UTC)
    return None


@router.post(
    "", status_code=status.HTTP_202_ACCEPTED, response_model=InitializationAccepted, summary="Start an initialization"
)
async def start_initialization(
    body: InitializationCreate,
    resources: ResourcesDep,
    principal: CanInit,
    request_id: RequestIdDep,
    response: Response,
) -> InitializationAccepted:
    """Validate, then: ask Temporal about stale runs, record the run (one short write), start its workflow,
    audit. No store transaction is open while Temporal is asked: on SQLite that would hold the one writer
    slot, and every other write (the worker's, the API's) would wait for a slow or unreachable Temporal."""
    options = InitOptions.model_validate(body.model_dump(exclude={"queue"}))
    full = not options.components and not options.validate_only
    if options.components:  # a typo is a 422 now, not a run that fails (and stays in the history as FAILED)
        async with resources.db.read() as session:
            known = {r.id for r in await ServiceRepository().all(session=session)}
        unknown = [c for c in options.components if c not in known]
        if unknown:
            raise ApiError(
                422,
                f"unknown services: {', '.join(unknown)}",
                code="validation_error",
                details=[
                    {"loc": ["body", "components", c], "msg": "no such service", "type": "value_error"} for c in unknown
                ],
            )
    client = await get_temporal(resources)  # after the checks: a bad request is a 422 even with Temporal down
    ended = await _ended_in_temporal(resources, client) if full else {}
    run_id = uuid.uuid4().hex[:16]
    workflow_id = names.init_id(run_id)
    started_at = datetime.now(UTC)
    async with resources.db.write() as session:
        if session.bind is not None and session.bind.dialect.name == "postgresql":
            await session.execute(text("SELECT pg_advisory_xact_lock(7253001)"))  # serialize starters
        queued_after = None
        if full:
            running = await _running_full_init(session, ended)
            if running and not body.queue:
                raise Conflict(
                    f"initialization {running} is running; cancel it or ask to queue",
                    details={"running": running, "links": links(resources, running).model_dump()},
                )
            queued_after = names.init_id(running) if running else None
        state = InitState(
            run_id=run_id, workflow_id=workflow_id, actor=principal.name, options=options, started_at=started_at
        )
        await runs.upsert(
            session=session,
            run_id=run_id,
            kind=KIND,
            workflow_id=workflow_id,
            status=InitStatus.PENDING.value,
            actor=principal.name,
            started_at=started_at,
            summary=state.model_dump(mode="json"),
        )
    try:
        await handles.start_initialization(
            client,
            task_queue=resources.settings.task_queue,
            request_id=request_id,
            inp=InitInput(run_id=run_id, options=options, actor=principal.name, wait_for=queued_after),
        )
    except BaseException:  # the run never started: nothing of it stays
        async with resources.db.write() as session:
            await runs.delete(session=session, run_id=run_id)
        raise
    await record_now(
        resources.db,
        principal,
        "initialization.start",
        workflow_id,
        request_id,
        details={"options": options.model_dump(mode="json"), "queued_after": queued_after},
    )
    _notify(resources)
    link = links(resources, run_id)
    response.headers["Location"] = link.self
    return InitializationAccepted(
        run_id=run_id, workflow_id=workflow_id, status=InitStatus.PENDING, queued_after=queued_after, links=link
    )


@router.get("", response_model=PageOf[InitializationPublic], summary="Initialization history")
async def list_initializations(
    session: ReadSessionDep,
    resources: ResourcesDep,
    _: CanRead,
    status_filter: Annotated[InitStatus | None, Query(alias="status")] = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[InitializationPublic]:
    page = await runs.get_all(
        session=session, kind=KIND, limit=limit, cursor=cursor, status=status_filter.value if status_filter else None
    )
    items = [
        InitializationPublic(
            run_id=r.run_id,
            workflow_id=r.workflow_id,
            status=InitStatus(r.status),
            progress=int((r.summary or {}).get("progress", 0)),
            actor=r.actor,
            live=False,
            state=None,
            validate_only=_dry_run(r.summary),
            started_at=r.started_at,
            finished_at=r.finished_at,
            links=links(resources, r.run_id),
        )
        for r in page.items
    ]
    return PageOf[InitializationPublic](items=items, next_cursor=page.next_cursor)


async def _run(session: Any, run_id: str) -> Any:
    row = await runs.get(session=session, run_id=run_id)
    if row is None or row.kind != KIND:
        raise NotFound(f"initialization {run_id!r} not found", details={"run_id": run_id})
    return row


async def _stored_run(resources: Any, run_id: str) -> Any:
    """The stored run, read in a short transaction of its own (none is held across the Temporal calls after)."""
    async with resources.db.read() as session:
        return await _run(session, run_id)


async def _trouble(resources: Any, workflow_id: str, *, running: bool) -> RunTrouble | None:
    """What keeps a running run from going on, as Temporal tells; None when nothing does, or Temporal cannot
    say (or the run is over)."""
    if not running:
        return None
    try:
        return await inspect_run(await resources.temporal.get(), workflow_id)
    except Exception:  # Temporal down: the store answers
        return None


@router.get("/{run_id}", response_model=InitializationPublic, summary="One initialization (live while running)")
async def get_initialization(
    run_id: str, session: ReadSessionDep, resources: ResourcesDep, _: CanRead
) -> InitializationPublic:
    row = await _run(session, run_id)
    error = (row.summary or {}).get("error")
    status: InitStatus | None = None
    stored = InitState.model_validate(row.summary) if row.summary else None
    running = row.finished_at is None
    # asked alongside: a run whose workflow task keeps failing may still answer queries, wrongly "alive"
    trouble, read = await asyncio.gather(
        _trouble(resources, row.workflow_id, running=running),
        live_or_stored(resources.temporal, row.workflow_id, InitState, stored=stored, running=running),
    )
    if isinstance(trouble, RunTrouble):
        error = trouble.message
        status = InitStatus(trouble.status) if trouble.closed and trouble.status else None
    state, live = read.state, read.live
    return InitializationPublic(
        run_id=row.run_id,
        workflow_id=row.workflow_id,
        status=status or (state.status if state else InitStatus(row.status)),
        progress=state.progress if state else 0,
        actor=row.actor,
        live=live,
        state=state,
        started_at=row.started_at,
        validate_only=state.options.validate_only if state else _dry_run(row.summary),
        finished_at=state.finished_at if state and state.status in TERMINAL_INIT else row.finished_at,
        error=error,
        links=links(resources, run_id),
    )


@router.post("/{run_id}/cancel", status_code=status.HTTP_202_ACCEPTED, summary="Cancel (rolls back by default)")
async def cancel_initialization(
    run_id: str,
    resources: ResourcesDep,
    client: TemporalDep,
    principal: CanInit,
    request_id: RequestIdDep,
) -> dict[str, str]:
    row = await _stored_run(resources, run_id)
    handle = client.get_workflow_handle(row.workflow_id)
    trouble = await inspect_run(client, row.workflow_id)
    if trouble is not None and trouble.closed:  # the worker's run watchdog records how it ended
        raise Conflict(f"initialization {run_id} has already ended ({trouble.message})", details={"status": row.status})
    if trouble is not None:
        # its workflow task keeps failing: it would never see a cancel request. End it in Temporal; what it started
        # is left as it is (no rollback runs), and the run records why
        message = f"cancelled by {principal.name} while {trouble.message}; nothing was rolled back"
        await handle.terminate(reason=message)
        async with resources.db.write() as wsession:
            stored = await _run(wsession, run_id)
            await mark_run(wsession, stored, message=message, status=InitStatus.CANCELLED.value)
            await record(
                wsession,
                principal,
                "initialization.cancel",
                row.workflow_id,
                request_id,
                details={"terminated": trouble.message},
            )
        _notify(resources)
        return {"run_id": run_id, "status": "cancelled"}
    await handle.cancel()
    await record_now(resources.db, principal, "initialization.cancel", row.workflow_id, request_id)
    _notify(resources)
    return {"run_id": run_id, "status": "cancelling"}


@router.post("/{run_id}/components/{component}/retry", summary="Retry one failed component in the same run")
async def retry_component(
    run_id: str,
    component: str,
    resources: ResourcesDep,
    client: TemporalDep,
    principal: CanInit,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    row = await _stored_run(resources, run_id)
    try:
        result = await handles.retry_component(client, row.workflow_id, component)
    except WorkflowUpdateFailedError as exc:
        reason = str(exc.cause.message if hasattr(exc.cause, "message") else exc.cause)
        raise ApiError(
            409, f"cannot retry {component}: {reason}", code="conflict", details={"component": component}
        ) from None
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"initialization {run_id} is no longer running") from None
        raise
    await record_now(
        resources.db, principal, "initialization.retry_component", f"{row.workflow_id}/{component}", request_id
    )
    _notify(resources)
    return {"run_id": run_id, "component": component, "accepted": result.accepted, "message": result.message}


def _notify(resources: Any) -> None:
    """The relay publishes the events just committed (the audit's)."""
    if resources.relay is not None:
        resources.relay.notify()
