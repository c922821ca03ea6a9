"""Shared by activity classes: error classification and writing state + event in one transaction."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel
from sqlalchemy import select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from windflow.domain.errors import WindflowError
from windflow.domain.events import Event, EventType, ServiceStatusUpdate, make_event
from windflow.domain.status import NO_PROCESS, replica_set_status, service_status
from windflow.persistence.models import OutboxRow
from windflow.persistence.repositories import OutboxRepository, ServiceRepository, version_of_content

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from windflow.persistence.db import Database

outbox = OutboxRepository()
T = TypeVar("T")
services = ServiceRepository()

#: detail keys that describe one state only: dropped when the state changes (unless given again)
STATE_FACTS = ("pid", "message", "healthy_since")


async def heartbeating(awaitable: Awaitable[T], what: str, every: float = 1.0) -> T:
    """Await ``awaitable`` while heartbeating every ``every`` seconds, so a long wait (a stop grace) is not taken
    for a dead worker; cancelling the activity cancels the work."""
    task = asyncio.ensure_future(awaitable)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every)
            if done:
                return task.result()
            activity.heartbeat(what)
    except BaseException:
        task.cancel()
        raise


def to_application_error(exc: WindflowError) -> ApplicationError:
    """Classify once: the workflow's retry policy lists the non-retryable types by name."""
    return ApplicationError(exc.message, exc.details, type=type(exc).__name__, non_retryable=not exc.retryable)


def new_event(event_type: EventType, data: BaseModel) -> Any:
    return make_event(event_type, data, event_id=str(uuid.uuid4()), timestamp=datetime.now(UTC))


async def add_new_events(session: AsyncSession, events: Sequence[Event]) -> None:
    """Add, in one statement, the events whose ids the outbox does not hold yet: the record activities get
    their event ids from the workflow, so a retried record publishes each event once."""
    if not events:
        return
    ids = [e.event_id for e in events]
    known = set((await session.execute(select(OutboxRow.event_id).where(OutboxRow.event_id.in_(ids)))).scalars())
    await outbox.add_many(session=session, events=[e for e in events if e.event_id not in known])


class StateWriter:
    """Records a service's state and publishes the change (outbox), in one transaction."""

    def __init__(self, db: Database, on_commit: Callable[[], None] | None = None) -> None:
        self.db = db
        self.on_commit = on_commit

    async def set_state(self, service_id: str, state: str, **fields: Any) -> str | None:
        """Record the state and publish the change in its own transaction (fields: see ``set_state_in``)."""
        previous = await self.db.write_batched(lambda session: self.set_state_in(session, service_id, state, **fields))
        if self.on_commit:
            self.on_commit()
        return previous

    async def set_state_in(
        self,
        session: AsyncSession,
        service_id: str,
        state: str,
        *,
        source: str,
        message: str = "",
        pid: int | None = None,
        detail: dict[str, Any] | None = None,
        merge: bool = True,
        desired: str | None = None,
        actor: str | None = None,
        applied_content: dict[str, Any] | None = None,
        restarted: bool = False,
        process_gone: bool = False,
        status: dict[str, Any] | None = None,
    ) -> str | None:
        """Record ``state`` (with message, pid and detail merged into the row's detail unless ``merge=False``)
        and, when it changed or carries a message, a SERVICE_STATUS_UPDATE event, in the caller's transaction
        (the caller commits and calls ``on_commit``). Returns the previous state, None for an unknown service.

        ``desired`` records an explicit act (running | stopped, by ``actor`` or ``source``); ``applied_content``
        the config that was just started (its version becomes the applied one); ``restarted`` counts a restart.
        Facts of the previous state (pid, message, healthy since) do not survive a change of state, and the pid
        is cleared when the process is gone (stopped, gave up, or ``process_gone``). ``status`` adds fields of
        :class:`ServiceStatusUpdate` to the event (reason, recovered, recovery_seconds, attempts).
        """
        row = await services.get(session=session, service_id=service_id)
        if row is None:
            return None
        if desired == "stopped" or (desired is not None and source == "initialization"):
            # a stop (nothing restarts a stopped service anyway) or an initialization supersedes an operator path's
            # hold; a user's restart keeps its own hold until its run releases it (after the wait for health)
            row.held_by = None
            row.held_until = None
        if desired is not None and desired != row.desired:
            row.desired = desired
            row.desired_by = actor or source
            row.desired_at = datetime.now(UTC)
            row.desired_reason = message or f"{desired} ({source})"
        if row.replicated:  # a replicated service: its status is its replicas' (see replica_set_status)
            state, replicas_detail = await self._replica_set(session, row)
            detail = {**(detail or {}), **replicas_detail}
        else:
            state = service_status(desired=row.desired, observed=state)  # the one status function
        base = dict(row.state_detail or {}) if merge else {}
        if row.state != state:
            for key in STATE_FACTS:
                base.pop(key, None)
        new_detail = {**base, **(detail or {})}
        if pid is not None:
            row.pid = pid
        if state in NO_PROCESS or process_gone:
            row.pid = None
        if row.pid is not None:
            new_detail["pid"] = row.pid
        else:
            new_detail.pop("pid", None)
        if message:
            new_detail["message"] = message
        new_detail["source"] = source
        if restarted:
            row.restarts_total = (row.restarts_total or 0) + 1
        if applied_content is not None:
            version = await version_of_content(session=session, service_id=service_id, content=applied_content)
            if version is not None:
                row.applied_version = version
        previous = await services.set_state(session=session, service_id=service_id, state=state, detail=new_detail)
        if previous != state or message:
            event = new_event(
                EventType.SERVICE_STATUS_UPDATE,
                ServiceStatusUpdate(
                    service_id=service_id,
                    state=state,
                    previous_state=previous,
                    pid=row.pid,
                    message=message,
                    source=source,
                    since=row.state_changed_at,
                    **(status or {}),
                ),
            )
            await outbox.add(session=session, event=event)
        if row.replica_of is not None:  # a replica moved: its service's status follows
            parent = await services.get(session=session, service_id=row.replica_of)
            if parent is not None:
                await self.refresh_replica_set(session, parent, source=source)
        return previous

    async def _replica_set(self, session: AsyncSession, parent: Any) -> tuple[str, dict[str, Any]]:
        """A replicated service's status from its replicas (those a scale-down is removing do not count)."""
        wanted = int((parent.spec or {}).get("replicas") or 0)
        min_ready = (parent.spec or {}).get("min_ready")
        rows = [
            r
            for r in await services.replicas_of(session=session, service_id=parent.id)
            if (r.replica_index or 0) < wanted
        ]
        state, ready = replica_set_status(
            desired=parent.desired,
            replicas=[r.state for r in rows],
            min_ready=wanted if min_ready is None else int(min_ready),
        )
        return state, {"ready": ready, "replicas": wanted, "message": f"{ready}/{wanted} healthy"}

    async def refresh_replica_set(self, session: AsyncSession, parent: Any, *, source: str) -> None:
        state, detail = await self._replica_set(session, parent)
        if parent.state == state and all((parent.state_detail or {}).get(k) == v for k, v in detail.items()):
            return
        await self.set_state_in(session, parent.id, state, source=source, message=detail["message"], detail=detail)

    async def publish(self, *events: Any) -> None:
        async with self.db.write() as session:
            for event in events:
                await outbox.add(session=session, event=event)
        if self.on_commit:
            self.on_commit()
