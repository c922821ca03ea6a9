"""Helpers of the auth and permission tests: real users, real logins, through the API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2

from windflow.settings import Settings

PASSWORD = "correct-horse-battery"
BASE = "http://windflow.test"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_envelope(resp, status: int, code: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert {"code", "message", "timestamp", "details"} <= set(err)
    if code:
        assert err["code"] == code, err
    return err


async def create_user(admin: httpx2.AsyncClient, username: str, roles: list[str], password: str = PASSWORD) -> dict:
    r = await admin.post("/api/v1/users", json={"username": username, "password": password, "roles": roles})
    assert r.status_code == 201, r.text
    return r.json()


async def login(client: httpx2.AsyncClient, username: str, password: str = PASSWORD) -> dict:
    r = await client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()


@asynccontextmanager
async def running_app(settings: Settings, db) -> AsyncIterator[tuple[httpx2.AsyncClient, object]]:
    """An app built like production's (``build_resources``: roles, bootstrap admin) on the test database."""
    from windflow.api.app import build_resources, create_app

    res = await build_resources(settings, migrate=False)
    await res.db.dispose()
    res.db = db
    res.relay = None  # events stay in the outbox; these tests read the store (and skip the relay's shutdown)
    application = create_app(settings, resources=res)
    try:
        async with application.router.lifespan_context(application):
            transport = httpx2.ASGITransport(app=application)
            async with httpx2.AsyncClient(transport=transport, base_url=BASE) as client:
                yield client, application
    finally:
        await res.bus.close()
