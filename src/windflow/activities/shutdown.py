"""Activities of ``SystemShutdown``: the stop plan from the registry, and the run's record and events."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from temporalio import activity

from windflow.activities._support import add_new_events
from windflow.domain.events import EventType, ShutdownUpdate, make_event
from windflow.domain.shutdown import TERMINAL_SHUTDOWN, RecordShutdownInput, ShutdownPlan, shutdown_layers
from windflow.persistence.repositories import RunSummaryRepository, ServiceRepository, spec_of

if TYPE_CHECKING:
    from windflow.persistence.db import Database

runs = RunSummaryRepository()
services = ServiceRepository()


class ShutdownActivities:
    def __init__(self, *, db: Database, on_commit: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_commit = on_commit

    @activity.defn(name="plan_shutdown")
    async def plan_shutdown(self, requested: list[str]) -> ShutdownPlan:
        """Stop layers (dependants first) for ``requested`` (all when empty) and everything depending on them."""
        async with self.db.read() as session:
            rows = await services.all(session=session)
        raw = {r.id: r for r in rows}
        unknown = sorted({name for name in requested if name not in raw})
        if unknown:
            return ShutdownPlan(unknown=unknown)
        graph = {r.id: [d for d in (r.depends_on or []) if d in raw] for r in rows}
        layers, chosen = shutdown_layers(graph, requested)
        return ShutdownPlan(layers=layers, specs=[spec_of(raw[name]) for name in sorted(chosen)])

    @activity.defn(name="record_shutdown")
    async def record_shutdown(self, req: RecordShutdownInput) -> None:
        """Upsert the run summary and publish its updates. Idempotent: event ids come from the workflow."""
        state = req.state
        async with self.db.write() as session:
            await runs.upsert(
                session=session,
                run_id=state.run_id,
                kind="shutdown",
                workflow_id=state.workflow_id,
                status=state.status.value,
                actor=state.actor,
                started_at=state.started_at,
                finished_at=state.finished_at if state.status in TERMINAL_SHUTDOWN and req.final else None,
                summary=state.model_dump(mode="json"),
            )
            await add_new_events(
                session,
                [
                    make_event(
                        EventType.SHUTDOWN_UPDATE,
                        ShutdownUpdate.model_validate(data),
                        event_id=event_id,
                        timestamp=req.timestamp,
                    )
                    for event_id, data in zip(req.event_ids, req.events, strict=True)
                ],
            )
        if self.on_commit:
            self.on_commit()
