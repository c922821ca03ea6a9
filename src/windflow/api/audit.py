"""Audit records written inside the route's own unit of work (who, what, target, outcome, request id)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from windflow.auth.permissions import Principal
from windflow.domain.events import AuditEvent, EventType, make_event
from windflow.persistence.repositories import AuditRepository, OutboxRepository

_audit = AuditRepository()
_outbox = OutboxRepository()


async def record(
    session: AsyncSession,
    principal: Principal | str,
    action: str,
    target: str = "",
    request_id: str | None = None,
    *,
    outcome: str = "success",
    details: dict[str, Any] | None = None,
) -> None:
    actor = principal if isinstance(principal, str) else principal.name
    await _audit.add(session=session, actor=actor, action=action, target=target, outcome=outcome,
                     request_id=request_id or None, details=details)
    event = make_event(
        EventType.AUDIT,
        AuditEvent(actor=actor, action=action, target=target, outcome=outcome, request_id=request_id or None),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )
    await _outbox.add(session=session, event=event)


async def record_failure(
    db_write: Any, principal: Principal | str, action: str, target: str, request_id: str | None, error: str
) -> None:
    """A refused or failed action, in its own transaction (the route's own one was rolled back)."""
    async with db_write() as session:
        await record(session, principal, action, target, request_id, outcome="failure", details={"error": error})
