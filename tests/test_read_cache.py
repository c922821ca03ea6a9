"""The read cache of ``GET /api/v1/services`` (in-process and Redis) never serves a page older than the last
committed write, whoever wrote it: the API, or a worker in another process writing through its own engine."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx2
import pytest
import pytest_asyncio

from tests.conftest import mint_token
from tests.servers import start_redis
from windflow.activities._support import StateWriter
from windflow.api.cache import MemoryReadCache, RedisReadCache, read_cache_of
from windflow.domain.models import ServiceSpec
from windflow.persistence import registry
from windflow.persistence.db import Database
from windflow.persistence.repositories import ServiceRepository

pytestmark = pytest.mark.asyncio(loop_scope="session")


class Cached:
    def __init__(self, api: httpx2.AsyncClient, resources, backend: str, other: Database) -> None:
        self.api = api
        self.resources = resources
        self.backend = backend
        self.other = other  # the same store through another engine: what a worker process writes with

    @property
    def cache(self):
        return read_cache_of(self.resources)

    async def page(self, **params) -> dict[str, dict]:
        resp = await self.api.get("/api/v1/services", params=params)
        assert resp.status_code == 200, resp.text
        return {s["id"]: s for s in resp.json()["items"]}

    async def fresh_then_cached(self, **params) -> dict[str, dict]:
        """Read twice: the first read reflects the store, the second is the same page, served by the cache."""
        first = await self.page(**params)
        hits = self.cache.hits
        assert await self.page(**params) == first
        assert self.cache.hits == hits + 1
        return first


@pytest_asyncio.fixture(loop_scope="session", params=["memory", "redis"])
async def cached(request, settings, db) -> AsyncIterator[Cached]:
    from windflow.api.app import build_resources, create_app
    from windflow.events.relay import OutboxRelay

    updates: dict = {"events_metrics_interval": 0, "webhooks_dispatch": False, "read_cache": True}
    if request.param == "redis":
        updates |= {
            "redis_url": request.getfixturevalue("redis_url"),
            "events_stream": f"wf:test:{uuid.uuid4().hex[:12]}",
        }
    s = settings.model_copy(update=updates)
    res = await build_resources(s, migrate=False)
    await res.db.dispose()
    res.db = db
    res.relay = OutboxRelay(db, res.bus, interval=0.05)
    other = Database.from_url(db.engine.url.render_as_string(hide_password=False))
    app = create_app(s, resources=res)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx2.AsyncClient(
                transport=httpx2.ASGITransport(app=app),
                base_url="http://windflow.test",
                headers={"Authorization": f"Bearer {mint_token(s)}"},
            ) as api,
        ):
            yield Cached(api, res, request.param, other)
            cache = read_cache_of(res)
            if isinstance(cache, RedisReadCache):
                keys = [k async for k in cache.redis.scan_iter(match=f"{cache.prefix}*")]
                if keys:
                    await cache.redis.delete(*keys)
    finally:
        await other.dispose()
        if request.param == "redis":
            await res.bus.redis.delete(*res.bus.keys)
        await res.bus.close()


def noop(name: str, **extra) -> dict:
    return {"id": name, "driver": "noop", "config": {}, **extra}


async def test_no_stale_page_after_any_write(cached: Cached):
    assert isinstance(cached.cache, RedisReadCache if cached.backend == "redis" else MemoryReadCache)
    for name in ("s1", "s2", "s3"):
        assert (await cached.api.post("/api/v1/services", json=noop(name))).status_code == 201
    page = await cached.fresh_then_cached()
    assert set(page) == {"s1", "s2", "s3"} and page["s1"]["state"] == "unknown"
    if cached.backend == "redis":
        assert [k async for k in cached.cache.redis.scan_iter(match=f"{cached.cache.prefix}services:*")]

    # a worker (another engine, no cache of its own) records a state change: the next read shows it
    writer = StateWriter(cached.other)
    await writer.set_state("s1", "healthy", source="worker", message="up")
    page = await cached.fresh_then_cached()
    assert page["s1"]["state"] == "healthy" and page["s1"]["state_detail"]["message"] == "up"
    # the same state with only its detail changed (no event is written for it): still seen at once
    await writer.set_state("s1", "healthy", source="worker", detail={"restarts": 3})
    assert (await cached.page())["s1"]["state_detail"]["restarts"] == 3
    # a filtered page is keyed apart and just as fresh
    assert set(await cached.fresh_then_cached(state="healthy")) == {"s1"}
    await writer.set_state("s2", "healthy", source="worker")
    assert set(await cached.fresh_then_cached(state="healthy")) == {"s1", "s2"}

    # registry writes through the API: a config change, a delete
    resp = await cached.api.put(
        "/api/v1/services/s2/config", headers={"If-Match": '"1"'}, json={"content": noop("s2", description="changed")}
    )
    assert resp.status_code == 200, resp.text
    page = await cached.fresh_then_cached()
    assert page["s2"]["description"] == "changed" and page["s2"]["version"] == 2
    assert (await cached.api.delete("/api/v1/services/s3")).status_code == 204
    assert set(await cached.fresh_then_cached()) == {"s1", "s2"}

    # registry writes straight to the store from another process: a create, then a config change
    async with cached.other.write() as session:
        await registry.create_service(session=session, spec=ServiceSpec.model_validate(noop("s3")), author="cli")
    assert set(await cached.fresh_then_cached()) == {"s1", "s2", "s3"}
    async with cached.other.write() as session:
        await registry.update_service(
            session=session, service_id="s3", data=noop("s3", labels={"tier": "web"}), expected_version=1, author="cli"
        )
    assert (await cached.fresh_then_cached())["s3"]["labels"] == {"tier": "web"}
    assert (await cached.page(label="tier=web")).keys() == {"s3"}


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite runs one writer at a time
async def test_commits_in_any_order_are_seen(cached: Cached):
    """PostgreSQL commits concurrent transactions in any order: one that changed a row *earlier* may commit
    after one that changed another row later. The page read in between must not hide the late commit."""
    assert cached.other.dialect == "postgresql"
    for name in ("a", "b"):
        assert (await cached.api.post("/api/v1/services", json=noop(name))).status_code == 201
    await cached.fresh_then_cached()
    repo = ServiceRepository()
    late = Database.from_url(cached.other.engine.url.render_as_string(hide_password=False))
    try:
        async with late.write() as first:
            await repo.set_state(session=first, service_id="a", state="degraded")  # stamped now, committed last
            async with cached.other.write() as second:
                await repo.set_state(session=second, service_id="b", state="healthy")
            page = await cached.fresh_then_cached()
            assert page["b"]["state"] == "healthy" and page["a"]["state"] == "unknown"
        page = await cached.fresh_then_cached()
        assert page["a"]["state"] == "degraded" and page["b"]["state"] == "healthy"
    finally:
        await late.dispose()


async def test_redis_away_reads_still_work():
    """The Redis cache never fails a read: with its server gone, gets miss and sets are dropped."""
    server = start_redis()
    cache = RedisReadCache(server.url, prefix="wf:test:cache:", ttl=5)
    try:
        await cache.set("k", b"v")
        assert await cache.get("k") == b"v"
        server.stop()
        assert await cache.get("k") is None
        await cache.set("k", b"w")
        assert cache.errors >= 1 and cache.misses >= 1
    finally:
        await cache.close()
        server.stop()
