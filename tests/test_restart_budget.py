"""The global restart budget on SQLite and PostgreSQL: limits, concurrency, idempotency, expiry, migration."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlparse

import pytest
from sqlalchemy import func, inspect, select

from windflow.persistence.budget import Lease, Refusal, RestartBudget
from windflow.persistence.db import Database
from windflow.persistence.migrate import current_revision, downgrade, upgrade
from windflow.persistence.models import RestartLeaseRow

pytestmark = pytest.mark.asyncio(loop_scope="session")

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def budget(db: Database, clock: Clock | None = None, **limits) -> RestartBudget:
    opts = {"max_in_flight": 3, "max_per_window": 100, "window": 60.0, "lease": 120.0, **limits}
    if clock is not None:
        opts["clock"] = clock
    return RestartBudget(db, **opts)


async def unreleased(db: Database) -> int:
    async with db.read() as session:
        stmt = select(func.count()).select_from(RestartLeaseRow).where(RestartLeaseRow.released_at.is_(None))
        return int((await session.execute(stmt)).scalar_one())


async def test_in_flight_limit_and_release(db):
    b = budget(db)
    leases = [await b.acquire(service_id=f"s{i}", holder=f"recover/s{i}#1") for i in range(3)]
    assert all(isinstance(x, Lease) for x in leases)
    refused = await b.acquire(service_id="s3", holder="recover/s3#1")
    assert isinstance(refused, Refusal)
    assert refused.reason == "3 restarts in flight (limit 3)"
    assert 0 < refused.retry_after <= 1.0 and refused.in_flight == 3 and not refused.granted
    assert (await b.usage()).in_flight == 3

    assert await b.release(lease_id=leases[0].id) is True
    assert await b.release(lease_id=leases[0].id) is False  # idempotent
    assert await b.release(lease_id="no-such-lease") is False
    granted = await b.acquire(service_id="s3", holder="recover/s3#1")
    assert isinstance(granted, Lease) and granted.service_id == "s3"
    assert await unreleased(db) == 3


async def test_per_window_limit(db):
    clock = Clock()
    b = budget(db, clock, max_in_flight=100, max_per_window=3, window=60.0)
    for i in range(3):
        lease = await b.acquire(service_id="api", holder=f"recover/api#{i}")
        assert isinstance(lease, Lease)
        await b.release(lease_id=lease.id)  # finished restarts still count in the window
        clock.advance(10)
    refused = await b.acquire(service_id="db", holder="recover/db#1")
    assert isinstance(refused, Refusal)
    assert refused.reason == "3 restarts in the last 60s (limit 3)"
    assert refused.retry_after == pytest.approx(30.0)  # the oldest (t0) leaves the window at t0 + 60
    assert refused.in_flight == 0 and refused.recent == 3
    clock.advance(30.001)
    assert isinstance(await b.acquire(service_id="db", holder="recover/db#1"), Lease)
    usage = await b.usage()
    assert (usage.recent, usage.in_flight) == (3, 1)


async def test_both_limits_reported(db):
    clock = Clock()
    b = budget(db, clock, max_in_flight=1, max_per_window=1)
    assert isinstance(await b.acquire(service_id="a", holder="a"), Lease)
    refused = await b.acquire(service_id="b", holder="b")
    assert isinstance(refused, Refusal)
    assert refused.reason == "1 restarts in flight (limit 1); 1 restarts in the last 60s (limit 1)"
    assert refused.retry_after == pytest.approx(60.0)


def second_database(db: Database) -> Database:
    """Another engine on the same store: a second worker process, as far as the database can tell."""
    return Database.from_url(db.engine.url.render_as_string(hide_password=False))


@pytest.mark.parametrize("limit", ["in_flight", "per_window"])
async def test_concurrent_acquires_never_exceed_the_limit(db, limit):
    other = second_database(db)
    try:
        limits = {"max_in_flight": 3} if limit == "in_flight" else {"max_in_flight": 100, "max_per_window": 5}
        budgets = [budget(db, **limits), budget(other, **limits)]
        results = await asyncio.gather(
            *(budgets[i % 2].acquire(service_id=f"svc{i}", holder=f"recover/svc{i}#1") for i in range(20))
        )
        granted = [r for r in results if isinstance(r, Lease)]
        expected = 3 if limit == "in_flight" else 5
        assert len(granted) == expected, [r.reason for r in results if isinstance(r, Refusal)]
        assert len({g.id for g in granted}) == expected
        assert await unreleased(db) == expected
        assert all(isinstance(r, Refusal) and "limit" in r.reason for r in results if not isinstance(r, Lease))
    finally:
        await other.dispose()


async def test_holder_is_idempotent(db):
    b = budget(db, max_in_flight=1)
    first = await b.acquire(service_id="api", holder="recover/api#attempt-2")
    again = await b.acquire(service_id="api", holder="recover/api#attempt-2")  # an activity retry
    assert isinstance(first, Lease) and isinstance(again, Lease) and again.id == first.id
    assert await unreleased(db) == 1
    # concurrent retries of one holder also get that one lease
    many = await asyncio.gather(*(b.acquire(service_id="api", holder="recover/api#attempt-2") for _ in range(5)))
    assert {m.id for m in many if isinstance(m, Lease)} == {first.id}
    await b.release(lease_id=first.id)
    fresh = await b.acquire(service_id="api", holder="recover/api#attempt-2")
    assert isinstance(fresh, Lease) and fresh.id != first.id


async def test_crashed_holder_lease_expires(db):
    clock = Clock()
    b = budget(db, clock, max_in_flight=1, lease=5.0)
    crashed = await b.acquire(service_id="api", holder="worker-died")
    assert isinstance(crashed, Lease) and crashed.expires_at == T0 + timedelta(seconds=5)
    clock.advance(4.5)
    refused = await b.acquire(service_id="db", holder="recover/db#1")
    assert isinstance(refused, Refusal) and refused.retry_after == pytest.approx(0.5)
    clock.advance(0.5)  # expired: no longer in flight
    assert (await b.usage()).in_flight == 0
    taken = await b.acquire(service_id="db", holder="recover/db#1")
    assert isinstance(taken, Lease)
    # the crashed holder's retry is just another request now, and the budget is full
    assert isinstance(await b.acquire(service_id="api", holder="worker-died"), Refusal)
    assert await b.release(lease_id=crashed.id) is True  # a late release of an expired lease is harmless
    assert (await b.usage()).in_flight == 1


async def test_expiry_in_real_time(db):
    b = budget(db, max_in_flight=1, lease=0.3)
    assert isinstance(await b.acquire(service_id="api", holder="h1"), Lease)
    assert isinstance(await b.acquire(service_id="db", holder="h2"), Refusal)
    await asyncio.sleep(0.35)
    assert isinstance(await b.acquire(service_id="db", holder="h2"), Lease)


async def test_purge_keeps_what_the_window_counts(db):
    clock = Clock()
    b = budget(db, clock, max_per_window=100, window=60.0)
    old = await b.acquire(service_id="a", holder="a")
    await b.release(lease_id=old.id)
    await b.acquire(service_id="b", holder="b")  # still in flight: never purged while it lasts
    clock.advance(30)
    assert await b.purge(older_than=1) == 0  # inside the window
    clock.advance(61)
    assert await b.purge(older_than=1) == 1
    assert (await b.usage()).in_flight == 1


async def test_rejects_nonsense_limits(tmp_path):
    db = Database.from_url(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with pytest.raises(ValueError):
        RestartBudget(db, max_in_flight=0, max_per_window=1, window=1, lease=1)
    await db.dispose()


# --------------------------------------------------------------------------- migration


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_migration_0003_upgrades_and_downgrades(backend, tmp_path, request):
    from tests.conftest import _pg_admin_exec

    drop = None
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'mig.db'}"
    else:
        base = request.getfixturevalue("postgres_url")
        name = f"wf_mig_{uuid.uuid4().hex[:10]}"
        _pg_admin_exec(base, f'CREATE DATABASE "{name}"')
        url = urlparse(base)._replace(path=f"/{name}").geturl().replace("postgresql://", "postgresql+psycopg://", 1)
        drop = (base, name)
    database = Database.from_url(url)
    ours = {"notification_channels", "notification_log", "restart_leases"}

    async def tables() -> set[str]:
        async with database.engine.connect() as conn:
            return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))

    try:
        await upgrade(database.engine, "0003")
        assert await current_revision(database.engine) == "0003"
        assert ours <= await tables()
        b = RestartBudget(database, max_in_flight=1, max_per_window=5, window=60, lease=30)
        assert isinstance(await b.acquire(service_id="x", holder="x"), Lease)
        await downgrade(database.engine, "0002")
        assert await current_revision(database.engine) == "0002"
        assert not ours & await tables()
        await upgrade(database.engine)
        assert ours <= await tables()
    finally:
        await database.dispose()
        if drop:
            _pg_admin_exec(drop[0], f'DROP DATABASE IF EXISTS "{drop[1]}" WITH (FORCE)')
