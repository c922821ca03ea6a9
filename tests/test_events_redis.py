"""Redis Streams bus against a real Redis: consumer groups, restarts, reclaiming, idempotent relay, outages."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
import pytest_asyncio
from sqlalchemy import func, select

from tests.servers import free_port, start_redis
from windflow.domain.events import ConfigChanged, Event, EventType, ServiceStatusUpdate, make_event
from windflow.events.base import parse_position
from windflow.events.memory import MemoryBus
from windflow.events.redis_streams import RedisStreamsBus, StreamConsumer
from windflow.events.relay import OutboxRelay
from windflow.persistence.models import OutboxRow
from windflow.persistence.repositories import OutboxRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")

outbox = OutboxRepository()


def status_event(service: str, state: str = "running", n: int = 0) -> Event:
    return make_event(
        EventType.SERVICE_STATUS_UPDATE,
        ServiceStatusUpdate(service_id=service, state=state, message=f"#{n}", source="test"),
        event_id=str(uuid.uuid4()),
        timestamp=datetime.now(UTC),
    )


async def wait_until(predicate, timeout: float = 20.0, step: float = 0.02) -> None:  # noqa: ANN001
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


@pytest_asyncio.fixture(loop_scope="session")
async def bus(redis_url):
    b = RedisStreamsBus(redis_url, stream=f"wf:test:{uuid.uuid4().hex[:12]}", maxlen=10_000, block_ms=200)
    yield b
    await b.redis.delete(*b.keys)
    await b.close()


class Collector:
    def __init__(self) -> None:
        self.seen: list[Event] = []

    async def __call__(self, event: Event) -> None:
        self.seen.append(event)

    @property
    def ids(self) -> list[str]:
        return [e.event_id for e in self.seen]


async def consume(consumer: StreamConsumer, handler, stop: asyncio.Event) -> asyncio.Task:  # noqa: ANN001
    return asyncio.create_task(consumer.run(handler, stop=stop))


async def test_publish_and_consume_with_a_group(bus: RedisStreamsBus):
    events = [status_event("db", n=i) for i in range(25)]
    positions = await bus.publish_many(events)
    assert len(set(positions)) == 25
    first, second = Collector(), Collector()
    stop = asyncio.Event()
    c1 = bus.consumer("dashboards", "c1", block_ms=100)
    c2 = bus.consumer("alerts", "c1", block_ms=100)  # another group sees everything too
    t1, t2 = await consume(c1, first, stop), await consume(c2, second, stop)
    await wait_until(lambda: len(first.seen) >= 25 and len(second.seen) >= 25)
    more = [status_event("db", n=i) for i in range(25, 30)]
    await bus.publish_many(more)
    await wait_until(lambda: len(first.seen) >= 30 and len(second.seen) >= 30)
    stop.set()
    await asyncio.gather(t1, t2)
    expected = [e.event_id for e in events + more]
    assert first.ids == expected and second.ids == expected
    assert first.seen[0] == events[0]  # the envelope round-trips intact
    for group in ("dashboards", "alerts"):
        assert (await bus.redis.xpending(bus.stream, group))["pending"] == 0


async def test_publish_is_idempotent_by_event_id(bus: RedisStreamsBus):
    events = [status_event("db", n=i) for i in range(5)]
    first = await bus.publish_many(events)
    again = await bus.publish_many([events[2], events[4], status_event("db", n=99)])
    assert again[:2] == [first[2], first[4]]
    assert await bus.redis.xlen(bus.stream) == 6
    read = await bus.read(limit=100)
    assert [e.event_id for _, e in read][:5] == [e.event_id for e in events]
    # each entry names its predecessor, so a resuming reader can tell trimmed gaps
    raw = await bus.redis.xrange(bus.stream)
    assert raw[0][1]["prev"] == "0-0" and all(raw[i][1]["prev"] == raw[i - 1][0] for i in range(1, len(raw)))


async def test_consumer_restart_resumes_without_loss(bus: RedisStreamsBus):
    events = [status_event("api", n=i) for i in range(12)]
    await bus.publish_many(events[:8])
    first = bus.consumer("workers", "w1", count=5, block_ms=100)
    batch = await first.fetch()
    assert [d.event.event_id for d in batch if d.event] == [e.event_id for e in events[:5]]
    handled: list[str] = []
    for d in batch[:3]:  # handles three, then "crashes" before acknowledging the other two
        assert d.event is not None
        handled.append(d.event.event_id)
        await first.ack(d.position)
    del first
    await bus.publish_many(events[8:])

    restarted = bus.consumer("workers", "w1", count=5, block_ms=100, claim_idle=60)
    again = await restarted.fetch()
    # first what it was given and never acknowledged, marked as a redelivery
    assert [d.event.event_id for d in again if d.event] == [e.event_id for e in events[3:5]]
    assert all(d.deliveries == 2 for d in again)
    got = Collector()
    for d in again:
        assert await restarted.handle(d, got)
    stop = asyncio.Event()
    task = await consume(restarted, got, stop)
    await wait_until(lambda: len(handled) + len(got.seen) >= 12)
    stop.set()
    await task
    assert handled + got.ids == [e.event_id for e in events]  # all of them, once, in order
    assert (await bus.redis.xpending(bus.stream, "workers"))["pending"] == 0


async def test_stuck_message_is_reclaimed_then_dead_lettered(bus: RedisStreamsBus):
    events = [status_event("cache", n=i) for i in range(3)]
    await bus.publish_many(events)
    dead = bus.consumer("ops", "dead", block_ms=50, claim_idle=0.2)
    taken = await dead.fetch()  # delivered, never acknowledged: its consumer died
    assert len(taken) == 3

    rescuer = bus.consumer("ops", "rescuer", block_ms=50, claim_idle=0.2, max_deliveries=3)
    assert await rescuer.fetch() == []  # not idle long enough yet: nothing to claim, nothing new
    await asyncio.sleep(0.3)
    rescuer._next_claim = 0.0
    claimed = await rescuer.fetch()
    assert [d.event.event_id for d in claimed if d.event] == [e.event_id for e in events]
    assert all(d.deliveries == 2 for d in claimed)
    got = Collector()
    assert await rescuer.handle(claimed[0], got) and got.ids == [events[0].event_id]

    async def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    # the other two keep failing: redelivered after the idle time until max_deliveries, then dead-lettered
    stop = asyncio.Event()
    task = await consume(rescuer, broken, stop)
    try:

        async def dead_count() -> int:
            return int(await bus.redis.xlen(f"{bus.stream}:dead"))

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await dead_count() < 2:
            assert loop.time() < deadline, "stuck entries were not dead-lettered"
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    dead_entries = await bus.redis.xrange(f"{bus.stream}:dead")
    assert sorted(f["event_id"] for _, f in dead_entries) == sorted(e.event_id for e in events[1:])
    assert all(int(f["deliveries"]) > 3 and f["group"] == "ops" for _, f in dead_entries)
    assert (await bus.redis.xpending(bus.stream, "ops"))["pending"] == 0


async def write_outbox(db, relay: OutboxRelay, events: list[Event]) -> None:  # noqa: ANN001
    """The way activities and routes write: the event row in the state change's own transaction, then notify."""
    for event in events:
        async with db.write() as session:
            await outbox.add(session=session, event=event)
        relay.notify()


async def pending_rows(db) -> int:  # noqa: ANN001
    async with db.read() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
                )
            ).scalar_one()
        )


async def test_relay_crash_between_publish_and_mark_does_not_duplicate(db, bus: RedisStreamsBus):
    events = [status_event("db", n=i) for i in range(10)]
    async with db.write() as session:
        for e in events:
            await outbox.add(session=session, event=e)
    # a relay publishes and dies before marking: emulate with a bus call outside the relay
    await bus.publish_many(events[:6])
    relay = OutboxRelay(db, bus, listen=False)
    assert await relay.run_once() == 10
    assert await pending_rows(db) == 0
    assert [e.event_id for _, e in await bus.read(limit=100)] == [e.event_id for e in events]


async def test_memory_bus_has_the_same_contract():
    bus = MemoryBus(maxlen=100)
    events = [status_event("db", n=i) for i in range(150)]
    positions = await bus.publish_many(events)
    assert len(set(positions)) == 150 and positions == sorted(positions, key=parse_position)
    assert await bus.publish_many([events[-1]]) == [positions[-1]]  # idempotent while retained
    assert await bus.missed(positions[0]) and not await bus.missed(positions[49])
    assert [p for p, _ in await bus.read(after=positions[139], limit=5)] == positions[140:145]
    assert [e for _, e in await bus.read(after="0-0", limit=1)] == [events[50]]  # oldest retained
    # a bus in a restarted process: ids keep growing, an old id resumes from the start and reports the gap
    await asyncio.sleep(0.002)
    restarted = MemoryBus()
    fresh = await restarted.publish_many([status_event("db", n=1000)])
    assert parse_position(fresh[0]) > parse_position(positions[-1])
    assert [e.event_id for _, e in await restarted.read(after=positions[-1])] == [
        (await restarted.read())[0][1].event_id
    ]
    assert await restarted.missed(positions[-1])
    await bus.close()
    await restarted.close()


async def test_redis_outage_loses_nothing_and_duplicates_nothing(db):
    """A Redis server this test owns is stopped while state changes keep being written, then restarted on
    the same port: after it returns, the group receives every event exactly once."""
    port = free_port()
    server = start_redis(port)
    bus = RedisStreamsBus(server.url, stream=f"wf:test:{uuid.uuid4().hex[:12]}", block_ms=200)
    relay = OutboxRelay(db, bus, interval=0.05)
    relay_task = asyncio.create_task(relay.run())
    got = Collector()
    stop = asyncio.Event()
    consumer = bus.consumer("audit-sink", "s1", block_ms=200)
    consumer_task = await consume(consumer, got, stop)
    written: list[Event] = []
    try:
        before = [status_event("db", n=i) for i in range(20)]
        await write_outbox(db, relay, before)
        written += before
        await wait_until(lambda: len(got.seen) >= 20)

        server.stop()  # Redis goes away in the middle of the run
        during = [
            make_event(
                EventType.CONFIG_CHANGED,
                ConfigChanged(service_id="db", version=i, author="t"),
                event_id=str(uuid.uuid4()),
                timestamp=datetime.now(UTC),
            )
            for i in range(30)
        ]
        for i, event in enumerate(during):
            await write_outbox(db, relay, [event])  # the store keeps working; the rows wait in the outbox
            if i % 10 == 0:
                await asyncio.sleep(0.1)
        written += during
        await wait_until(lambda: relay.failures > 0)
        assert await pending_rows(db) == 30

        server = start_redis(port)  # back, on the same port (empty: this server keeps no data)
        after = [status_event("db", n=100 + i) for i in range(10)]
        await write_outbox(db, relay, after)
        written += after
        await wait_until(lambda: len(got.seen) >= len(written), timeout=30)
        await asyncio.sleep(0.5)  # anything extra (a duplicate) would arrive now
        assert sorted(got.ids) == sorted(e.event_id for e in written)
        assert len(got.ids) == len(set(got.ids))
        # and in the order they were committed
        assert got.ids == [e.event_id for e in written]
        assert await pending_rows(db) == 0
    finally:
        stop.set()
        relay_task.cancel()
        await asyncio.gather(consumer_task, relay_task, return_exceptions=True)
        await bus.close()
        server.stop()


async def test_two_relays_publish_each_event_once_in_order(db, bus: RedisStreamsBus):
    """Several API replicas run a relay each: no event is published twice and commit order is kept."""
    relays = [OutboxRelay(db, bus, interval=0.02), OutboxRelay(db, bus, interval=0.02)]
    tasks = [asyncio.create_task(r.run()) for r in relays]
    written: list[Event] = []
    try:
        for i in range(60):
            event = status_event("db", n=i)
            async with db.write() as session:
                await outbox.add(session=session, event=event)
            written.append(event)
            relays[i % 2].notify()
            if i % 7 == 0:
                await asyncio.sleep(0.01)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while await pending_rows(db):
            assert loop.time() < deadline
            await asyncio.sleep(0.02)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert [e.event_id for _, e in await bus.read(limit=1000)] == [e.event_id for e in written]


async def test_relay_wakes_on_postgres_notify_from_another_writer(postgres_db):
    """Rows written by another process (no notify() call reaches this relay) are relayed at once on PostgreSQL:
    the insert's pg_notify wakes the relay LISTENing, long before its poll interval."""
    db = postgres_db
    bus = MemoryBus()
    relay = OutboxRelay(db, bus, interval=60.0)
    task = asyncio.create_task(relay.run())
    try:
        await asyncio.sleep(0.3)  # the relay made its first pass and is LISTENing
        event = status_event("db")
        async with db.write() as session:
            await outbox.add(session=session, event=event)
        await wait_until(lambda: relay.published >= 1, timeout=10)
        assert bus.history()[-1].event_id == event.event_id
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_undecodable_entries_are_skipped_by_readers_and_dead_lettered_by_groups(bus: RedisStreamsBus):
    good = [status_event("db", n=i) for i in range(3)]
    await bus.publish_many(good[:1])
    await bus.redis.xadd(bus.stream, {"event": "{not json"})  # written by something else
    await bus.publish_many(good[1:])
    assert [e.event_id for _, e in await bus.read(limit=3)] == [e.event_id for e in good]
    consumer = bus.consumer("g", "c", block_ms=50)
    got = Collector()
    for delivery in await consumer.fetch():
        assert await consumer.handle(delivery, got)
    assert got.ids == [e.event_id for e in good]
    dead = await bus.redis.xrange(f"{bus.stream}:dead")
    assert [f["reason"] for _, f in dead] == ["undecodable entry"]
