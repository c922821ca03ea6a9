"""Temporal Schedules that windflow owns: the periodic recovery sweep (and any the API creates)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from windflow.domain.contracts import SweepInput
from windflow.domain.summaries import seconds
from windflow.temporal import names
from windflow.temporal import search_attributes as sa
from windflow.temporal.names import SWEEP_SCHEDULE_ID


def sweep_schedule(
    *, task_queue: str, every: timedelta, schedule_id: str, paused: bool = False, note: str = ""
) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            names.RECOVERY_SWEEP,
            SweepInput(actor=f"schedule:{schedule_id}"),
            id=names.sweep_id(schedule_id),
            task_queue=task_queue,
            typed_search_attributes=TypedSearchAttributes([SearchAttributePair(sa.KIND, "sweep")]),
            static_summary=f"recovery sweep, every {seconds(every.total_seconds())} (schedule {schedule_id})",
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(paused=paused, note=note or "windflow recovery sweep"),
    )


async def ensure_sweep_schedule(
    client: Client,
    *,
    task_queue: str,
    every: timedelta = timedelta(minutes=5),
    schedule_id: str = SWEEP_SCHEDULE_ID,
) -> ScheduleHandle:
    """Create the sweep schedule unless it exists (an operator's changes to it are kept)."""
    handle = client.get_schedule_handle(schedule_id)
    try:
        await handle.describe()
        return handle
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
    return await client.create_schedule(
        schedule_id, sweep_schedule(task_queue=task_queue, every=every, schedule_id=schedule_id)
    )
