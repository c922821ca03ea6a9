"""Run summaries and run events: written by workflows through these activities (workflows do no I/O)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from temporalio import activity

from windflow.activities._support import add_new_events
from windflow.domain.contracts import TERMINAL_INIT, AlertsIgnoredInput, RecordInitInput
from windflow.domain.events import EventType, InitializationUpdate, make_event
from windflow.metrics import INITIALIZATION_DURATION
from windflow.persistence.alerts_in_repositories import AlertLogRepository
from windflow.persistence.repositories import RunSummaryRepository

if TYPE_CHECKING:
    from windflow.persistence.db import Database

runs = RunSummaryRepository()


alert_log = AlertLogRepository()


class RecordActivities:
    def __init__(self, *, db: Database, on_commit: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_commit = on_commit

    @activity.defn(name="note_alerts_ignored")
    async def note_alerts_ignored(self, req: AlertsIgnoredInput) -> int:
        """Mark the alerts that started or joined a recovery run as ignored (the service was healthy).

        The hook writes its alert log just after starting the run, so a quick recovery may get here first: wait
        for the rows a little (heartbeating). Idempotent: a second call finds nothing left to mark."""
        deadline = time.monotonic() + req.wait
        while True:
            async with self.db.write() as session:
                marked = await alert_log.mark_ignored(
                    session=session, workflow_id=req.workflow_id, run_id=req.run_id, reason=req.reason
                )
            if marked or time.monotonic() >= deadline:
                return marked
            activity.heartbeat()
            await asyncio.sleep(0.2)

    @activity.defn(name="record_initialization")
    async def record_initialization(self, req: RecordInitInput) -> None:
        """Upsert the run summary and publish its updates. Idempotent: event ids come from the workflow."""
        await self._record(req, merge=False)

    @activity.defn(name="record_initialization_changes")
    async def record_initialization_changes(self, req: RecordInitInput) -> None:
        """``record_initialization`` of a state that holds only the components changed since the previous record
        (and no plan): they are merged into the stored run. What the workflow sends stays proportional to what
        changed, not to the system's size (a run of thousands of components would otherwise fill its history
        with copies of the whole state). Idempotent: merging the same changes twice gives the same run."""
        await self._record(req, merge=True)

    async def _record(self, req: RecordInitInput, *, merge: bool) -> None:
        state = req.state
        summary = state.model_dump(mode="json")
        async with self.db.write() as session:
            if merge:
                stored = await runs.get(session=session, run_id=state.run_id)
                before = (stored.summary or {}) if stored is not None else {}
                summary["components"] = {**(before.get("components") or {}), **summary["components"]}
                summary["plan"] = summary["plan"] or before.get("plan") or []
            await runs.upsert(
                session=session,
                run_id=state.run_id,
                kind="initialization",
                workflow_id=state.workflow_id,
                status=state.status.value,
                actor=state.actor,
                started_at=state.started_at,
                finished_at=state.finished_at if state.status in TERMINAL_INIT and req.final else None,
                summary=summary,
            )
            await add_new_events(
                session,
                [
                    make_event(
                        EventType.INITIALIZATION_UPDATE,
                        InitializationUpdate.model_validate(data),
                        event_id=event_id,
                        timestamp=req.timestamp,
                    )
                    for event_id, data in zip(req.event_ids, req.events, strict=True)
                ],
            )
        if self.on_commit:
            self.on_commit()
        if req.final and state.status in TERMINAL_INIT and state.finished_at and state.started_at:
            INITIALIZATION_DURATION.labels(status=state.status.value).observe(
                max(0.0, (state.finished_at - state.started_at).total_seconds())
            )
