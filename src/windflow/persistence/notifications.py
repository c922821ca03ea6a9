"""Notification channels (from the system file) and the delivery log.

Repositories: async, keyword-only ``session``, never commit (the unit of work owns the transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import ValidationError
from sqlalchemy import case, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.domain.notifications import ChannelConfig, DeliveryResult, Notification, restore_channel
from windflow.domain.redaction import REDACTED, contains_placeholder
from windflow.domain.system import Problem, SystemFile, problems_from
from windflow.persistence.models import NotificationChannelRow, NotificationLogRow, utcnow
from windflow.persistence.repositories import MAX_LIMIT, Page, decode_cursor, encode_cursor


class NotificationChannelRepository:
    async def get_all(self, *, session: AsyncSession) -> list[ChannelConfig]:
        stmt = select(NotificationChannelRow).order_by(NotificationChannelRow.position, NotificationChannelRow.name)
        return [ChannelConfig.model_validate(r.config) for r in (await session.execute(stmt)).scalars()]

    async def get(self, *, session: AsyncSession, name: str) -> ChannelConfig | None:
        row = await session.get(NotificationChannelRow, name)
        return ChannelConfig.model_validate(row.config) if row is not None else None

    async def put(self, *, session: AsyncSession, channel: ChannelConfig) -> bool:
        """Store ``channel`` (a new one goes last); True when it was new."""
        row = await session.get(NotificationChannelRow, channel.name)
        doc = channel.model_dump(mode="json")
        if row is None:
            last = (await session.execute(select(func.max(NotificationChannelRow.position)))).scalar()
            session.add(
                NotificationChannelRow(
                    name=channel.name,
                    position=(last if last is not None else -1) + 1,
                    kind=channel.kind.value,
                    config=doc,
                    created_at=utcnow(),
                )
            )
        else:
            row.kind, row.config = channel.kind.value, doc
        await session.flush()
        return row is None

    async def remove(self, *, session: AsyncSession, name: str) -> bool:
        result = await session.execute(delete(NotificationChannelRow).where(NotificationChannelRow.name == name))
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def replace(self, *, session: AsyncSession, channels: Sequence[ChannelConfig]) -> None:
        """Make the stored set exactly ``channels`` (in this order)."""
        await session.execute(delete(NotificationChannelRow))
        now = utcnow()
        session.add_all(
            NotificationChannelRow(
                name=c.name, position=i, kind=c.kind.value, config=c.model_dump(mode="json"), created_at=now
            )
            for i, c in enumerate(channels)
        )
        await session.flush()

    async def plan(
        self, *, session: AsyncSession, system: SystemFile
    ) -> tuple[list[ChannelConfig] | None, list[Problem]]:
        """The channel set an apply of ``system`` stores (``None``: leave the stored set alone), or problems.

        A file with a ``notifications`` key replaces the stored set (``channels: []`` clears it); a file without
        one leaves it alone (``prune`` is about services only). A redacted export sent back keeps the stored
        secrets of same-named channels."""
        if system.notifications is None:
            return None, []
        old = {c.name: c.model_dump(mode="json") for c in await self.get_all(session=session)}
        problems: list[Problem] = []
        out: list[ChannelConfig] = []
        for i, channel in enumerate(system.notifications.channels):
            doc, moved = restore_channel(channel.model_dump(mode="json"), old.get(channel.name))
            if moved:
                problems.extend(
                    Problem(loc=["notifications", "channels", i, *loc], msg=msg, type="secret_destination")
                    for loc, msg in moved
                )
                continue
            try:
                merged = ChannelConfig.model_validate(doc)
            except ValidationError as exc:
                problems.extend(problems_from(exc, ["notifications", "channels", i]))
                continue
            if contains_placeholder(merged.model_dump(mode="json")):
                problems.append(
                    Problem(
                        loc=["notifications", "channels", i],
                        msg=f"{REDACTED!r} is a placeholder for a secret: give the real value",
                    )
                )
                continue
            out.append(merged)
        return out, problems


class NotificationLogRepository:
    async def add(
        self, *, session: AsyncSession, notification: Notification, result: DeliveryResult, at: datetime | None = None
    ) -> NotificationLogRow:
        row = NotificationLogRow(
            at=at or utcnow(),
            notification_id=notification.id,
            channel=result.channel,
            kind=notification.kind.value,
            service_id=notification.service_id[:64],
            workflow_id=notification.workflow_id,
            delivered=result.delivered,
            status_code=result.status_code,
            error=(result.error or None) and result.error[:2000],
        )
        session.add(row)
        await session.flush()
        return row

    async def sends(self, *, session: AsyncSession, notification_id: str) -> dict[str, tuple[int, bool]]:
        """Per channel: how many sends were logged for this notification and whether one was delivered."""
        stmt = (
            select(NotificationLogRow.channel, func.count(), func.sum(case((NotificationLogRow.delivered, 1), else_=0)))
            .where(NotificationLogRow.notification_id == notification_id)
            .group_by(NotificationLogRow.channel)
        )
        return {ch: (int(n), bool(d)) for ch, n, d in (await session.execute(stmt)).all()}

    async def get_all(
        self,
        *,
        session: AsyncSession,
        limit: int = 50,
        cursor: str | None = None,
        service_id: str | None = None,
        channel: str | None = None,
        delivered: bool | None = None,
    ) -> Page[NotificationLogRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        before = decode_cursor(cursor).get("before")
        stmt = select(NotificationLogRow)
        if service_id:
            stmt = stmt.where(NotificationLogRow.service_id == service_id)
        if channel:
            stmt = stmt.where(NotificationLogRow.channel == channel)
        if delivered is not None:
            stmt = stmt.where(NotificationLogRow.delivered == delivered)
        if isinstance(before, int):
            stmt = stmt.where(NotificationLogRow.id < before)
        rows = list((await session.execute(stmt.order_by(NotificationLogRow.id.desc()).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"before": rows[-1].id}) if more and rows else None)
