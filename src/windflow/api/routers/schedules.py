"""Recovery-sweep schedules, backed by Temporal Schedules (visible in the Temporal Web UI)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, Field
from temporalio.client import Client, ScheduleUpdate, ScheduleUpdateInput
from temporalio.service import RPCError, RPCStatusCode

from windflow.api.audit import record
from windflow.api.bodies import RequestBody
from windflow.api.deps import RequestIdDep, ResourcesDep, TemporalDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.domain.errors import Conflict, NotFound
from windflow.schedules import SWEEP_SCHEDULE_ID, sweep_schedule

router = APIRouter(prefix="/schedules", tags=["schedules"], responses=ERROR_RESPONSES)
CanRead = Annotated[Principal, Depends(require(Permission.SERVICES_READ))]
CanManage = Annotated[Principal, Depends(require(Permission.SCHEDULES_MANAGE))]
PREFIX = "windflow-"


class ScheduleCreate(RequestBody):
    id: str = Field(SWEEP_SCHEDULE_ID, pattern=r"^windflow-[a-z0-9-]{1,60}$")
    every_seconds: float = Field(300.0, ge=10, le=7 * 86400, description="Interval between sweeps")
    paused: bool = False
    note: str = Field("", max_length=500)


class SchedulePatch(RequestBody):
    every_seconds: float | None = Field(None, ge=10, le=7 * 86400)
    paused: bool | None = None
    note: str | None = Field(None, max_length=500)
    trigger: bool = Field(False, description="Run one sweep now")


class SchedulePublic(BaseModel):
    id: str
    every_seconds: float | None
    paused: bool
    note: str
    next_runs: list[str]
    recent_runs: list[str]
    workflow_type: str


async def _describe(client: Client, schedule_id: str) -> SchedulePublic:
    handle = client.get_schedule_handle(schedule_id)
    try:
        desc = await handle.describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise NotFound(f"schedule {schedule_id!r} not found") from None
        raise
    spec = desc.schedule.spec
    every = spec.intervals[0].every.total_seconds() if spec.intervals else None
    action = desc.schedule.action
    return SchedulePublic(
        id=schedule_id,
        every_seconds=every,
        paused=desc.schedule.state.paused,
        note=desc.schedule.state.note or "",
        next_runs=[t.isoformat() for t in desc.info.next_action_times[:5]],
        recent_runs=[a.started_at.isoformat() for a in desc.info.recent_actions[-5:]],
        workflow_type=str(getattr(action, "workflow", "")),
    )


@router.get("", response_model=list[SchedulePublic], summary="List windflow's schedules")
async def list_schedules(client: TemporalDep, _: CanRead) -> list[SchedulePublic]:
    out = []
    async for entry in await client.list_schedules():
        if entry.id.startswith(PREFIX):
            out.append(await _describe(client, entry.id))
    return sorted(out, key=lambda s: s.id)


@router.get("/{schedule_id}", response_model=SchedulePublic, summary="One schedule")
async def get_schedule(schedule_id: str, client: TemporalDep, _: CanRead) -> SchedulePublic:
    return await _describe(client, schedule_id)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=SchedulePublic, summary="Create a sweep schedule")
async def create_schedule(
    body: ScheduleCreate, client: TemporalDep, resources: ResourcesDep, principal: CanManage, request_id: RequestIdDep
) -> SchedulePublic:
    try:
        await client.create_schedule(
            body.id,
            sweep_schedule(
                task_queue=resources.settings.task_queue,
                every=timedelta(seconds=body.every_seconds),
                schedule_id=body.id,
                paused=body.paused,
                note=body.note,
            ),
        )
    except RPCError as exc:
        if exc.status == RPCStatusCode.ALREADY_EXISTS:
            raise Conflict(f"schedule {body.id!r} exists") from None
        raise
    except Exception as exc:
        if "already" in str(exc).lower():
            raise Conflict(f"schedule {body.id!r} exists") from None
        raise
    async with resources.db.write() as session:
        await record(session, principal, "schedule.create", body.id, request_id, details=body.model_dump(mode="json"))
    return await _describe(client, body.id)


@router.patch("/{schedule_id}", response_model=SchedulePublic, summary="Change, pause/unpause or trigger")
async def patch_schedule(
    schedule_id: str,
    body: SchedulePatch,
    client: TemporalDep,
    resources: ResourcesDep,
    principal: CanManage,
    request_id: RequestIdDep,
) -> SchedulePublic:
    if not any(v is not None for v in (body.every_seconds, body.paused, body.note)) and not body.trigger:
        raise ApiError(422, "nothing to change: give every_seconds, paused, note or trigger", code="validation_error")
    current = await _describe(client, schedule_id)
    handle = client.get_schedule_handle(schedule_id)
    if body.every_seconds is not None or body.note is not None or body.paused is not None:
        every = body.every_seconds if body.every_seconds is not None else (current.every_seconds or 300.0)
        paused = body.paused if body.paused is not None else current.paused
        note = body.note if body.note is not None else current.note
        fresh = sweep_schedule(
            task_queue=resources.settings.task_queue,
            every=timedelta(seconds=every),
            schedule_id=schedule_id,
            paused=paused,
            note=note,
        )

        def _update(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=fresh)

        await handle.update(_update)
    if body.trigger:
        await handle.trigger()
    async with resources.db.write() as session:
        await record(
            session,
            principal,
            "schedule.update",
            schedule_id,
            request_id,
            details=body.model_dump(mode="json", exclude_none=True),
        )
    return await _describe(client, schedule_id)


@router.delete("/{schedule_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a schedule")
async def delete_schedule(
    schedule_id: str, client: TemporalDep, resources: ResourcesDep, principal: CanManage, request_id: RequestIdDep
) -> Response:
    await _describe(client, schedule_id)
    await client.get_schedule_handle(schedule_id).delete()
    async with resources.db.write() as session:
        await record(session, principal, "schedule.delete", schedule_id, request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
