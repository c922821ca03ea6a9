"""The runs of jobs (``kind: job``): one row per attempt, with its outcome, and the repository over them.

Imported at the bottom of :mod:`windflow.persistence.models` so ``Base.metadata`` (and Alembic) see it.
A job with ``run: once`` is skipped when a successful row exists for the config version it would run.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from windflow.persistence.models import Base, BigId, JSONDoc, UTCDateTime, utcnow

#: rows kept per job (the oldest go first)
KEEP_RUNS = 50


class JobRunRow(Base):
    __tablename__ = "job_runs"
    __table_args__ = (Index("ix_job_runs_service_id", "service_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(64), ForeignKey("services.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    attempt: Mapped[int] = mapped_column(Integer, default=1)
    succeeded: Mapped[bool] = mapped_column(Boolean)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    duration: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    log_tail: Mapped[list[Any]] = mapped_column(JSONDoc, default=list)


class JobRunRepository:
    async def add(self, *, session: AsyncSession, row: JobRunRow, keep: int = KEEP_RUNS) -> JobRunRow:
        session.add(row)
        await session.flush()
        cutoff = (
            await session.execute(
                select(JobRunRow.id)
                .where(JobRunRow.service_id == row.service_id)
                .order_by(JobRunRow.id.desc())
                .offset(keep)
                .limit(1)
            )
        ).scalar_one_or_none()
        if cutoff is not None:
            await session.execute(
                delete(JobRunRow).where(JobRunRow.service_id == row.service_id, JobRunRow.id <= cutoff)
            )
        return row

    async def last_success(self, *, session: AsyncSession, service_id: str, version: int) -> JobRunRow | None:
        return (
            await session.execute(
                select(JobRunRow)
                .where(JobRunRow.service_id == service_id, JobRunRow.version == version, JobRunRow.succeeded.is_(True))
                .order_by(JobRunRow.id.desc())
                .limit(1)
            )
        ).scalar_one_or_none()

    async def get_all(self, *, session: AsyncSession, service_id: str, limit: int = 20) -> list[JobRunRow]:
        return list(
            (
                await session.execute(
                    select(JobRunRow)
                    .where(JobRunRow.service_id == service_id)
                    .order_by(JobRunRow.id.desc())
                    .limit(limit)
                )
            ).scalars()
        )
