"""The audit trail, newest first (``audit:read``)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query

from windflow.api.deps import ReadSessionDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import AuditPublic, PageOf
from windflow.api.security import require
from windflow.auth.permissions import Permission, Principal
from windflow.persistence.repositories import AuditRepository

router = APIRouter(prefix="/audit", tags=["audit"], responses=ERROR_RESPONSES)
audit = AuditRepository()


def _aware(value: datetime | None, name: str) -> datetime | None:
    """The instant in UTC; 422 for one that has no UTC equivalent (year 9999 at -14:00 is past datetime.max)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(
            422,
            f"{name}: instant out of range",
            code="validation_error",
            details=[{"loc": ["query", name], "msg": "out of range in UTC"}],
        ) from None


@router.get("", response_model=PageOf[AuditPublic], summary="Audit records (filter, then page with `cursor`)")
async def list_audit(
    session: ReadSessionDep,
    _: Annotated[Principal, Depends(require(Permission.AUDIT_READ))],
    actor: str | None = Query(None, max_length=128),
    action: str | None = Query(None, max_length=64, description="e.g. auth.login, service.create"),
    target: str | None = Query(None, max_length=256),
    outcome: str | None = Query(None, pattern="^(success|failure)$"),
    since: datetime | None = Query(None, description="From this instant (inclusive); no zone means UTC"),
    until: datetime | None = Query(None, description="Before this instant (exclusive); no zone means UTC"),
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[AuditPublic]:
    page = await audit.get_all(
        session=session,
        limit=limit,
        cursor=cursor,
        actor=actor,
        action=action,
        target=target,
        outcome=outcome,
        since=_aware(since, "since"),
        until=_aware(until, "until"),
    )
    return PageOf[AuditPublic](items=[AuditPublic.of(r) for r in page.items], next_cursor=page.next_cursor)
