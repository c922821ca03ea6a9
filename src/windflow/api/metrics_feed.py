"""``METRICS_UPDATE`` events: per-service health, probe latency, restarts and availability, every N seconds.

Metrics are samples, not state changes: they go straight to the bus (no outbox row, no database write per
round); a round lost while the bus is down is superseded by the next one. With several API replicas on one
Redis, a lease (``SET NX PX`` for one interval) lets exactly one replica publish each round.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from windflow.domain.events import Event, EventType, MetricsUpdate, make_event
from windflow.events.base import EventPublisher
from windflow.persistence.db import Database
from windflow.persistence.repositories import ProbeResultRepository, ServiceRepository

log = logging.getLogger("windflow.api.metrics")

Lease = Callable[[str, float], Awaitable[bool]]
#: services per slice of a round's work between two turns of the event loop (1,000 services: ~10 ms a slice)
CHUNK = 100


class MetricsFeed:
    def __init__(self, db: Database, bus: EventPublisher, *, interval: float, lease: Lease | None = None) -> None:
        self._db = db
        self._bus = bus
        self.interval = interval
        self._lease = lease
        self._services = ServiceRepository()
        self._probes = ProbeResultRepository()
        self.rounds = 0

    async def collect(self) -> list[MetricsUpdate]:
        out = []
        # four queries per round whatever the number of services (one per service and figure took seconds of
        # this process's loop per round at 1,000 services), and only the columns the figures need
        async with self._db.read() as session:
            rows = await self._services.states(session=session)
            latency = await self._probes.latest_latency_by_service(session=session)
            hour = await self._probes.availability_by_service(session=session, window=timedelta(hours=1))
            day = await self._probes.availability_by_service(session=session, window=timedelta(hours=24))
        for i, (service_id, state, restarts) in enumerate(rows):
            if i and not i % CHUNK:
                await asyncio.sleep(0)  # let requests in: a round must not hold the loop
            out.append(
                MetricsUpdate(
                    service_id=service_id,
                    health=state,
                    latency_ms=latency.get(service_id),
                    restarts=restarts,
                    availability_1h=hour.get(service_id),
                    availability_24h=day.get(service_id),
                )
            )
        return out

    async def run_once(self) -> int:
        """Publish one round; returns how many events (0 when another replica holds this round's lease)."""
        if self._lease is not None and not await self._lease("metrics", self.interval * 0.9):
            return 0
        now = datetime.now(UTC)
        figures = await self.collect()
        for start in range(0, len(figures), CHUNK):  # in chunks, the loop turning in between
            events: list[Event] = [
                make_event(EventType.METRICS_UPDATE, one, event_id=str(uuid.uuid4()), timestamp=now)
                for one in figures[start : start + CHUNK]
            ]
            await self._bus.publish_many(events)
            await asyncio.sleep(0)
        self.rounds += 1
        return len(figures)

    async def run(self) -> None:
        if self.interval <= 0:
            return
        loop = asyncio.get_running_loop()
        next_round = loop.time() + self.interval
        while True:
            await asyncio.sleep(max(0.0, next_round - loop.time()))
            next_round += self.interval
            if next_round < loop.time():  # fell behind (slow store): don't burst to catch up
                next_round = loop.time() + self.interval
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # bus or store away: skip this round, the next one supersedes it
                log.warning("metrics round skipped: %s: %s", type(exc).__name__, exc)
