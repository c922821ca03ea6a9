"""Outbox relay: moves events committed to the ``event_outbox`` table onto the bus, in order, once.

A state change and its event are written in one transaction (``OutboxRepository.add``); this loop publishes
what is pending and marks it published. If the bus is down it retries with backoff; nothing is lost while
the database keeps the rows, and the relay catches up (oldest first) when the bus is back.

Exactly once
    Publishing and marking are two systems, so a crash (or a database error) between them re-publishes the
    batch. The bus makes that harmless: ``publish_many`` is idempotent by ``event_id`` (the Redis bus skips
    ids it already holds in the same atomic Lua script that XADDs; the in-process bus likewise), so the
    stream holds each event once and consumer groups that acknowledge see it once.

Several relays (API replicas, workers)
    PostgreSQL: a pass runs in one transaction holding ``pg_try_advisory_xact_lock``, so relays take turns
    and the stream keeps commit order (``FOR UPDATE SKIP LOCKED`` in ``pending`` keeps rows from being
    taken twice as well). A relay that finds the lock taken retries shortly (the holder may have read its
    batch before our rows committed). SQLite has a single writer; the pending rows are read without the
    write lock (WAL readers never block writers), published, then marked in a short write transaction;
    bus-side idempotency covers two processes publishing the same rows.

Latency
    * in-process writers (API routes, activities in ``windflow up``) call :meth:`OutboxRelay.notify` after
      commit: the relay wakes at once;
    * on PostgreSQL every outbox insert also issues ``pg_notify`` (delivered at commit), and the relay
      LISTENs on a dedicated connection, so rows written by another process (``windflow worker``) wake it
      within a millisecond or two;
    * otherwise (SQLite shared by several processes) it polls every ``interval`` seconds; the query is an
      index lookup on ``published_at IS NULL``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from windflow.domain.backoff import reconnect_delay
from windflow.domain.events import Event
from windflow.events.base import EventPublisher
from windflow.metrics import EVENTS_PUBLISHED
from windflow.persistence.db import Database
from windflow.persistence.repositories import OUTBOX_CHANNEL, OutboxRepository, StatusHistoryRepository

log = logging.getLogger("windflow.events.relay")

PURGE_EVERY = 600.0  # seconds between purges of published rows
KEEP_PUBLISHED = timedelta(days=1)
BUSY_RETRY = 0.01  # another relay holds the PostgreSQL lock: look again this soon ...
BUSY_RETRIES = 5  # ... a few times, then leave it to that relay (and our next wake-up or tick)


class OutboxRelay:
    def __init__(
        self,
        db: Database,
        bus: EventPublisher,
        *,
        interval: float = 0.25,
        batch: int = 500,
        listen: bool = True,
        status_history_retention: timedelta | None = None,
    ) -> None:
        self._db = db
        self._history = StatusHistoryRepository()
        self._history_retention = status_history_retention
        self._bus = bus
        self._repo = OutboxRepository()
        self._interval = interval
        self._batch = batch
        self._listen = listen and db.dialect == "postgresql"
        self._wake = asyncio.Event()
        self._busy = False
        self.published = 0
        self.failures = 0
        self.last_error: str | None = None

    def notify(self) -> None:
        """Ask for an immediate pass (after a local commit) instead of waiting for the next tick."""
        self._wake.set()

    async def run_once(self) -> int:
        """One pass: publish up to ``batch`` pending rows in order and mark them. Returns how many moved."""
        self._busy = False
        if self._db.dialect == "postgresql":
            async with self._db.write() as session:
                if not await self._repo.try_lock_relay(session=session):
                    self._busy = True
                    return 0
                rows = await self._repo.pending(session=session, limit=self._batch)
                if not rows:
                    return 0
                await self._bus.publish_many([Event.model_validate(r.payload) for r in rows])
                await self._repo.mark_published(session=session, ids=[r.id for r in rows])
        else:
            async with self._db.read() as session:
                rows = await self._repo.pending(session=session, limit=self._batch)
            if not rows:
                return 0
            await self._bus.publish_many([Event.model_validate(r.payload) for r in rows])
            async with self._db.write() as session:
                await self._repo.mark_published(session=session, ids=[r.id for r in rows])
        self.published += len(rows)
        EVENTS_PUBLISHED.inc(len(rows))
        return len(rows)

    async def purge(self) -> int:
        """Housekeeping every PURGE_EVERY: published rows after a day, status changes after their retention."""
        async with self._db.write() as session:
            purged = await self._repo.purge_published(session=session, older_than=KEEP_PUBLISHED)
            if self._history_retention is not None:
                purged += await self._history.prune(session=session, older_than=self._history_retention)
            return purged

    async def run(self) -> None:
        listener = asyncio.create_task(self._listen_loop(), name="outbox-listen") if self._listen else None
        next_purge = time.monotonic() + PURGE_EVERY
        busy_streak = 0
        try:
            while True:
                # clear before reading: a notify() that lands during the pass triggers the next one at once
                self._wake.clear()
                try:
                    moved = await self.run_once()
                    if self.failures:
                        log.info("outbox relay recovered after %d failed attempts", self.failures)
                    self.failures = 0
                    self.last_error = None
                    if time.monotonic() >= next_purge:
                        next_purge = time.monotonic() + PURGE_EVERY
                        await self.purge()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # bus or store down: keep the rows, retry with backoff
                    self.failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    log.warning("outbox relay failed (%s); retrying", self.last_error)
                    await asyncio.sleep(reconnect_delay(self.failures))
                    continue
                if moved >= self._batch:
                    continue
                busy_streak = busy_streak + 1 if self._busy else 0
                if 0 < busy_streak <= BUSY_RETRIES:
                    await asyncio.sleep(BUSY_RETRY)
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await listener

    async def _listen_loop(self) -> None:
        failures = 0
        while True:
            try:
                async for _ in self._db.notifications(OUTBOX_CHANNEL):
                    failures = 0
                    self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                failures += 1
                log.debug("outbox LISTEN connection lost (%s); polling until it is back", exc)
            await asyncio.sleep(reconnect_delay(failures, base=0.1, cap=5.0))
