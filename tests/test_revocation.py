"""Revocation reaches everything: open WebSockets close within 5 s of a logout, a password change, a disabled
account or an API token's revocation; API tokens expire by default and die with a password change.

A real uvicorn server, real WebSocket clients, the real store (SQLite and PostgreSQL).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.auth_helpers import PASSWORD, assert_envelope, bearer, login
from tests.conftest import mint_token
from tests.live_server import LiveServer
from windflow.settings import Settings

CLOSE_WITHIN = 5.0  # seconds: what the product promises


@asynccontextmanager
async def served(settings: Settings, db) -> AsyncIterator[tuple[LiveServer, httpx2.AsyncClient]]:
    from windflow.api.app import build_resources, create_app

    s = settings.model_copy(update={"events_metrics_interval": 0.0, "ws_heartbeat": 30.0})
    res = await build_resources(s, migrate=False)
    await res.db.dispose()
    res.db = db
    res.relay = None
    app = create_app(s, resources=res)
    try:
        async with LiveServer(app) as server, httpx2.AsyncClient(base_url=server.http_url, timeout=30) as client:
            admin = bearer(mint_token(s))
            r = await client.post(
                "/api/v1/users", headers=admin, json={"username": "val", "password": PASSWORD, "roles": ["operator"]}
            )
            assert r.status_code == 201, r.text
            yield server, client
    finally:
        await res.bus.close()


@asynccontextmanager
async def stream(server: LiveServer, token: str, query: str = "") -> AsyncIterator[ClientConnection]:
    async with connect(f"{server.ws_url}?token={token}{query}") as ws:
        first = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert first["type"] == "subscribed", first
        yield ws


async def closed_with(ws: ClientConnection) -> tuple[int, str]:
    """Read until the server closes; its close code and reason (fails after CLOSE_WITHIN seconds)."""
    async with asyncio.timeout(CLOSE_WITHIN):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed as exc:
            assert exc.rcvd is not None, "closed without a close frame"
            return exc.rcvd.code, exc.rcvd.reason
    raise AssertionError("unreachable")


async def _api_token(client: httpx2.AsyncClient, access: str, **body) -> dict:
    r = await client.post("/api/v1/auth/tokens", headers=bearer(access), json={"name": "feed", **body})
    assert r.status_code == 201, r.text
    return r.json()


async def test_logout_closes_the_sessions_websockets(settings, db):
    async with served(settings, db) as (server, client):
        access = (await login(client, "val"))["access_token"]
        other = (await login(client, "val"))["access_token"]  # another session of the same user stays open
        async with stream(server, access) as ws, stream(server, other) as ws_other:
            r = await client.post("/api/v1/auth/logout", headers=bearer(access))
            assert r.status_code == 204
            code, reason = await closed_with(ws)
            assert code == 4401 and "revoked" in reason, (code, reason)
            await ws_other.send(json.dumps({"type": "ping"}))
            assert json.loads(await asyncio.wait_for(ws_other.recv(), 10))["type"] == "pong"


async def test_revoking_an_api_token_closes_its_websockets(settings, db):
    async with served(settings, db) as (server, client):
        access = (await login(client, "val"))["access_token"]
        token = await _api_token(client, access)
        async with stream(server, token["token"]) as ws:
            r = await client.delete(f"/api/v1/auth/tokens/{token['id']}", headers=bearer(access))
            assert r.status_code == 204
            code, reason = await closed_with(ws)
            assert code == 4401 and "revoked" in reason, (code, reason)


async def test_password_change_ends_sessions_api_tokens_and_their_websockets(settings, db):
    async with served(settings, db) as (server, client):
        access = (await login(client, "val"))["access_token"]
        token = await _api_token(client, access)
        async with stream(server, access) as ws_session, stream(server, token["token"]) as ws_token:
            r = await client.post(
                "/api/v1/auth/password",
                headers=bearer(access),
                json={"current_password": PASSWORD, "new_password": "a-new-long-password"},
            )
            assert r.status_code == 204, r.text
            for ws in (ws_session, ws_token):
                code, _ = await closed_with(ws)
                assert code == 4401
        assert_envelope(await client.get("/api/v1/auth/me", headers=bearer(token["token"])), 401)
        access = (await login(client, "val", "a-new-long-password"))["access_token"]
        r = await client.get("/api/v1/auth/tokens?include_revoked=true", headers=bearer(access))
        assert [t["revoked_at"] is not None for t in r.json()] == [True]


async def test_disabling_the_owner_closes_the_websockets(settings, db):
    async with served(settings, db) as (server, client):
        access = (await login(client, "val"))["access_token"]
        token = await _api_token(client, access)
        async with stream(server, token["token"]) as ws:
            r = await client.patch("/api/v1/users/val", headers=bearer(mint_token(settings)), json={"disabled": True})
            assert r.status_code == 200, r.text
            code, reason = await closed_with(ws)
            assert code == 4401 and "disabled" in reason, (code, reason)


async def test_a_role_change_narrows_an_api_tokens_stream(settings, db):
    async with served(settings, db) as (server, client):
        access = (await login(client, "val"))["access_token"]
        token = (await _api_token(client, access))["token"]
        async with stream(server, token, "&types=AUDIT") as audit_ws, stream(server, token) as all_ws:
            r = await client.patch(
                "/api/v1/users/val", headers=bearer(mint_token(settings)), json={"roles": ["viewer"]}
            )
            assert r.status_code == 200, r.text
            code, reason = await closed_with(audit_ws)  # AUDIT needs audit:read, which the owner lost
            assert code == 4403 and "permissions changed" in reason, (code, reason)
            await asyncio.sleep(3)  # a re-check has passed: the unfiltered stream stays, without AUDIT events
            await all_ws.send(json.dumps({"type": "ping"}))
            async with asyncio.timeout(10):
                while json.loads(await all_ws.recv())["type"] != "pong":
                    pass


async def test_logout_ends_a_followed_log(settings, db):
    async with served(settings, db) as (server, client):
        r = await client.post(
            "/api/v1/services", headers=bearer(mint_token(settings)), json={"id": "chatty", "driver": "noop"}
        )
        assert r.status_code == 201, r.text
        logs = settings.resolved_data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        (logs / "chatty.out.log").write_text("first\n")
        (logs / "chatty.err.log").write_text("")
        access = (await login(client, "val"))["access_token"]
        async with client.stream(
            "GET", "/api/v1/services/chatty/logs", params={"lines": 1, "follow": "true"}, headers=bearer(access)
        ) as resp:
            assert resp.status_code == 200
            lines = resp.aiter_lines()
            assert json.loads(await asyncio.wait_for(anext(lines), 10))["line"] == "first"
            r = await client.post("/api/v1/auth/logout", headers=bearer(access))
            assert r.status_code == 204
            async with asyncio.timeout(CLOSE_WITHIN):  # the response ends: the follower is signed out
                async for line in lines:
                    assert not line.strip(), line


async def test_api_tokens_expire_by_default(settings, db):
    async with served(settings, db) as (_, client):
        access = (await login(client, "val"))["access_token"]
        token = await _api_token(client, access)
        expires = datetime.fromisoformat(token["expires_at"])
        assert abs(expires - (datetime.now(UTC) + timedelta(days=90))) < timedelta(minutes=5)
        assert datetime.fromisoformat((await _api_token(client, access, expires_in_days=365))["expires_at"])
        r = await client.post(
            "/api/v1/auth/tokens", headers=bearer(access), json={"name": "forever", "expires_in_days": 366}
        )
        assert_envelope(r, 422, "validation_error")


@pytest.mark.parametrize("interval", [0.1, 61])
def test_revalidation_interval_is_bounded(interval):
    with pytest.raises(ValueError):
        Settings(_env_file=None, jwt_secret="x" * 48, ws_revalidate_interval=interval)
