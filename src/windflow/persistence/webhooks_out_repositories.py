"""Outgoing webhooks: subscriptions and their delivery log (async, keyword-only session, never commit).

Claiming is safe with any number of dispatchers on one database: :meth:`WebhookDeliveryRepository.claim_due`
takes a due delivery with a compare-and-set on ``attempts`` (the row's version), so exactly one dispatcher
wins each attempt, on SQLite (one writer at a time) and PostgreSQL (READ COMMITTED re-checks the condition on
the row it waited for) alike. The claim also pushes ``next_attempt_at`` out by a lease: a dispatcher that dies
mid-send leaves the delivery due again once the lease has passed.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.domain.errors import NotFound
from windflow.persistence.db import affected_rows
from windflow.persistence.models import utcnow
from windflow.persistence.repositories import Page, _is_postgres, decode_cursor, encode_cursor
from windflow.persistence.webhooks_out_models import WebhookDeliveryRow, WebhookSubscriptionRow

PENDING = "pending"
DELIVERED = "delivered"
FAILED = "failed"
STATES = (PENDING, DELIVERED, FAILED)


def new_delivery_id() -> str:
    return f"whd_{uuid.uuid4().hex}"


class WebhookSubscriptionRepository:
    async def add(
        self,
        *,
        session: AsyncSession,
        subscription_id: str,
        url: str,
        event_types: Sequence[str],
        secret: str,
        enabled: bool,
        description: str,
        created_by: str,
    ) -> WebhookSubscriptionRow:
        now = utcnow()
        row = WebhookSubscriptionRow(
            id=subscription_id,
            url=url,
            event_types=list(event_types),
            secret=secret,
            enabled=enabled,
            description=description,
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        session.add(row)
        await session.flush()
        return row

    async def get(self, *, session: AsyncSession, subscription_id: str) -> WebhookSubscriptionRow | None:
        return await session.get(WebhookSubscriptionRow, subscription_id)

    async def require(self, *, session: AsyncSession, subscription_id: str) -> WebhookSubscriptionRow:
        row = await self.get(session=session, subscription_id=subscription_id)
        if row is None:
            raise NotFound(f"webhook {subscription_id!r} not found", details={"webhook_id": subscription_id})
        return row

    async def get_all(self, *, session: AsyncSession, enabled: bool | None = None) -> list[WebhookSubscriptionRow]:
        stmt = select(WebhookSubscriptionRow).order_by(WebhookSubscriptionRow.created_at, WebhookSubscriptionRow.id)
        if enabled is not None:
            stmt = stmt.where(WebhookSubscriptionRow.enabled.is_(enabled))
        return list((await session.execute(stmt)).scalars())

    async def matching(self, *, session: AsyncSession, event_type: str) -> list[WebhookSubscriptionRow]:
        """Enabled subscriptions that want ``event_type`` (an empty type list means every type)."""
        return [
            row
            for row in await self.get_all(session=session, enabled=True)
            if not row.event_types or event_type in row.event_types
        ]

    async def update(
        self, *, session: AsyncSession, subscription_id: str, values: dict[str, Any]
    ) -> WebhookSubscriptionRow:
        row = await self.require(session=session, subscription_id=subscription_id)
        for key, value in values.items():
            setattr(row, key, value)
        row.updated_at = utcnow()
        await session.flush()
        return row

    async def set_secret(self, *, session: AsyncSession, subscription_id: str, secret: str) -> WebhookSubscriptionRow:
        row = await self.require(session=session, subscription_id=subscription_id)
        row.secret = secret
        row.secret_rotated_at = row.updated_at = utcnow()
        await session.flush()
        return row

    async def delete(self, *, session: AsyncSession, subscription_id: str) -> None:
        await self.require(session=session, subscription_id=subscription_id)
        # deliveries go with it (ON DELETE CASCADE; explicit too, for a store without FK enforcement)
        await session.execute(delete(WebhookDeliveryRow).where(WebhookDeliveryRow.subscription_id == subscription_id))
        await session.execute(delete(WebhookSubscriptionRow).where(WebhookSubscriptionRow.id == subscription_id))


@dataclass(frozen=True)
class Claim:
    """One attempt a dispatcher won: what to send, where, signed with which secret."""

    id: int
    delivery_id: str
    subscription_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int  # including this one
    url: str
    secret: str


class WebhookDeliveryRepository:
    async def enqueue(
        self,
        *,
        session: AsyncSession,
        subscription_ids: Sequence[str],
        event_id: str,
        event_type: str,
        payload: dict[str, Any],
    ) -> int:
        """Queue one event for each subscription, once: an event seen again (a consumer's redelivery, another
        dispatcher) adds nothing. Returns how many deliveries were added."""
        if not subscription_ids:
            return 0
        now = utcnow()
        rows = [
            {
                "delivery_id": new_delivery_id(),
                "subscription_id": sid,
                "dedup_key": f"{sid}:{event_id}",
                "event_id": event_id,
                "event_type": event_type,
                "payload": payload,
                "state": PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for sid in subscription_ids
        ]
        insert = pg_insert if _is_postgres(session) else sqlite_insert
        stmt = (
            insert(WebhookDeliveryRow)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["dedup_key"])
            .returning(WebhookDeliveryRow.id)
        )
        return len((await session.execute(stmt)).all())

    async def add(
        self,
        *,
        session: AsyncSession,
        subscription_id: str,
        event_id: str,
        event_type: str,
        payload: dict[str, Any],
        state: str = PENDING,
        attempts: int = 0,
        next_attempt_at: datetime | None = None,
        redelivery_of: str | None = None,
        **outcome: Any,
    ) -> WebhookDeliveryRow:
        row = WebhookDeliveryRow(
            delivery_id=new_delivery_id(),
            subscription_id=subscription_id,
            dedup_key=None,
            event_id=event_id,
            event_type=event_type,
            payload=payload,
            state=state,
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            redelivery_of=redelivery_of,
            created_at=utcnow(),
            **outcome,
        )
        session.add(row)
        await session.flush()
        return row

    async def require(self, *, session: AsyncSession, subscription_id: str, delivery_id: str) -> WebhookDeliveryRow:
        stmt = select(WebhookDeliveryRow).where(
            WebhookDeliveryRow.delivery_id == delivery_id, WebhookDeliveryRow.subscription_id == subscription_id
        )
        row = (await session.execute(stmt)).scalar_one_or_none()
        if row is None:
            raise NotFound(
                f"delivery {delivery_id!r} of webhook {subscription_id!r} not found",
                details={"webhook_id": subscription_id, "delivery_id": delivery_id},
            )
        return row

    async def page(
        self,
        *,
        session: AsyncSession,
        subscription_id: str,
        limit: int = 50,
        cursor: str | None = None,
        state: str | None = None,
        event_id: str | None = None,
    ) -> Page[WebhookDeliveryRow]:
        """Newest first."""
        before = decode_cursor(cursor).get("before")
        stmt = (
            select(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.subscription_id == subscription_id)
            .order_by(WebhookDeliveryRow.id.desc())
            .limit(limit + 1)
        )
        if isinstance(before, int):
            stmt = stmt.where(WebhookDeliveryRow.id < before)
        if state is not None:
            stmt = stmt.where(WebhookDeliveryRow.state == state)
        if event_id is not None:
            stmt = stmt.where(WebhookDeliveryRow.event_id == event_id)
        rows = list((await session.execute(stmt)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"before": rows[-1].id}) if more and rows else None)

    async def claim_due(
        self, *, session: AsyncSession, limit: int, lease: timedelta, now: datetime | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` due deliveries (oldest due first) for one attempt each. Deliveries whose
        subscription was disabled meanwhile are closed as failed instead of sent."""
        if limit <= 0:
            return []
        now = now or utcnow()
        stmt = (
            select(WebhookDeliveryRow.id, WebhookDeliveryRow.attempts, WebhookSubscriptionRow.enabled)
            .join(WebhookSubscriptionRow, WebhookSubscriptionRow.id == WebhookDeliveryRow.subscription_id)
            .where(WebhookDeliveryRow.state == PENDING, WebhookDeliveryRow.next_attempt_at <= now)
            .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            .limit(limit)
        )
        won: list[int] = []
        for delivery_pk, attempts, enabled in (await session.execute(stmt)).all():
            values: dict[str, Any] = (
                {"attempts": attempts + 1, "next_attempt_at": now + lease, "last_attempt_at": now}
                if enabled
                else {"state": FAILED, "next_attempt_at": None, "last_error": "not sent: the webhook is disabled"}
            )
            result = await session.execute(
                update(WebhookDeliveryRow)
                .where(
                    WebhookDeliveryRow.id == delivery_pk,
                    WebhookDeliveryRow.attempts == attempts,
                    WebhookDeliveryRow.state == PENDING,
                )
                .values(**values)
            )
            if enabled and affected_rows(result) == 1:
                won.append(delivery_pk)
        if not won:
            return []
        rows = (
            await session.execute(
                select(WebhookDeliveryRow, WebhookSubscriptionRow.url, WebhookSubscriptionRow.secret)
                .join(WebhookSubscriptionRow, WebhookSubscriptionRow.id == WebhookDeliveryRow.subscription_id)
                .where(WebhookDeliveryRow.id.in_(won))
                .order_by(WebhookDeliveryRow.next_attempt_at, WebhookDeliveryRow.id)
            )
        ).all()
        return [
            Claim(
                id=d.id,
                delivery_id=d.delivery_id,
                subscription_id=d.subscription_id,
                event_type=d.event_type,
                payload=d.payload,
                attempts=d.attempts,
                url=url,
                secret=secret,
            )
            for d, url, secret in rows
        ]

    async def record(
        self,
        *,
        session: AsyncSession,
        claim: Claim,
        state: str,
        next_attempt_at: datetime | None,
        status_code: int | None,
        error: str | None,
        duration_ms: float | None,
    ) -> bool:
        """Store the outcome of a claimed attempt. False when the claim was lost meanwhile (its lease ran out and
        another dispatcher took the delivery): that dispatcher's outcome counts, not this one's."""
        now = utcnow()
        result = await session.execute(
            update(WebhookDeliveryRow)
            .where(WebhookDeliveryRow.id == claim.id, WebhookDeliveryRow.attempts == claim.attempts)
            .values(
                state=state,
                next_attempt_at=next_attempt_at,
                last_status_code=status_code,
                last_error=error,
                last_duration_ms=duration_ms,
                delivered_at=now if state == DELIVERED else None,
            )
        )
        return affected_rows(result) == 1

    async def next_due(self, *, session: AsyncSession) -> datetime | None:
        stmt = select(func.min(WebhookDeliveryRow.next_attempt_at)).where(WebhookDeliveryRow.state == PENDING)
        return (await session.execute(stmt)).scalar_one_or_none()  # min() keeps the column's type (aware UTC)

    async def purge(self, *, session: AsyncSession, older_than: timedelta) -> int:
        """Forget finished deliveries created more than ``older_than`` ago."""
        result = await session.execute(
            delete(WebhookDeliveryRow).where(
                WebhookDeliveryRow.state != PENDING, WebhookDeliveryRow.created_at < utcnow() - older_than
            )
        )
        return affected_rows(result)
