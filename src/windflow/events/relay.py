"""Outbox relay: moves events committed to the ``event_outbox`` table onto the bus, in order, once.

A state change and its event are written in one transaction; this loop publishes what is pending and
marks it published. If the bus is down it retries; nothing is lost while the database keeps the rows.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from windflow.domain.events import Event
from windflow.events.base import EventPublisher
from windflow.persistence.db import Database
from windflow.persistence.repositories import OutboxRepository

log = logging.getLogger("windflow.events.relay")


class OutboxRelay:
    def __init__(self, db: Database, bus: EventPublisher, *, interval: float = 0.25, batch: int = 500) -> None:
        self._db = db
        self._bus = bus
        self._repo = OutboxRepository()
        self._interval = interval
        self._batch = batch
        self._wake = asyncio.Event()
        self.published = 0

    def notify(self) -> None:
        """Ask for an immediate pass (after a local commit) instead of waiting for the next tick."""
        self._wake.set()

    async def run_once(self) -> int:
        async with self._db.write() as session:
            rows = await self._repo.pending(session=session, limit=self._batch)
            if not rows:
                return 0
            events = [Event.model_validate(r.payload) for r in rows]
            await self._bus.publish_many(events)
            await self._repo.mark_published(session=session, ids=[r.id for r in rows])
        self.published += len(rows)
        return len(rows)

    async def run(self) -> None:
        failures = 0
        tick = 0
        while True:
            try:
                moved = await self.run_once()
                failures = 0
                tick += 1
                if tick % 2000 == 0:
                    async with self._db.write() as session:
                        await self._repo.purge_published(session=session, older_than=timedelta(days=1))
                if moved >= self._batch:
                    continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bus or store down: keep the rows, retry with backoff
                failures += 1
                log.warning("outbox relay failed (%s); retrying", exc)
                await asyncio.sleep(min(5.0, 0.2 * 2 ** min(failures, 5)))
                continue
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
            except TimeoutError:
                pass
