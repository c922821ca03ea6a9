"""The rollout history table and its repository (migration 0005_rollouts).

Imported at the bottom of :mod:`windflow.persistence.models` so ``Base.metadata`` (and Alembic) see it.
A config version's *good* marker is ``config_versions.status = 'good'``; this table keeps each rollout
with its outcome and evidence (the workflow's final state), outliving Temporal's retention.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from windflow.persistence.models import Base, JSONDoc, UTCDateTime, utcnow
from windflow.persistence.sealing import SealedJSON

if TYPE_CHECKING:
    from windflow.persistence.repositories import Page


class ConfigRolloutRow(Base):
    """One config rollout of one service: what was proposed, what became of it, and the evidence."""

    __tablename__ = "config_rollouts"
    __table_args__ = (Index("ix_config_rollouts_service_started", "service_id", "started_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64), ForeignKey("services.id", ondelete="CASCADE"))
    workflow_id: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(32), index=True)
    phase: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text, default="")
    verify_window: Mapped[float] = mapped_column(Float)
    previous_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    good_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    new_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    restored_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    message: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    #: the proposed service definition (without its id, secrets restored) as the API accepted it from ``actor``:
    #: the workflow carries only the rollout id, and the activities load what they save and run from here
    #: (migration 0008; ``None`` on rollouts from before it, which therefore cannot run)
    proposal: Mapped[dict[str, Any] | None] = mapped_column(SealedJSON, nullable=True, default=None)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RolloutRepository:
    """Async, keyword-only ``session``, never commits."""

    async def upsert(
        self,
        *,
        session: AsyncSession,
        rollout_id: str,
        service_id: str,
        workflow_id: str,
        status: str,
        phase: str,
        actor: str,
        verify_window: float,
        comment: str = "",
        message: str = "",
        previous_version: int | None = None,
        good_version: int | None = None,
        new_version: int | None = None,
        restored_version: int | None = None,
        state: dict[str, Any] | None = None,
        started_at: datetime | None = None,
        finished_at: datetime | None = None,
        proposal: dict[str, Any] | None = None,
    ) -> ConfigRolloutRow:
        row = await session.get(ConfigRolloutRow, rollout_id)
        if row is None:
            row = ConfigRolloutRow(id=rollout_id, service_id=service_id, started_at=started_at or utcnow(), actor=actor)
            session.add(row)
        elif row.finished_at is not None and finished_at is None:
            return row  # a late, replayed progress write never reopens a finished rollout
        if proposal is not None:
            row.proposal = proposal
        row.workflow_id = workflow_id
        row.status = status
        row.phase = phase
        row.comment = comment
        row.verify_window = verify_window
        row.message = message[:4000]
        for name, value in (
            ("previous_version", previous_version),
            ("good_version", good_version),
            ("new_version", new_version),
            ("restored_version", restored_version),
        ):
            if value is not None:
                setattr(row, name, value)
        if state is not None:
            row.state = state
        if started_at is not None:
            row.started_at = started_at
        row.finished_at = finished_at
        row.updated_at = utcnow()
        await session.flush()
        return row

    async def delete(self, *, session: AsyncSession, rollout_id: str) -> None:
        """Forget a rollout (one whose workflow never started)."""
        await session.execute(delete(ConfigRolloutRow).where(ConfigRolloutRow.id == rollout_id))

    async def get(self, *, session: AsyncSession, rollout_id: str) -> ConfigRolloutRow | None:
        return await session.get(ConfigRolloutRow, rollout_id)

    async def get_all(
        self,
        *,
        session: AsyncSession,
        service_id: str,
        limit: int = 50,
        cursor: str | None = None,
        status: str | None = None,
    ) -> Page[ConfigRolloutRow]:
        """Newest first; the cursor is (started_at, id) of the last row of the previous page."""
        # imported here: repositories imports models, which imports this module at its end
        from windflow.persistence.repositories import MAX_LIMIT, Page, decode_cursor, encode_cursor

        limit = max(1, min(limit, MAX_LIMIT))
        pos = decode_cursor(cursor)
        stmt = select(ConfigRolloutRow).where(ConfigRolloutRow.service_id == service_id)
        if status:
            stmt = stmt.where(ConfigRolloutRow.status == status)
        if "started_at" in pos and "id" in pos:
            at = datetime.fromisoformat(str(pos["started_at"]))
            stmt = stmt.where(
                or_(
                    ConfigRolloutRow.started_at < at,
                    and_(ConfigRolloutRow.started_at == at, ConfigRolloutRow.id < str(pos["id"])),
                )
            )
        stmt = stmt.order_by(ConfigRolloutRow.started_at.desc(), ConfigRolloutRow.id.desc()).limit(limit + 1)
        rows = list((await session.execute(stmt)).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        nxt = None
        if more and rows:
            nxt = encode_cursor({"started_at": rows[-1].started_at.isoformat(), "id": rows[-1].id})
        return Page(rows, nxt)
