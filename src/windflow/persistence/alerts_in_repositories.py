"""Incoming alert webhooks: hooks and the alert log (async, keyword-only session, never commit)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.domain.errors import NotFound
from windflow.persistence.alerts_in_models import AlertLogRow, HookRow
from windflow.persistence.db import affected_rows
from windflow.persistence.models import utcnow


class HookRepository:
    async def add(
        self,
        *,
        session: AsyncSession,
        hook_id: str,
        name: str,
        kind: str,
        config: dict[str, Any],
        token_hash: str,
        token_prefix: str,
        created_by: str,
        auth: str = "token",
        signing_secret: str | None = None,
        force: bool = False,
        dedupe_window: float = 300.0,
    ) -> HookRow:
        row = HookRow(
            id=hook_id,
            name=name,
            kind=kind,
            config=config,
            token_hash=token_hash,
            token_prefix=token_prefix,
            created_by=created_by,
            created_at=utcnow(),
            auth=auth,
            signing_secret=signing_secret,
            force=force,
            dedupe_window=dedupe_window,
        )
        session.add(row)
        await session.flush()
        return row

    async def get(self, *, session: AsyncSession, hook_id: str) -> HookRow | None:
        return await session.get(HookRow, hook_id)

    async def require(self, *, session: AsyncSession, hook_id: str) -> HookRow:
        row = await self.get(session=session, hook_id=hook_id)
        if row is None:
            raise NotFound(f"hook {hook_id!r} not found", details={"hook_id": hook_id})
        return row

    async def by_name(self, *, session: AsyncSession, name: str) -> HookRow | None:
        return (await session.execute(select(HookRow).where(HookRow.name == name))).scalar_one_or_none()

    async def by_token_hash(self, *, session: AsyncSession, token_hash: str) -> HookRow | None:
        stmt = select(HookRow).where(HookRow.token_hash == token_hash)
        return (await session.execute(stmt)).scalar_one_or_none()

    async def get_all(self, *, session: AsyncSession) -> list[HookRow]:
        return list((await session.execute(select(HookRow).order_by(HookRow.name))).scalars())

    async def set_token(self, *, session: AsyncSession, hook_id: str, token_hash: str, token_prefix: str) -> HookRow:
        row = await self.require(session=session, hook_id=hook_id)
        row.token_hash, row.token_prefix, row.token_rotated_at = token_hash, token_prefix, utcnow()
        await session.flush()
        return row

    async def touch(self, *, session: AsyncSession, hook_id: str, at: datetime | None = None) -> None:
        row = await self.get(session=session, hook_id=hook_id)
        if row is not None:
            row.last_used_at = at or utcnow()
            await session.flush()

    async def delete(self, *, session: AsyncSession, hook_id: str) -> None:
        await self.require(session=session, hook_id=hook_id)
        await session.execute(delete(HookRow).where(HookRow.id == hook_id))


class AlertLogRepository:
    async def add_many(
        self, *, session: AsyncSession, hook_id: str, request_id: str | None, entries: Sequence[dict[str, Any]]
    ) -> list[AlertLogRow]:
        now = utcnow()
        rows = [AlertLogRow(hook_id=hook_id, request_id=request_id, received_at=now, **entry) for entry in entries]
        session.add_all(rows)
        await session.flush()
        return rows

    async def get_all(
        self, *, session: AsyncSession, hook_id: str | None = None, service_id: str | None = None, limit: int = 100
    ) -> list[AlertLogRow]:
        stmt = select(AlertLogRow).order_by(AlertLogRow.id.desc()).limit(limit)
        if hook_id is not None:
            stmt = stmt.where(AlertLogRow.hook_id == hook_id)
        if service_id is not None:
            stmt = stmt.where(AlertLogRow.service_id == service_id)
        return list((await session.execute(stmt)).scalars())

    async def acted_since(
        self, *, session: AsyncSession, hook_id: str, keys: Sequence[str], since: datetime
    ) -> dict[str, datetime]:
        """Of ``keys``, those an alert of this hook acted on (started or joined a recovery) since ``since``,
        with when it arrived."""
        if not keys:
            return {}
        stmt = (
            select(AlertLogRow.dedupe_key, func.max(AlertLogRow.received_at))
            .where(
                AlertLogRow.hook_id == hook_id,
                AlertLogRow.dedupe_key.in_(list(set(keys))),
                AlertLogRow.received_at >= since,
                AlertLogRow.outcome.in_(("recovery_started", "attached")),
            )
            .group_by(AlertLogRow.dedupe_key)
        )
        return {key: at for key, at in (await session.execute(stmt)).all() if key is not None}

    async def mark_ignored(self, *, session: AsyncSession, workflow_id: str, run_id: str, reason: str) -> int:
        """The alerts that started or joined run ``run_id`` of ``workflow_id`` turned out not to need it."""
        result = await session.execute(
            update(AlertLogRow)
            .where(
                AlertLogRow.workflow_id == workflow_id,
                AlertLogRow.run_id == run_id,
                AlertLogRow.outcome.in_(("recovery_started", "attached")),
            )
            .values(outcome="ignored", reason=reason)
        )
        return affected_rows(result)
