"""The store's write path on SQLite: writers of one process queue in order, and a burst of small writes is
committed in shared transactions (group commit) without one writer's failure costing the others."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, select

from windflow.activities._support import StateWriter
from windflow.domain.models import ServiceSpec
from windflow.persistence import registry
from windflow.persistence.db import Database
from windflow.persistence.models import OutboxRow, ServiceRow

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
    assert isinstance(results[-1], Exception)
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
