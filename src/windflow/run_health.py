"""Runs that cannot tell their own story: an initialization whose workflow task keeps failing, or that Temporal
ended outside its code (terminated, timed out), never records why. The store would show it ``VALIDATING`` at
0 % forever. This module asks Temporal instead, for the API (an answer that says what is wrong, a cancel that
works) and for the worker's run watchdog (the stored run and an ``INITIALIZATION_UPDATE`` event).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.enums.v1 import WorkflowExecutionStatus as Status
from temporalio.api.workflowservice.v1 import (
    DescribeWorkflowExecutionRequest,
    GetWorkflowExecutionHistoryReverseRequest,
)
from temporalio.service import RPCError, RPCStatusCode

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession
    from temporalio.client import Client

    from windflow.persistence.db import Database
    from windflow.persistence.models import RunSummaryRow

log = logging.getLogger("windflow.runs")

#: a workflow task that failed this many times in a row is not a blip: the run is stuck until someone acts
STUCK_AFTER_ATTEMPTS = 3
#: how often the worker's watchdog looks at the unfinished runs of the store
WATCH_EVERY = 10.0
#: a run younger than this is left alone (its first workflow task may not have run yet)
GRACE = timedelta(seconds=5)

_CLOSED = {
    Status.WORKFLOW_EXECUTION_STATUS_COMPLETED: ("SUCCEEDED", "completed"),
    Status.WORKFLOW_EXECUTION_STATUS_FAILED: ("FAILED", "failed"),
    Status.WORKFLOW_EXECUTION_STATUS_CANCELED: ("CANCELLED", "cancelled"),
    Status.WORKFLOW_EXECUTION_STATUS_TERMINATED: ("FAILED", "terminated in Temporal"),
    Status.WORKFLOW_EXECUTION_STATUS_TIMED_OUT: ("FAILED", "timed out in Temporal"),
    Status.WORKFLOW_EXECUTION_STATUS_CONTINUED_AS_NEW: ("FAILED", "continued as new"),
}


@dataclass(frozen=True)
class RunTrouble:
    """What Temporal knows about a run that its own records do not say."""

    closed: bool  # the run has ended (else: it runs, but its workflow task keeps failing)
    status: str | None  # for a closed run: the status to record (an InitStatus value)
    message: str
    attempts: int = 0  # for a stuck run: how many times its workflow task has been tried


async def inspect_run(client: Client, workflow_id: str) -> RunTrouble | None:
    """``None`` when the run runs normally; else what is wrong with it, in words for an operator."""
    request = DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
    )
    try:
        answer = await client.workflow_service.describe_workflow_execution(request)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return RunTrouble(closed=True, status="FAILED", message="Temporal has no record of this run")
        raise
    status = answer.workflow_execution_info.status
    if status == Status.WORKFLOW_EXECUTION_STATUS_RUNNING:
        attempts = answer.pending_workflow_task.attempt if answer.HasField("pending_workflow_task") else 0
        if attempts < STUCK_AFTER_ATTEMPTS:
            return None
        cause = await _last_event_text(client, workflow_id, answer.workflow_execution_info.execution.run_id)
        return RunTrouble(
            closed=False,
            status=None,
            attempts=attempts,
            message=f"its workflow task keeps failing (attempt {attempts}): {cause or 'see its history'}",
        )
    recorded, how = _CLOSED.get(status, ("FAILED", "ended"))
    cause = await _last_event_text(client, workflow_id, answer.workflow_execution_info.execution.run_id)
    return RunTrouble(closed=True, status=recorded, message=f"{how}: {cause}" if cause else how)


async def _last_event_text(client: Client, workflow_id: str, run_id: str) -> str:
    """The reason of the run's last termination or workflow task failure, from the end of its history."""
    request = GetWorkflowExecutionHistoryReverseRequest(
        namespace=client.namespace,
        execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id),
        maximum_page_size=50,
    )
    try:
        history = await client.workflow_service.get_workflow_execution_history_reverse(request)
    except RPCError:
        return ""
    for event in history.history.events:
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
            attrs = event.workflow_execution_terminated_event_attributes
            return attrs.reason or (attrs.identity and f"by {attrs.identity}") or ""
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            return event.workflow_task_failed_event_attributes.failure.message
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED:
            return event.workflow_execution_failed_event_attributes.failure.message
        if event.event_type == HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT:
            return "its run timeout passed"
    return ""


async def record_trouble(db: Database, row_run_id: str, trouble: RunTrouble) -> bool:
    """Write ``trouble`` into the stored initialization and its event, once per distinct message. True if written.

    A closed run gets its final status and ``finished_at``; a stuck one keeps its status and gets ``error``."""
    from windflow.persistence.repositories import RunSummaryRepository

    async with db.write() as session:
        row = await RunSummaryRepository().get(session=session, run_id=row_run_id)
        if row is None or row.finished_at is not None:
            return False
        if (row.summary or {}).get("error") == trouble.message and not trouble.closed:
            return False  # told already
        await mark_run(session, row, message=trouble.message, status=trouble.status if trouble.closed else None)
    return True


async def mark_run(session: AsyncSession, row: RunSummaryRow, *, message: str, status: str | None) -> None:
    """In the caller's transaction: the stored run gets ``message`` as its error (and, with ``status``, ends
    with it), and an ``INITIALIZATION_UPDATE`` says so."""
    import uuid

    from windflow.domain.events import EventType, InitializationUpdate, make_event
    from windflow.persistence.repositories import OutboxRepository

    summary = dict(row.summary or {})
    summary["error"] = message
    summary["message"] = message
    if status is not None:
        row.status = status
        summary["status"] = status
        row.finished_at = datetime.now(UTC)
        summary["finished_at"] = row.finished_at.isoformat()
    row.summary = summary
    data = InitializationUpdate(
        run_id=row.run_id,
        workflow_id=row.workflow_id,
        status=row.status,
        progress=int(summary.get("progress", 0) or 0),
        message=message,
    )
    await OutboxRepository().add(
        session=session,
        event=make_event(
            EventType.INITIALIZATION_UPDATE, data, event_id=str(uuid.uuid4()), timestamp=datetime.now(UTC)
        ),
    )


async def check_runs(client: Client, db: Database, *, on_commit: Callable[[], None] | None = None) -> int:
    """One look at every unfinished initialization of the store; returns how many were reported."""
    from windflow.persistence.repositories import RunSummaryRepository

    async with db.read() as session:
        rows = await RunSummaryRepository().running(session=session, kind="initialization")
    reported = 0
    now = datetime.now(UTC)
    for row in rows:
        started = row.started_at if row.started_at.tzinfo else row.started_at.replace(tzinfo=UTC)
        if now - started < GRACE:
            continue
        trouble = await inspect_run(client, row.workflow_id)
        if trouble is None:
            continue
        if trouble.closed and trouble.status == "SUCCEEDED":
            continue  # its own final record is on its way (written just before it closed)
        if await record_trouble(db, row.run_id, trouble):
            reported += 1
            log.warning("initialization %s: %s", row.run_id, trouble.message)
    if reported and on_commit is not None:
        on_commit()
    return reported


async def watch_runs(
    client: Client, db: Database, *, on_commit: Callable[[], None] | None = None, every: float = WATCH_EVERY
) -> None:
    """The worker's run watchdog: ``check_runs`` every ``every`` seconds until cancelled."""
    while True:
        try:
            await check_runs(client, db, on_commit=on_commit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # Temporal or the store away: look again next time
            log.debug("run watchdog: %s", exc)
        await asyncio.sleep(every)
