"""Sign-in throttling: trusted proxies only, exponential delay per user and address (no lock-out from elsewhere),
``/auth/password`` limited too, and a Redis outage that degrades to in-process counting instead of failing logins.

Through a real uvicorn server (served as ``windflow api`` serves it) where the client address matters, the real
store, and a throwaway Redis server stopped mid-test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2
from sqlalchemy import select

from tests.auth_helpers import PASSWORD, assert_envelope, bearer, login
from tests.conftest import mint_token
from tests.live_server import LiveServer
from tests.servers import start_redis
from windflow.api.ratelimit import FallbackRateLimiter, MemoryRateLimiter, RedisRateLimiter
from windflow.persistence.models import AuditRow
from windflow.settings import Settings


@asynccontextmanager
async def served(settings: Settings, db) -> AsyncIterator[httpx2.AsyncClient]:
    """The app built as in production, on a real uvicorn on 127.0.0.1; a client of it."""
    from windflow.api.app import build_resources, create_app

    res = await build_resources(settings, migrate=False)
    await res.db.dispose()
    res.db = db
    res.relay = None
    application = create_app(settings, resources=res)
    try:
        async with LiveServer(application) as server:
            async with httpx2.AsyncClient(base_url=server.http_url, timeout=30) as client:
                yield client
    finally:
        await res.bus.close()


async def _user(client: httpx2.AsyncClient, settings: Settings, name: str) -> None:
    r = await client.post(
        "/api/v1/users",
        headers=bearer(mint_token(settings)),
        json={"username": name, "password": PASSWORD, "roles": ["viewer"]},
    )
    assert r.status_code == 201, r.text


async def _login(client: httpx2.AsyncClient, name: str, password: str, forwarded: str | None = None):
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return await client.post("/api/v1/auth/login", json={"username": name, "password": password}, headers=headers)


async def _clients(db, action: str) -> list[str | None]:
    async with db.read() as s:
        rows = (await s.execute(select(AuditRow).where(AuditRow.action == action).order_by(AuditRow.id))).scalars()
        return [(r.details or {}).get("client") for r in rows]


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(settings, db):
    strict = settings.model_copy(update={"login_free_failures": 3, "login_attempts_per_address": 100})
    async with served(strict, db) as client:
        await _user(client, strict, "olga")
        # a guesser on loopback rotating X-Forwarded-For: still one address, held after four failures
        for i in range(4):
            assert (await _login(client, "olga", "wrong", forwarded=f"198.51.100.{i}")).status_code == 401
        r = await _login(client, "olga", PASSWORD, forwarded="198.51.100.99")
        assert_envelope(r, 429, "rate_limited")
    clients = await _clients(db, "auth.login")
    assert clients and set(clients) == {"127.0.0.1"}, clients  # the audit names the real peer


async def test_forwarded_for_from_a_configured_proxy_names_the_client(settings, db):
    proxied = settings.model_copy(update={"forwarded_allow_ips": ["127.0.0.1"]})
    async with served(proxied, db) as client:
        await _user(client, proxied, "pat")
        assert (await _login(client, "pat", PASSWORD, forwarded="203.0.113.7")).status_code == 200
    assert await _clients(db, "auth.login") == ["203.0.113.7"]


async def test_wrong_passwords_slow_one_address_without_locking_the_user_out(settings, db):
    proxied = settings.model_copy(update={"forwarded_allow_ips": ["127.0.0.1"], "login_free_failures": 2})
    async with served(proxied, db) as client:
        await _user(client, proxied, "quinn")
        attacker, owner = "198.51.100.1", "203.0.113.9"
        for _ in range(3):  # two free, the third holds this pair for 1 s
            assert (await _login(client, "quinn", "wrong", forwarded=attacker)).status_code == 401
        r = await _login(client, "quinn", PASSWORD, forwarded=attacker)
        err = assert_envelope(r, 429, "rate_limited")
        assert r.headers["retry-after"] == "1" and err["details"]["limit"] == "failures"
        # the owner, elsewhere, is not locked out
        assert (await _login(client, "quinn", PASSWORD, forwarded=owner)).status_code == 200
        await asyncio.sleep(1.1)  # the delay after the 3rd failure: 1 s, then 2 s, 4 s, ...
        assert (await _login(client, "quinn", "wrong", forwarded=attacker)).status_code == 401
        r = await _login(client, "quinn", PASSWORD, forwarded=attacker)
        assert_envelope(r, 429)
        assert r.headers["retry-after"] == "2"


async def test_password_change_attempts_are_throttled(settings, db):
    limited = settings.model_copy(update={"login_free_failures": 2})
    async with served(limited, db) as client:
        await _user(client, limited, "rita")
        headers = bearer((await login(client, "rita"))["access_token"])
        body = {"current_password": "wrong-wrong-wrong", "new_password": "another-long-password"}
        for _ in range(3):
            r = await client.post("/api/v1/auth/password", json=body, headers=headers)
            assert_envelope(r, 403, "invalid_credentials")
        r = await client.post("/api/v1/auth/password", json={**body, "current_password": PASSWORD}, headers=headers)
        assert_envelope(r, 429, "rate_limited")
        assert int(r.headers["retry-after"]) >= 1


async def test_delays_double_up_to_the_cap():
    now = [1000.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    delays = [await limiter.fail("k", free=3, base=1.0, cap=8.0, ttl=3600) for _ in range(8)]
    assert delays == [0, 0, 0, 1, 2, 4, 8, 8]
    assert await limiter.held("k") == 8
    now[0] += 8.5
    assert await limiter.held("k") is None
    assert await limiter.held("other") is None
    await limiter.reset("k")
    assert await limiter.fail("k", free=3, base=1.0, cap=8.0, ttl=3600) == 0  # counting starts over


async def _readiness(client: httpx2.AsyncClient) -> dict[str, str]:
    body = (await client.get("/readyz")).json()
    return body["checks"] if "checks" in body else body["error"]["details"]  # type: ignore[no-any-return]


async def test_redis_outage_degrades_to_in_process_counting(settings, db):
    redis = start_redis()
    try:
        with_redis = settings.model_copy(
            update={"redis_url": redis.url, "events_stream": "wf:test:throttle", "login_free_failures": 2}
        )
        async with served(with_redis, db) as client:
            await _user(client, with_redis, "sam")
            ready = await _readiness(client)  # (no Temporal in this test: 503, with every check in its details)
            assert ready["redis"] == "ok", ready
            assert (await _login(client, "sam", "wrong")).status_code == 401  # counted in Redis
            redis.stop()
            assert (await _login(client, "sam", "wrong")).status_code == 401  # not a 500: counted in the process
            assert (await _login(client, "sam", PASSWORD)).status_code in (200, 429)
            ready = await _readiness(client)
            assert ready["redis"].startswith("degraded"), ready
            assert ready["database"] == "ok"
    finally:
        redis.stop()


async def test_redis_limiter_delays_are_shared(redis_url):
    import time

    prefix = f"test:{time.time_ns()}:"
    a, b = RedisRateLimiter.from_url(redis_url, prefix=prefix), RedisRateLimiter.from_url(redis_url, prefix=prefix)
    try:
        assert await a.fail("u|1", free=1, base=1.0, cap=60, ttl=60) == 0
        assert await b.held("u|1") is None
        assert await b.fail("u|1", free=1, base=1.0, cap=60, ttl=60) == 1  # another replica adds to the count
        assert await a.held("u|1") == 1
        assert await a.fail("u|1", free=1, base=1.0, cap=60, ttl=60) == 2
        await b.reset("u|1")
        assert await a.held("u|1") is None
        fallback = FallbackRateLimiter(RedisRateLimiter.from_url("redis://127.0.0.1:1/0"))
        assert await fallback.fail("k", free=0, base=1.0, cap=5, ttl=60) == 1 and fallback.degraded
        assert (await fallback.check()).startswith("degraded")
        await fallback.aclose()
    finally:
        await a.aclose()
        await b.aclose()
