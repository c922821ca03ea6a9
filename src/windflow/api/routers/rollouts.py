"""Config rollouts of one service: start (validate, save, apply, verify, roll back), follow, list, cancel.

A rollout is the ``ConfigRollout`` workflow with id ``rollout/{service}``: one at a time per service (a second
start while one runs is a 409). The proposed config is validated here first, so a bad one is refused with the
error envelope and nothing is saved; the workflow validates again against the registry as it is then.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from pydantic import BaseModel, Field
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.audit import audit_as, record_now
from windflow.api.bodies import VERSION_MAX, RequestBody
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, TemporalDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import Conflict, NotFound, VersionConflict
from windflow.domain.privilege import check_exec
from windflow.domain.rollout import (
    DEFAULT_VERIFY_WINDOW,
    MAX_VERIFY_WINDOW,
    TERMINAL_ROLLOUT,
    RolloutInput,
    RolloutPhase,
    RolloutState,
    RolloutStatus,
)
from windflow.persistence import registry
from windflow.persistence.repositories import ServiceRepository, spec_of
from windflow.persistence.rollout_models import ConfigRolloutRow, RolloutRepository
from windflow.temporal import handles, names
from windflow.temporal.links import workflow_link
from windflow.temporal.live import live_or_stored

router = APIRouter(prefix="/services/{service_id}/rollouts", tags=["rollouts"], responses=ERROR_RESPONSES)
services = ServiceRepository()
rollouts = RolloutRepository()

CanRead = Annotated[Principal, Depends(require(Permission.CONFIGS_READ))]
CanWrite = Annotated[Principal, Depends(require(Permission.CONFIGS_WRITE))]


class RolloutCreate(RequestBody):
    config: dict[str, Any] = Field(description="The service's full definition without its id (like PUT .../config)")
    comment: str = Field("", max_length=2000)
    verify_window: float = Field(
        DEFAULT_VERIFY_WINDOW,
        gt=0,
        le=MAX_VERIFY_WINDOW,
        description="Seconds the new version must stay healthy before it is marked good",
    )
    expected_version: int | None = Field(
        None, ge=1, le=VERSION_MAX, description="Refuse unless the current version is this one"
    )
    wait: bool = Field(False, description="Answer when the rollout has ended (or after `timeout`)")
    timeout: float = Field(600.0, gt=0, le=3600, description="With wait: seconds to wait at most")


class RolloutLinks(BaseModel):
    self: str
    cancel: str
    temporal_ui: str | None = None


class RolloutPublic(BaseModel):
    rollout_id: str
    service_id: str
    workflow_id: str
    status: RolloutStatus
    phase: RolloutPhase
    progress: int
    actor: str
    comment: str
    verify_window: float
    message: str
    previous_version: int | None
    good_version: int | None
    new_version: int | None
    restored_version: int | None
    live: bool = Field(False, description="True when read from the running workflow, false when from the store")
    state: RolloutState | None = Field(None, description="Phases and health evidence (probe results)")
    started_at: datetime
    finished_at: datetime | None
    links: RolloutLinks


def _links(resources: Any, service_id: str, rollout_id: str) -> RolloutLinks:
    base = f"/api/v1/services/{service_id}/rollouts/{rollout_id}"
    return RolloutLinks(
        self=base, cancel=f"{base}/cancel", temporal_ui=workflow_link(resources.settings, names.rollout_id(service_id))
    )


def _public(
    resources: Any,
    row: ConfigRolloutRow,
    *,
    state: RolloutState | None = None,
    live: bool = False,
    with_state: bool = True,
) -> RolloutPublic:
    if state is None and with_state and row.state:
        state = RolloutState.model_validate(row.state)
    return RolloutPublic(
        rollout_id=row.id,
        service_id=row.service_id,
        workflow_id=row.workflow_id,
        status=state.status if state else RolloutStatus(row.status),
        phase=state.phase if state else RolloutPhase(row.phase),
        progress=state.progress if state else int((row.state or {}).get("progress", 0)),
        actor=row.actor,
        comment=row.comment,
        verify_window=row.verify_window,
        message=state.message if state else row.message,
        previous_version=state.previous_version if state else row.previous_version,
        good_version=state.good_version if state else row.good_version,
        new_version=state.new_version if state else row.new_version,
        restored_version=state.restored_version if state else row.restored_version,
        live=live,
        state=state if with_state else None,
        started_at=row.started_at,
        finished_at=state.finished_at if state and state.terminal else row.finished_at,
        links=_links(resources, row.service_id, row.id),
    )


async def _live(temporal: Any, row: ConfigRolloutRow) -> RolloutState | None:
    """The running workflow's state, if it is this rollout's (a later rollout reuses the workflow id)."""
    read = await live_or_stored(
        temporal, row.workflow_id, RolloutState, stored=None, accept=lambda state: state.rollout_id == row.id
    )
    return read.state


async def _start(client: Client, resources: Any, inp: RolloutInput, request_id: str) -> WorkflowHandle[Any, Any]:
    """Start ``rollout/{service}``; raises WorkflowAlreadyStartedError while one runs."""
    return await handles.start_rollout(client, task_queue=resources.settings.task_queue, inp=inp, request_id=request_id)


async def _closes(client: Client, workflow_id: str, timeout: float = 10.0) -> bool:
    """Wait (briefly) for a rollout that has recorded its end to close."""
    handle = client.get_workflow_handle(workflow_id)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
            return True
        await asyncio.sleep(0.05)
    return False


async def _running_rollout(client: Client, workflow_id: str) -> str | None:
    try:
        memo = await (await client.get_workflow_handle(workflow_id).describe()).memo()
    except Exception:
        return None
    value = memo.get("rollout_id")
    return str(value) if value else None


async def _start_or_conflict(
    client: Client, resources: Any, inp: RolloutInput, request_id: str
) -> WorkflowHandle[Any, Any]:
    try:
        return await _start(client, resources, inp, request_id)
    except WorkflowAlreadyStartedError:
        workflow_id = names.rollout_id(inp.service_id)
        running = await _running_rollout(client, workflow_id)
        previous = None
        if running:
            async with resources.db.read() as session:
                previous = await rollouts.get(session=session, rollout_id=running)
        if previous is None or previous.finished_at is None or not await _closes(client, workflow_id):
            raise Conflict(
                f"a rollout of {inp.service_id} is running; wait for it or cancel it",
                details={"workflow_id": workflow_id, "running_rollout": running},
            ) from None
    # the previous rollout had recorded its end and was closing: its id is free now
    return await _start(client, resources, inp, request_id)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RolloutPublic,
    summary="Roll out a new config: save, apply, verify health, roll back on failure",
    responses={200: {"model": RolloutPublic, "description": "with wait: the rollout has ended"}},
)
@audit_as("config.rollout.start")
async def start_rollout(
    service_id: str,
    body: RolloutCreate,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanWrite,
    request_id: RequestIdDep,
    response: Response,
) -> RolloutPublic:
    rollout_id = uuid.uuid4().hex[:16]
    workflow_id = names.rollout_id(service_id)
    content = {k: v for k, v in body.config.items() if k != "id"}
    async with resources.db.write() as session:  # committed before any waiting: the worker writes too
        row = await services.require(session=session, service_id=service_id)
        if body.expected_version is not None and body.expected_version != row.current_version:
            raise VersionConflict(
                f"service {service_id!r} is at version {row.current_version}, not {body.expected_version}",
                details={"current_version": row.current_version, "expected_version": body.expected_version},
            )
        spec = registry.merge_and_parse({**content, "id": service_id}, row, outbound=resources.outbound)
        if spec.replicated or row.replicated:  # a rollout restarts and verifies one process
            raise ApiError(
                422,
                f"{service_id} is replicated: a rollout drives one process; save the config "
                "(PUT /config) and restart the service (its replicas restart one after the other)",
                code="validation_error",
                details=[
                    {
                        "loc": ["path", "service_id"],
                        "type": "value_error",
                        "msg": "rollouts of replicated services: not yet",
                    }
                ],
            )
        check_exec(spec_of(row), spec, may_exec=principal.can(Permission.SERVICES_EXEC.value))
        await registry.check_graph_with(session=session, specs=[spec])
        pending = row.applied_version is not None and row.applied_version != row.current_version
        if spec.content() == row.spec and not pending:  # equal to a saved, pending version: this applies it
            raise ApiError(
                422,
                "the proposed config equals the current one: nothing to roll out",
                code="config_unchanged",
                details={"current_version": row.current_version},
            )
        # the workflow gets a reference: the proposal is stored with the rollout, from this caller, and the
        # worker loads it from there (a workflow started on Temporal directly, with a config, runs nothing)
        inp = RolloutInput(
            rollout_id=rollout_id,
            service_id=service_id,
            comment=body.comment,
            actor=principal.name,
            verify_window=body.verify_window,
            expected_version=row.current_version,
        )
        stored = await rollouts.upsert(
            session=session,
            rollout_id=rollout_id,
            service_id=service_id,
            workflow_id=workflow_id,
            status=RolloutStatus.PENDING.value,
            phase=RolloutPhase.PENDING.value,
            actor=principal.name,
            verify_window=body.verify_window,
            comment=body.comment,
            message="accepted",
            previous_version=row.current_version,
            proposal=spec.content(),
            state=RolloutState(
                rollout_id=rollout_id,
                service_id=service_id,
                workflow_id=workflow_id,
                actor=principal.name,
                comment=body.comment,
                verify_window=body.verify_window,
                previous_version=row.current_version,
                message="accepted",
            ).model_dump(mode="json"),
        )
    # committed before Temporal is called (no writer slot held across it), and gone again if the workflow does
    # not start: one rollout at a time, a running `rollout/{service}` makes the start a 409
    try:
        handle = await _start_or_conflict(client, resources, inp, request_id)
    except BaseException:
        async with resources.db.write() as session:
            await rollouts.delete(session=session, rollout_id=rollout_id)
        raise
    await record_now(
        resources.db,
        principal,
        "config.rollout.start",
        service_id,
        request_id,
        details={
            "rollout_id": rollout_id,
            "workflow_id": workflow_id,
            "from_version": row.current_version,
            "verify_window": body.verify_window,
            "comment": body.comment,
        },
    )
    if resources.relay is not None:
        resources.relay.notify()
    response.headers["Location"] = _links(resources, service_id, rollout_id).self
    if body.wait:
        return await _waited(client, resources, handle, stored, body.timeout, response)
    return _public(resources, stored)


async def _waited(
    client: Client,
    resources: Any,
    handle: WorkflowHandle[Any, Any],
    stored: ConfigRolloutRow,
    timeout: float,
    response: Response,
) -> RolloutPublic:
    """``wait``: the rollout once it ended (200), or as it stands after ``timeout`` (202, with its live state)."""
    try:
        await asyncio.wait_for(handle.result(), timeout=timeout)
    except Exception:  # still running, cancelled or failed: the store and the query tell which
        pass
    async with resources.db.read() as session:
        final = await rollouts.get(session=session, rollout_id=stored.id)
    if final is not None and final.finished_at is not None:
        response.status_code = status.HTTP_200_OK
        return _public(resources, final)
    live = await _live(client, final or stored)
    return _public(resources, final or stored, state=live, live=live is not None)


@router.get("", response_model=PageOf[RolloutPublic], summary="Rollout history (from the store)")
async def list_rollouts(
    service_id: str,
    session: ReadSessionDep,
    resources: ResourcesDep,
    _: CanRead,
    status_filter: Annotated[RolloutStatus | None, Query(alias="status")] = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[RolloutPublic]:
    await services.require(session=session, service_id=service_id)
    page = await rollouts.get_all(
        session=session,
        service_id=service_id,
        limit=limit,
        cursor=cursor,
        status=status_filter.value if status_filter else None,
    )
    return PageOf[RolloutPublic](
        items=[_public(resources, r, with_state=False) for r in page.items], next_cursor=page.next_cursor
    )


async def _row(session: Any, service_id: str, rollout_id: str) -> ConfigRolloutRow:
    row = await rollouts.get(session=session, rollout_id=rollout_id)
    if row is None or row.service_id != service_id:
        raise NotFound(
            f"rollout {rollout_id!r} of service {service_id!r} not found",
            details={"service_id": service_id, "rollout_id": rollout_id},
        )
    return row


@router.get(
    "/{rollout_id}",
    response_model=RolloutPublic,
    summary="One rollout: live status and probe results while it runs, the stored result after",
)
async def get_rollout(
    service_id: str, rollout_id: str, session: ReadSessionDep, resources: ResourcesDep, _: CanRead
) -> RolloutPublic:
    row = await _row(session, service_id, rollout_id)
    live = await _live(resources.temporal, row) if row.finished_at is None else None
    if live is not None:
        return _public(resources, row, state=live, live=True)
    return _public(resources, row)


async def _cancel(
    service_id: str, rollout_id: str, client: Client, resources: Any, principal: Principal, request_id: str
) -> dict[str, str]:
    async with resources.db.read() as session:
        row = await _row(session, service_id, rollout_id)
    if row.finished_at is not None or RolloutStatus(row.status) in TERMINAL_ROLLOUT:
        raise Conflict(f"rollout {rollout_id} has already ended ({row.status})", details={"status": row.status})
    handle = client.get_workflow_handle(row.workflow_id)
    try:
        desc = await handle.describe()
        memo = await desc.memo()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"rollout {rollout_id} is not running") from None
        raise
    if desc.status != WorkflowExecutionStatus.RUNNING or memo.get("rollout_id") != rollout_id:
        raise Conflict(f"rollout {rollout_id} is not running", details={"status": row.status})
    await client.get_workflow_handle(row.workflow_id, run_id=desc.run_id).cancel()
    await record_now(
        resources.db, principal, "config.rollout.cancel", service_id, request_id, details={"rollout_id": rollout_id}
    )
    if resources.relay is not None:
        resources.relay.notify()
    return {
        "rollout_id": rollout_id,
        "status": "cancelling",
        "message": "cancel requested: the rollout rolls back to the last good version",
    }


@router.post(
    "/{rollout_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Cancel a running rollout (rolls back to the last good version)",
)
@audit_as("config.rollout.cancel")
async def cancel_rollout(
    service_id: str,
    rollout_id: str,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanWrite,
    request_id: RequestIdDep,
) -> dict[str, str]:
    return await _cancel(service_id, rollout_id, client, resources, principal, request_id)


@router.delete(
    "/{rollout_id}", status_code=status.HTTP_202_ACCEPTED, summary="Cancel a running rollout (same as POST .../cancel)"
)
@audit_as("config.rollout.cancel")
async def delete_rollout(
    service_id: str,
    rollout_id: str,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanWrite,
    request_id: RequestIdDep,
) -> dict[str, str]:
    return await _cancel(service_id, rollout_id, client, resources, principal, request_id)
