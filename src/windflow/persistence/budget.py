"""The global restart budget: no thundering herd of restarts after a fleet-wide blip.

A restart holds a *lease* (a row in ``restart_leases``) while it runs. :meth:`RestartBudget.acquire` grants
one only if fewer than ``max_in_flight`` leases are in flight (not released, not expired) and fewer than
``max_per_window`` were granted within the last ``window`` seconds; otherwise it returns a
:class:`Refusal` saying why and when to ask again. The check and the grant are one writer transaction,
serialized across processes: ``BEGIN IMMEDIATE`` on SQLite, a transaction-scoped advisory lock on
PostgreSQL. A lease that is never released (its holder crashed) expires after ``lease`` seconds and stops
counting as in flight; it still counts in the window (the restart happened).

Idempotent: ``acquire`` with a ``holder`` that already holds an unexpired, unreleased lease returns that
lease (a retried activity does not take a second slot); ``release`` of a released lease does nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.persistence.db import Database, affected_rows
from windflow.persistence.models import RestartLeaseRow, utcnow

#: pg_advisory_xact_lock key serializing budget decisions across workers ("rbud")
BUDGET_LOCK_KEY = 0x72627564
#: when refused for the in-flight limit, ask again after at most this long (releases are not announced)
IN_FLIGHT_RECHECK = 1.0
MIN_RETRY_AFTER = 0.05


class Lease(BaseModel):
    id: str
    service_id: str
    holder: str
    acquired_at: datetime
    expires_at: datetime
    granted: bool = Field(True, description="Always True: lets callers tell a Lease from a Refusal in JSON")


class Refusal(BaseModel):
    reason: str = Field(description='e.g. "3 restarts in flight (limit 3)"')
    retry_after: float = Field(ge=0, description="Seconds until asking again makes sense")
    in_flight: int
    recent: int
    granted: bool = False


class BudgetUsage(BaseModel):
    in_flight: int
    recent: int
    max_in_flight: int
    max_per_window: int
    window: float


def _is_postgres(session: AsyncSession) -> bool:
    return session.bind is not None and session.bind.dialect.name == "postgresql"


def _lease(row: RestartLeaseRow) -> Lease:
    return Lease(
        id=row.id, service_id=row.service_id, holder=row.holder, acquired_at=row.acquired_at, expires_at=row.expires_at
    )


class RestartBudget:
    def __init__(
        self,
        db: Database,
        *,
        max_in_flight: int,
        max_per_window: int,
        window: float,
        lease: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        if max_in_flight < 1 or max_per_window < 1 or window <= 0 or lease <= 0:
            raise ValueError("restart budget limits must be positive")
        self.db = db
        self.max_in_flight = max_in_flight
        self.max_per_window = max_per_window
        self.window = window
        self.lease = lease
        self.clock = clock

    async def acquire(self, *, service_id: str, holder: str) -> Lease | Refusal:
        """Take a restart slot for ``service_id`` on behalf of ``holder`` (e.g. ``recover/api:attempt-3``)."""
        async with self.db.write() as session:
            await self._lock(session)
            now = self.clock()
            held = (
                await session.execute(
                    select(RestartLeaseRow)
                    .where(
                        RestartLeaseRow.holder == holder,
                        RestartLeaseRow.released_at.is_(None),
                        RestartLeaseRow.expires_at > now,
                    )
                    .order_by(RestartLeaseRow.acquired_at.desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if held is not None:
                return _lease(held)
            flight = await self._in_flight_expiries(session, now)
            recent = await self._recent_starts(session, now)
            reasons: list[str] = []
            waits: list[float] = []
            if len(flight) >= self.max_in_flight:
                reasons.append(f"{len(flight)} restarts in flight (limit {self.max_in_flight})")
                # the earliest slot certainly frees when a lease expires; a release may free one sooner
                nth = flight[len(flight) - self.max_in_flight]
                waits.append(min((nth - now).total_seconds(), IN_FLIGHT_RECHECK))
            if len(recent) >= self.max_per_window:
                reasons.append(f"{len(recent)} restarts in the last {self.window:g}s (limit {self.max_per_window})")
                oldest = recent[len(recent) - self.max_per_window]
                waits.append((oldest + timedelta(seconds=self.window) - now).total_seconds())
            if reasons:
                return Refusal(
                    reason="; ".join(reasons),
                    retry_after=round(max(MIN_RETRY_AFTER, *waits), 3),
                    in_flight=len(flight),
                    recent=len(recent),
                )
            row = RestartLeaseRow(
                id=uuid.uuid4().hex,
                service_id=service_id,
                holder=holder,
                acquired_at=now,
                expires_at=now + timedelta(seconds=self.lease),
            )
            session.add(row)
            await session.flush()
            return _lease(row)

    async def release(self, *, lease_id: str) -> bool:
        """End a lease. True if this call released it; False if it was already released or is unknown."""
        async with self.db.write() as session:
            result = await session.execute(
                update(RestartLeaseRow)
                .where(RestartLeaseRow.id == lease_id, RestartLeaseRow.released_at.is_(None))
                .values(released_at=self.clock())
            )
            return affected_rows(result) > 0

    async def usage(self) -> BudgetUsage:
        """Leases in flight and granted within the window, right now (for queries and status pages)."""
        async with self.db.read() as session:
            now = self.clock()
            flight = await self._in_flight_expiries(session, now)
            recent = await self._recent_starts(session, now)
        return BudgetUsage(
            in_flight=len(flight),
            recent=len(recent),
            max_in_flight=self.max_in_flight,
            max_per_window=self.max_per_window,
            window=self.window,
        )

    async def purge(self, *, older_than: float) -> int:
        """Delete leases acquired more than ``older_than`` seconds ago that are released or expired."""
        older_than = max(older_than, self.window)  # never forget what the window still counts
        async with self.db.write() as session:
            now = self.clock()
            cutoff = now - timedelta(seconds=older_than)
            stmt = delete(RestartLeaseRow).where(
                RestartLeaseRow.acquired_at < cutoff,
                (RestartLeaseRow.released_at.is_not(None)) | (RestartLeaseRow.expires_at <= now),
            )
            result = await session.execute(stmt)
            return affected_rows(result)

    # ----------------------------------------------------------------- internals

    async def _lock(self, session: AsyncSession) -> None:
        if _is_postgres(session):
            await session.execute(select(func.pg_advisory_xact_lock(BUDGET_LOCK_KEY)))
        # SQLite: Database.write() began with BEGIN IMMEDIATE, so writers are already serialized

    async def _in_flight_expiries(self, session: AsyncSession, now: datetime) -> list[datetime]:
        stmt = (
            select(RestartLeaseRow.expires_at)
            .where(RestartLeaseRow.released_at.is_(None), RestartLeaseRow.expires_at > now)
            .order_by(RestartLeaseRow.expires_at)
        )
        return list((await session.execute(stmt)).scalars())

    async def _recent_starts(self, session: AsyncSession, now: datetime) -> list[datetime]:
        since = now - timedelta(seconds=self.window)
        stmt = (
            select(RestartLeaseRow.acquired_at)
            .where(RestartLeaseRow.acquired_at > since)
            .order_by(RestartLeaseRow.acquired_at)
        )
        return list((await session.execute(stmt)).scalars())
