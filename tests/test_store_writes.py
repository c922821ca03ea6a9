"""The store's write path on SQLite: writers of one process queue in order, and a burst of small writes is
committed in shared transactions (group commit) without one writer's failure costing the others."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest
from sqlalchemy import event, select
from sqlalchemy.exc import IntegrityError

from windflow.activities._support import StateWriter
from windflow.domain.models import ServiceSpec
from windflow.persistence import registry
from windflow.persistence.db import Database
from windflow.persistence.models import OutboxRow, ServiceRow

T = TypeVar("T")

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def _services(db: Database, n: int) -> list[str]:
    ids = [f"svc-{i:02d}" for i in range(n)]
    async with db.write() as session:
        for service_id in ids:
            spec = ServiceSpec.model_validate({"id": service_id, "driver": "noop", "config": {}})
            await registry.create_service(session=session, spec=spec, author="test")
    return ids


def _count_commits(db: Database) -> list[int]:
    commits = [0]

    @event.listens_for(db.engine.sync_engine, "commit")
    def _on_commit(_conn) -> None:  # type: ignore[no-untyped-def]
        commits[0] += 1

    return commits


async def test_a_burst_of_state_writes_shares_transactions_and_all_land(sqlite_db: Database) -> None:
    ids = await _services(sqlite_db, 30)
    commits = _count_commits(sqlite_db)
    writer = StateWriter(sqlite_db)
    previous = await asyncio.gather(*(writer.set_state(s, "healthy", source="test", message="up") for s in ids))
    assert all(p is not None for p in previous)  # every service was found and its previous state returned
    assert commits[0] < len(ids)  # grouped: fewer commits than writers
    async with sqlite_db.read() as session:
        states = dict((await session.execute(select(ServiceRow.id, ServiceRow.state))).all())
        events = (await session.execute(select(OutboxRow.payload))).scalars().all()
    assert {states[s] for s in ids} == {"healthy"}
    changed = {e["data"]["service_id"] for e in events if e["event_type"] == "SERVICE_STATUS_UPDATE"}
    assert changed >= set(ids)  # every write published its event


async def test_one_failing_writer_fails_alone_and_leaves_nothing_half_saved(sqlite_db: Database) -> None:
    ids = await _services(sqlite_db, 5)
    writer = StateWriter(sqlite_db)

    async def broken(session) -> None:  # type: ignore[no-untyped-def]
        session.add(OutboxRow(event_id="dup-1", event_type="AUDIT", payload={}))
        session.add(OutboxRow(event_id="dup-1", event_type="AUDIT", payload={}))
        await session.flush()  # event ids are unique: this write fails

    results = await asyncio.gather(
        *(writer.set_state(s, "failed", source="test", message="down") for s in ids),
        sqlite_db.write_batched(broken),
        return_exceptions=True,
    )
    assert all(r is not None and not isinstance(r, BaseException) for r in results[:-1])
    assert isinstance(results[-1], IntegrityError), results[-1]  # the duplicate event id, not something else
    async with sqlite_db.read() as session:
        states = dict((await session.execute(select(ServiceRow.id, ServiceRow.state))).all())
        dup = (await session.execute(select(OutboxRow).where(OutboxRow.event_id == "dup-1"))).first()
    assert {states[s] for s in ids} == {"failed"}
    assert dup is None


async def test_writers_of_one_process_queue_instead_of_waiting_in_sqlite(sqlite_db: Database) -> None:
    """Many concurrent plain write transactions all succeed; none meets "database is locked"."""
    ids = await _services(sqlite_db, 40)

    async def flip(service_id: str) -> None:
        async with sqlite_db.write() as session:
            row = await session.get(ServiceRow, service_id)
            assert row is not None
            row.state = "stopped"
            await asyncio.sleep(0)  # yield inside the transaction: others must wait their turn, not fail

    await asyncio.gather(*(flip(s) for s in ids))
    async with sqlite_db.read() as session:
        states = set((await session.execute(select(ServiceRow.state))).scalars())
    assert states == {"stopped"}


async def test_a_nested_write_in_the_same_task_is_refused_not_deadlocked(sqlite_db: Database) -> None:
    async with sqlite_db.write():
        with pytest.raises(RuntimeError, match="inside another"):
            async with sqlite_db.write():
                pass


async def test_postgres_batched_write_is_a_plain_transaction(postgres_db: Database) -> None:
    ids = await _services(postgres_db, 3)
    writer = StateWriter(postgres_db)
    await asyncio.gather(*(writer.set_state(s, "healthy", source="test") for s in ids))
    async with postgres_db.read() as session:
        states = set((await session.execute(select(ServiceRow.state).where(ServiceRow.id.in_(ids)))).scalars())
    assert states == {"healthy"}


# --------------------------------------------------------------------------- short reads outside a session


async def test_rows_reads_committed_data_while_a_writer_holds_its_transaction(sqlite_db: Database) -> None:
    """Database.rows on SQLite runs on the loop's thread: it must never wait for a writer (WAL) and must see only
    what is committed."""
    await _services(sqlite_db, 2)
    stmt = select(ServiceRow.id).order_by(ServiceRow.id)
    async with sqlite_db.write() as session:  # an open write transaction with an uncommitted row
        spec = ServiceSpec.model_validate({"id": "svc-uncommitted", "driver": "noop", "config": {}})
        await registry.create_service(session=session, spec=spec, author="test")
        assert [r.id for r in await sqlite_db.rows(stmt)] == ["svc-00", "svc-01"]
    assert [r.id for r in await sqlite_db.rows(stmt)] == ["svc-00", "svc-01", "svc-uncommitted"]


async def _while_the_loop_turns(awaitable: Awaitable[T]) -> tuple[T, float, int]:
    """Await ``awaitable`` while a ticker counts the event loop's turns: (its result, seconds taken, ticks). A
    wait that blocks the loop's thread leaves the ticker at 0 or 1."""
    loop = asyncio.get_running_loop()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    started = loop.time()
    try:
        result = await awaitable
    finally:
        ticking.cancel()
    return result, loop.time() - started, ticks


async def test_rows_falls_back_to_a_session_when_the_file_is_locked(sqlite_db: Database, tmp_path) -> None:
    """A lock that does block readers (another process holding the file exclusively): the quick read gives up
    after a few milliseconds instead of stalling the event loop, and the read waits in a session instead."""
    import sqlite3
    import threading

    await _services(sqlite_db, 1)
    await sqlite_db.dispose()  # an exclusive lock on a WAL file needs every other connection closed
    path = sqlite_db.engine.url.database
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("PRAGMA locking_mode=EXCLUSIVE")
    other.execute("BEGIN EXCLUSIVE")
    other.execute("UPDATE services SET description = 'locked' WHERE id = 'svc-00'")
    release = threading.Timer(
        0.5,
        lambda: (
            other.execute("COMMIT"),
            other.execute("PRAGMA locking_mode=NORMAL"),
            other.execute("SELECT 1 FROM services"),
            other.close(),
        ),
    )
    release.start()
    rows, waited, ticks = await _while_the_loop_turns(
        sqlite_db.rows(select(ServiceRow.description).where(ServiceRow.id == "svc-00"))
    )
    release.join()
    assert rows[0].description == "locked"  # read after the other process committed
    assert waited >= 0.4
    assert ticks >= 10, f"the event loop stalled while the read waited ({ticks} ticks in {waited:.2f}s)"


async def test_rows_keeps_no_snapshot_between_reads(sqlite_db: Database) -> None:
    """The quick reads' connection stays open with its thread, but holds no read snapshot between reads: a
    checkpoint right after a read resets the whole log (a held snapshot would pin it and the log would grow)."""
    import sqlite3

    await _services(sqlite_db, 3)
    assert len(await sqlite_db.rows(select(ServiceRow.id))) == 3
    await sqlite_db.write_sync(_add_service_sync("later"))  # frames in the log after that read
    assert len(await sqlite_db.rows(select(ServiceRow.id))) == 4  # a later read sees the write
    other = sqlite3.connect(str(sqlite_db.engine.url.database), isolation_level=None)
    try:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        other.close()
    assert busy == 0, "a reader's snapshot kept the checkpoint from resetting the log"


async def test_rows_on_postgres(postgres_db: Database) -> None:
    await _services(postgres_db, 3)
    rows = await postgres_db.rows(
        select(ServiceRow.id).where(ServiceRow.id.in_(["svc-01", "svc-02", "nope"])).order_by(ServiceRow.id)
    )
    assert [r.id for r in rows] == ["svc-01", "svc-02"]


# --------------------------------------------------------------------------- synchronous units of work


def _add_service_sync(service_id: str, *, fail: bool = False):  # type: ignore[no-untyped-def]
    def work(session) -> str:  # type: ignore[no-untyped-def]
        session.add(ServiceRow(id=service_id, driver="noop", spec={"id": service_id, "driver": "noop"}))
        session.flush()
        if fail:
            raise RuntimeError("refused after the insert")
        return service_id

    return work


async def _ids(db: Database) -> list[str]:
    return [r.id for r in await db.rows(select(ServiceRow.id).order_by(ServiceRow.id))]


async def _commits_or_leaves_nothing(db: Database) -> None:
    assert await db.write_sync(_add_service_sync("sync-a")) == "sync-a"
    with pytest.raises(RuntimeError, match="refused"):
        await db.write_sync(_add_service_sync("sync-b", fail=True))
    assert await _ids(db) == ["sync-a"]  # the failed unit of work left nothing half-saved


async def test_write_sync_commits_or_leaves_nothing_sqlite(sqlite_db: Database) -> None:
    await _commits_or_leaves_nothing(sqlite_db)


async def test_write_sync_commits_or_leaves_nothing_postgres(postgres_db: Database) -> None:
    await _commits_or_leaves_nothing(postgres_db)


async def test_write_sync_queues_behind_this_process_writers(sqlite_db: Database) -> None:
    """On SQLite it takes the same in-process writer slot as write(): it waits for an open write transaction
    instead of failing or stalling in SQLite's busy handler, and lands after it."""
    order: list[str] = []
    entered = asyncio.Event()

    async def async_writer() -> None:
        async with sqlite_db.write() as session:
            session.add(ServiceRow(id="first", driver="noop", spec={"id": "first", "driver": "noop"}))
            await session.flush()
            entered.set()
            await asyncio.sleep(0.3)
            order.append("async")

    task = asyncio.create_task(async_writer())
    await entered.wait()
    await sqlite_db.write_sync(_add_service_sync("second"))
    order.append("sync")
    await task
    assert order == ["async", "sync"]
    assert await _ids(sqlite_db) == ["first", "second"]


def _other_connection_can_write(path: str) -> None:
    """SQLite's write lock is free: a connection that never waits takes it at once."""
    import sqlite3

    probe = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
    finally:
        probe.close()


async def test_write_sync_waits_for_another_process_writer_without_stalling_the_loop(sqlite_db: Database) -> None:
    """The first try runs on the loop's thread and never waits for a lock: while another process holds the
    write lock it moves to a thread, which waits there (the loop keeps turning), and lands once that writer
    committed. No path leaves the write lock held: another connection can write right after each call,
    including after a unit of work that failed."""
    import sqlite3
    import threading

    path = str(sqlite_db.engine.url.database)
    await sqlite_db.write_sync(_add_service_sync("before"))  # the loop's path, uncontended
    _other_connection_can_write(path)
    with pytest.raises(RuntimeError, match="refused"):
        await sqlite_db.write_sync(_add_service_sync("refused", fail=True))
    _other_connection_can_write(path)

    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE services SET description = 'other process' WHERE id = 'before'")
    release = threading.Timer(0.5, lambda: (other.execute("COMMIT"), other.close()))
    release.start()
    written, waited, ticks = await _while_the_loop_turns(sqlite_db.write_sync(_add_service_sync("after")))
    release.join()
    assert written == "after"
    assert waited >= 0.4  # it waited for the other writer instead of failing with "database is locked"
    assert ticks >= 10, f"the event loop stalled while the write waited ({ticks} ticks in {waited:.2f}s)"
    _other_connection_can_write(path)
    assert await _ids(sqlite_db) == ["after", "before"]
    described = await sqlite_db.rows(select(ServiceRow.description).where(ServiceRow.id == "before"))
    assert described[0].description == "other process"
