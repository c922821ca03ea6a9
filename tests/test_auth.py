"""Authentication, sessions, API tokens, user management, rate limits and the audit trail.

Real users logging in through the API, on SQLite and PostgreSQL (the ``db`` fixture runs both).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx2
import jwt
import pytest
from pydantic import SecretStr
from sqlalchemy import select, update

from tests.auth_helpers import PASSWORD, assert_envelope, bearer, create_user, login, running_app
from tests.conftest import mint_token
from windflow.api.ratelimit import MemoryRateLimiter, RedisRateLimiter
from windflow.auth.tokens import issue_access_token
from windflow.persistence.auth_models import ApiTokenRow, RefreshTokenRow, UserRow
from windflow.persistence.models import AuditRow
from windflow.settings import Mode


async def audit_rows(db, **where) -> list[AuditRow]:
    async with db.read() as s:
        stmt = select(AuditRow).order_by(AuditRow.id)
        for key, value in where.items():
            stmt = stmt.where(getattr(AuditRow, key) == value)
        return list((await s.execute(stmt)).scalars())


# --------------------------------------------------------------------------- login, me, refresh, logout


async def test_login_me_and_the_token_claims(api, anon, settings):
    await create_user(api, "Dana", ["operator"])  # user names are case-insensitive (stored lower-case)
    pair = await login(anon, "dana")
    assert pair["token_type"] == "bearer" and pair["refresh_token"].startswith("wf_rt_")
    assert 0 < pair["expires_in"] <= settings.access_token_ttl
    claims = jwt.decode(pair["access_token"], settings.jwt_key(), algorithms=["HS256"], issuer="windflow")
    assert {"sub", "exp", "iat", "jti", "permissions", "sid"} <= set(claims)
    assert claims["sub"] == "dana" and claims["sid"] == pair["session_id"]
    assert "services:control" in claims["permissions"] and "users:manage" not in claims["permissions"]

    me = (await anon.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).json()
    assert me["username"] == "dana" and me["kind"] == "user" and me["roles"] == ["operator"]
    assert me["permissions"] == claims["permissions"] and me["user"]["last_login_at"]

    # the OAuth2 password form (the docs' Authorize button) works too, and rejects other grants
    r = await anon.post("/api/v1/auth/login", data={"username": "DANA", "password": PASSWORD, "grant_type": "password"})
    assert r.status_code == 200, r.text
    assert_envelope(
        await anon.post(
            "/api/v1/auth/login", data={"username": "dana", "password": PASSWORD, "grant_type": "client_credentials"}
        ),
        400,
    )

    # wrong password and unknown user look the same
    e1 = assert_envelope(
        await anon.post("/api/v1/auth/login", json={"username": "dana", "password": "nope"}), 401, "invalid_credentials"
    )
    e2 = assert_envelope(
        await anon.post("/api/v1/auth/login", json={"username": "ghost", "password": "nope"}),
        401,
        "invalid_credentials",
    )
    assert e1["message"] == e2["message"]
    assert_envelope(await anon.post("/api/v1/auth/login", json={"username": "dana"}), 422, "validation_error")
    assert_envelope(
        await anon.post("/api/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"}), 422
    )


async def test_refresh_rotates_and_the_old_token_is_invalid(api, anon):
    await create_user(api, "erin", ["viewer"])
    first = await login(anon, "erin")
    r = await anon.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200, r.text
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    assert second["session_id"] == first["session_id"]
    assert (await anon.get("/api/v1/auth/me", headers=bearer(second["access_token"]))).status_code == 200
    third = (await anon.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})).json()
    assert (await anon.get("/api/v1/auth/me", headers=bearer(third["access_token"]))).status_code == 200
    assert_envelope(
        await anon.post("/api/v1/auth/refresh", json={"refresh_token": "wf_rt_made-up"}), 401, "invalid_refresh_token"
    )


async def test_refresh_reuse_revokes_the_whole_family(api, anon, db):
    await create_user(api, "frank", ["operator"])
    stolen = await login(anon, "frank")
    other = await login(anon, "frank")  # a second session of the same user must survive
    rotated = (await anon.post("/api/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]})).json()

    err = assert_envelope(
        await anon.post("/api/v1/auth/refresh", json={"refresh_token": stolen["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    assert "already used" in err["message"]
    # every token of that family is dead: the rotated refresh token and the access tokens issued from it
    assert_envelope(await anon.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}), 401)
    assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(rotated["access_token"])), 401)
    assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(stolen["access_token"])), 401)
    async with db.read() as s:
        rows = list(
            (
                await s.execute(select(RefreshTokenRow).where(RefreshTokenRow.family_id == stolen["session_id"]))
            ).scalars()
        )
    assert len(rows) == 2 and all(r.revoked_at is not None for r in rows)
    assert {r.revoked_reason for r in rows} == {"reuse"}
    # the other session is untouched
    assert (await anon.get("/api/v1/auth/me", headers=bearer(other["access_token"]))).status_code == 200
    assert (await anon.post("/api/v1/auth/refresh", json={"refresh_token": other["refresh_token"]})).status_code == 200
    reuse = [
        a for a in await audit_rows(db, action="auth.refresh", outcome="failure") if a.details.get("reason") == "reused"
    ]
    assert reuse and reuse[0].actor == "frank"


async def test_concurrent_refreshes_with_one_token_let_one_through(api, anon):
    await create_user(api, "gina", ["viewer"])
    pair = await login(anon, "gina")
    results = await asyncio.gather(
        *(anon.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}) for _ in range(5))
    )
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) <= 1 and codes.count(401) >= 4, codes


async def test_expired_refresh_token_is_refused(api, anon, db):
    await create_user(api, "hal", ["viewer"])
    pair = await login(anon, "hal")
    async with db.write() as s:
        await s.execute(update(RefreshTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    err = assert_envelope(
        await anon.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}),
        401,
        "invalid_refresh_token",
    )
    assert "expired" in err["message"]


async def test_logout_revokes_the_access_token_and_the_session(api, anon, db):
    await create_user(api, "ivy", ["operator"])
    a = await login(anon, "ivy")
    b = await login(anon, "ivy")
    r = await anon.post("/api/v1/auth/logout", headers=bearer(a["access_token"]))
    assert r.status_code == 204, r.text
    assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(a["access_token"])), 401, "invalid_token")
    assert_envelope(await anon.post("/api/v1/auth/refresh", json={"refresh_token": a["refresh_token"]}), 401)
    assert_envelope(await anon.post("/api/v1/auth/logout", headers=bearer(a["access_token"])), 401)
    # the other session lives on until "sign out everywhere"
    assert (await anon.get("/api/v1/auth/me", headers=bearer(b["access_token"]))).status_code == 200
    c = await login(anon, "ivy")
    r = await anon.post("/api/v1/auth/logout", json={"all_sessions": True}, headers=bearer(c["access_token"]))
    assert r.status_code == 204, r.text
    for pair in (b, c):
        assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(pair["access_token"])), 401)
        assert_envelope(await anon.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401)
    assert [a.actor for a in await audit_rows(db, action="auth.logout", outcome="success")] == ["ivy", "ivy"]
    # logging in again works
    assert (
        await anon.get("/api/v1/auth/me", headers=bearer((await login(anon, "ivy"))["access_token"]))
    ).status_code == 200


def test_verified_tokens_cache_until_expiry_per_key_and_bounded(monkeypatch):
    """The per-process cache of verified access tokens: a hit skips verification only for the same token and
    key, and only until the token's expiry (plus leeway); the denylist is not its business (logout test above)."""
    from windflow.auth import tokens

    verified: list[str] = []
    real = tokens.decode_access_token

    def counting(token: str, *, key: str) -> dict:
        verified.append(token)
        return real(token, key=key)

    monkeypatch.setattr(tokens, "decode_access_token", counting)
    now = [time.time()]
    cache = tokens.VerifiedTokens(max_entries=2, clock=lambda: now[0])
    key = "k" * 40
    first, expires = issue_access_token(key=key, subject="ann", permissions={"services:read"}, ttl=300)
    assert cache.decode(first, key=key)["sub"] == "ann"
    assert cache.decode(first, key=key)["sub"] == "ann"
    assert verified == [first]  # the second presentation was a hit
    with pytest.raises(tokens.InvalidToken):  # another key verifies afresh, and fails
        cache.decode(first, key="x" * 40)
    now[0] = expires.timestamp() + tokens.LEEWAY_SECONDS + 1  # past its expiry: verified again
    cache.decode(first, key=key)
    assert verified == [first, first, first]
    others = [issue_access_token(key=key, subject=f"u{i}", permissions=set(), ttl=300)[0] for i in range(2)]
    for token in others:
        cache.decode(token, key=key)
    assert len(cache) == 2  # bounded: the oldest went
    cache.decode(first, key=key)
    assert verified[-1] == first


# --------------------------------------------------------------------------- bad tokens


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")  # the HS512 forgery
async def test_bad_tokens_get_401_in_the_envelope(anon, settings):
    key = settings.jwt_key()
    good = mint_token(settings)
    assert (await anon.get("/api/v1/services", headers=bearer(good))).status_code == 200

    past = datetime.now(UTC) - timedelta(hours=1)
    expired, _ = issue_access_token(key=key, subject="tester", permissions={"services:read"}, ttl=60, now=past)
    head, payload, sig = good.split(".")
    tampered_sig = f"{head}.{payload}.{sig[:-4]}{'AAAA' if not sig.endswith('AAAA') else 'BBBB'}"
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered_claims = f"{head}.{_b64({**claims, 'sub': 'mallory'})}.{sig}"
    alg_none = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64({**claims, 'sub': 'mallory'})}."
    alg_none_lib = jwt.encode({**claims, "sub": "mallory"}, None, algorithm="none")
    wrong_secret, _ = issue_access_token(key="y" * 48, subject="tester", permissions={"services:read"})
    hs512 = jwt.encode(claims, key, algorithm="HS512")
    not_access = jwt.encode({**claims, "typ": "refresh"}, key, algorithm="HS256")

    cases = {
        "expired": (expired, "expired"),
        "tampered signature": (tampered_sig, "invalid"),
        "tampered claims": (tampered_claims, "invalid"),
        "alg none": (alg_none, "invalid"),
        "alg none (library)": (alg_none_lib, "invalid"),
        "wrong secret": (wrong_secret, "invalid"),
        "other algorithm": (hs512, "invalid"),
        "not an access token": (not_access, "not an access token"),
        "garbage": ("not-a-jwt", "invalid"),
        "unknown API token": ("wf_pat_nope", "invalid API token"),
    }
    for name, (token, words) in cases.items():
        r = await anon.get("/api/v1/services", headers=bearer(token))
        err = assert_envelope(r, 401)
        assert words in err["message"], (name, err)
        assert r.headers["www-authenticate"] == "Bearer", name
    assert_envelope(await anon.get("/api/v1/services"), 401, "unauthorized")
    assert_envelope(await anon.get("/api/v1/services", headers={"Authorization": "Basic YTpi"}), 401, "unauthorized")
    assert_envelope(await anon.get("/api/v1/services", headers={"Authorization": "Bearer "}), 401)
    # 403 (known caller, missing permission) is a different answer from 401
    viewer = mint_token(settings, permissions={"services:read"}, roles=("viewer",))
    err = assert_envelope(await anon.post("/api/v1/services", json={}, headers=bearer(viewer)), 403, "forbidden")
    assert err["details"] == {"required": "configs:write"}


# --------------------------------------------------------------------------- personal API tokens


async def test_api_tokens_subset_shown_once_stored_hashed_and_revocable(api, anon, db):
    await create_user(api, "jo", ["operator"])
    session = bearer((await login(anon, "jo"))["access_token"])

    # more than the owner holds: refused; unknown permission: 422
    err = assert_envelope(
        await anon.post(
            "/api/v1/auth/tokens", headers=session, json={"name": "too-much", "permissions": ["users:manage"]}
        ),
        403,
    )
    assert err["details"]["not_held"] == ["users:manage"]
    assert_envelope(
        await anon.post(
            "/api/v1/auth/tokens", headers=session, json={"name": "typo", "permissions": ["services:reed"]}
        ),
        422,
    )

    r = await anon.post(
        "/api/v1/auth/tokens",
        headers=session,
        json={"name": "ci", "permissions": ["services:read"], "expires_in_days": 30},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    secret = created["token"]
    assert secret.startswith("wf_pat_") and created["prefix"] == secret[: len(created["prefix"])]
    assert created["permissions"] == ["services:read"] and created["expires_at"]

    # shown once: listings never carry it; the store keeps only its SHA-256
    listed = (await anon.get("/api/v1/auth/tokens", headers=session)).json()
    assert [t["id"] for t in listed] == [created["id"]] and "token" not in listed[0]
    assert secret not in json.dumps(listed)
    async with db.read() as s:
        row = (await s.execute(select(ApiTokenRow))).scalar_one()
    assert row.token_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in json.dumps([a.details for a in await audit_rows(db)])

    # the token authenticates as its owner, limited to its permissions
    pat = bearer(secret)
    assert (await anon.get("/api/v1/services", headers=pat)).status_code == 200
    assert_envelope(await anon.post("/api/v1/services", json={}, headers=pat), 403)
    me = (await anon.get("/api/v1/auth/me", headers=pat)).json()
    assert me["username"] == "jo" and me["kind"] == "api_token" and me["permissions"] == ["services:read"]
    assert_envelope(await anon.post("/api/v1/auth/tokens", json={"name": "x"}, headers=pat), 403)
    assert_envelope(await anon.post("/api/v1/auth/logout", headers=pat), 400)
    async with db.read() as s:
        assert (await s.execute(select(ApiTokenRow.last_used_at))).scalar_one() is not None

    # the owner losing the permission takes it from the token too; disabling the owner stops it
    assert (await api.patch("/api/v1/users/jo", json={"roles": ["operator", "viewer"]})).status_code == 200
    assert (await anon.get("/api/v1/services", headers=pat)).status_code == 200
    r = await api.patch("/api/v1/users/jo", json={"disabled": True})
    assert r.status_code == 200 and r.json()["disabled"] is True
    assert_envelope(await anon.get("/api/v1/services", headers=pat), 401, "account_disabled")
    assert (await api.patch("/api/v1/users/jo", json={"disabled": False})).status_code == 200
    assert (await anon.get("/api/v1/services", headers=pat)).status_code == 200

    # another user cannot revoke it (not even see it); the owner can
    await create_user(api, "kim", ["operator"])
    kim = bearer((await login(anon, "kim"))["access_token"])
    assert_envelope(await anon.delete(f"/api/v1/auth/tokens/{created['id']}", headers=kim), 404)
    assert (await anon.get("/api/v1/auth/tokens", headers=kim)).json() == []
    assert_envelope(await anon.get("/api/v1/auth/tokens", params={"all_users": True}, headers=kim), 403)
    jo = bearer((await login(anon, "jo"))["access_token"])
    assert (await anon.delete(f"/api/v1/auth/tokens/{created['id']}", headers=jo)).status_code == 204
    assert_envelope(await anon.get("/api/v1/services", headers=pat), 401)
    everything = (await api.get("/api/v1/auth/tokens", params={"all_users": True, "include_revoked": True})).json()
    assert everything[0]["revoked_at"] and everything[0]["owner"] == "jo"
    assert [a.target for a in await audit_rows(db, action="token.create", outcome="success")] == [created["id"]]
    assert [a.actor for a in await audit_rows(db, action="token.revoke", outcome="success")] == ["jo"]


async def test_expired_api_token_is_refused(api, anon, db):
    await create_user(api, "lee", ["viewer"])
    session = bearer((await login(anon, "lee"))["access_token"])
    secret = (await anon.post("/api/v1/auth/tokens", headers=session, json={"name": "short"})).json()["token"]
    assert (await anon.get("/api/v1/services", headers=bearer(secret))).status_code == 200
    async with db.write() as s:
        await s.execute(update(ApiTokenRow).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert_envelope(await anon.get("/api/v1/services", headers=bearer(secret)), 401)


# --------------------------------------------------------------------------- users and roles


async def test_user_management_and_lockout_guard(api, anon, db):
    assert_envelope(await api.post("/api/v1/users", json={"username": "x", "password": "short"}), 422)
    assert_envelope(await api.post("/api/v1/users", json={"username": "bad name", "password": PASSWORD}), 422)
    assert_envelope(
        await api.post("/api/v1/users", json={"username": "mo", "password": PASSWORD, "roles": ["wizard"]}), 422
    )
    created = await create_user(api, "mo", ["viewer"])
    assert created["roles"] == ["viewer"] and created["permissions"] == ["configs:read", "services:read"]
    assert_envelope(await api.post("/api/v1/users", json={"username": "MO", "password": PASSWORD}), 409)
    assert (await api.get("/api/v1/users/mo")).json()["username"] == "mo"
    assert_envelope(await api.get("/api/v1/users/nobody"), 404)

    # a role change ends the user's sessions (their tokens carry the old permissions)
    old = await login(anon, "mo")
    r = await api.patch("/api/v1/users/mo", json={"roles": ["operator"]})
    assert r.status_code == 200 and r.json()["roles"] == ["operator"]
    assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(old["access_token"])), 401)
    new = await login(anon, "mo")
    assert (
        "services:control"
        in (await anon.get("/api/v1/auth/me", headers=bearer(new["access_token"]))).json()["permissions"]
    )

    # disabled: sessions end and login is refused; an admin-set password works at once
    assert (await api.patch("/api/v1/users/mo", json={"disabled": True})).status_code == 200
    assert_envelope(await anon.get("/api/v1/auth/me", headers=bearer(new["access_token"])), 401)
    assert_envelope(
        await anon.post("/api/v1/auth/login", json={"username": "mo", "password": PASSWORD}), 403, "account_disabled"
    )
    r = await api.patch("/api/v1/users/mo", json={"disabled": False, "password": "another-long-pass"})
    assert r.status_code == 200, r.text
    await login(anon, "mo", "another-long-pass")

    # the user changes their own password: current one checked, every session ends
    mine = await login(anon, "mo", "another-long-pass")
    h = bearer(mine["access_token"])
    assert_envelope(
        await anon.post(
            "/api/v1/auth/password", headers=h, json={"current_password": "wrong", "new_password": "third-long-pass"}
        ),
        403,
    )
    r = await anon.post(
        "/api/v1/auth/password",
        headers=h,
        json={"current_password": "another-long-pass", "new_password": "third-long-pass"},
    )
    assert r.status_code == 204, r.text
    assert_envelope(await anon.get("/api/v1/auth/me", headers=h), 401)
    await login(anon, "mo", "third-long-pass")

    # listing, filters and pagination
    page = (await api.get("/api/v1/users", params={"limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    names = [u["username"] for u in (await api.get("/api/v1/users")).json()["items"]]
    assert names == ["admin", "mo"]  # the bootstrap admin of embedded mode, and mo
    assert [u["username"] for u in (await api.get("/api/v1/users", params={"role": "operator"})).json()["items"]] == [
        "mo"
    ]

    # the last user who can manage users cannot be disabled, demoted or deleted
    assert_envelope(await api.patch("/api/v1/users/admin", json={"disabled": True}), 409)
    assert_envelope(await api.patch("/api/v1/users/admin", json={"roles": ["viewer"]}), 409)
    assert_envelope(await api.delete("/api/v1/users/admin"), 409)
    assert (await api.get("/api/v1/users/admin")).json()["roles"] == ["admin"]

    assert (await api.delete("/api/v1/users/mo")).status_code == 204
    assert_envelope(await api.get("/api/v1/users/mo"), 404)
    assert_envelope(await anon.post("/api/v1/auth/login", json={"username": "mo", "password": "third-long-pass"}), 401)


async def test_custom_roles(api, anon):
    roles = {r["name"]: r for r in (await api.get("/api/v1/roles")).json()}
    assert set(roles) == {"admin", "operator", "viewer"} and all(r["builtin"] for r in roles.values())
    assert "users:manage" not in roles["operator"]["permissions"]
    r = await api.post("/api/v1/roles", json={"name": "auditor", "permissions": ["audit:read"]})
    assert r.status_code == 201, r.text
    assert_envelope(await api.post("/api/v1/roles", json={"name": "auditor", "permissions": []}), 409)
    assert_envelope(await api.post("/api/v1/roles", json={"name": "bad", "permissions": ["root"]}), 422)
    await create_user(api, "nia", ["auditor"])
    h = bearer((await login(anon, "nia"))["access_token"])
    assert (await anon.get("/api/v1/audit", headers=h)).status_code == 200
    assert_envelope(await anon.get("/api/v1/services", headers=h), 403)
    assert_envelope(await api.delete("/api/v1/roles/auditor"), 409)  # still assigned
    assert_envelope(await api.delete("/api/v1/roles/viewer"), 409)  # built in
    assert (await api.delete("/api/v1/users/nia")).status_code == 204
    assert (await api.delete("/api/v1/roles/auditor")).status_code == 204


# --------------------------------------------------------------------------- bootstrap admin


async def test_bootstrap_admin_with_configured_password(settings, db):
    configured = settings.model_copy(
        update={"bootstrap_admin_password": SecretStr("unattended-pass-1"), "bootstrap_admin_user": "root"}
    )
    async with running_app(configured, db) as (client, _):
        pair = await login(client, "root", "unattended-pass-1")
        me = (await client.get("/api/v1/auth/me", headers=bearer(pair["access_token"]))).json()
        assert me["roles"] == ["admin"] and "users:manage" in me["permissions"]
    # a second start creates nobody
    async with running_app(configured, db):
        pass
    rows = await audit_rows(db, action="user.bootstrap")
    assert [(a.actor, a.target) for a in rows] == [("system", "root")]


async def test_bootstrap_admin_generated_password_printed_once(settings, db):
    from windflow.api.accounts import bootstrap_auth

    out = io.StringIO()
    assert await bootstrap_auth(settings, db, out=out) == "admin"
    text = out.getvalue()
    password = text.split("password:")[1].split()[0]
    assert len(password) >= 16
    out2 = io.StringIO()
    assert await bootstrap_auth(settings, db, out=out2) is None and out2.getvalue() == ""
    async with running_app(settings, db) as (client, _):
        await login(client, "admin", password)
    # production mode without a configured password leaves it to `windflow users create-admin`
    async with db.write() as s:
        await s.execute(UserRow.__table__.delete())
    prod = settings.model_copy(update={"mode": Mode.PRODUCTION})
    assert await bootstrap_auth(prod, db, out=io.StringIO()) is None
    async with db.read() as s:
        assert (await s.execute(select(UserRow))).first() is None


# --------------------------------------------------------------------------- rate limit


async def test_login_rate_limit_per_user_and_per_address(settings, db):
    limited = settings.model_copy(
        update={"login_attempts_per_user": 3, "login_attempts_per_address": 5, "login_window": 60}
    )
    async with running_app(limited, db) as (client, app):
        admin = bearer(mint_token(limited))
        for name in ("olga", "pat"):
            r = await client.post("/api/v1/users", headers=admin, json={"username": name, "password": PASSWORD})
            assert r.status_code == 201
        for _ in range(3):
            assert (
                await client.post("/api/v1/auth/login", json={"username": "olga", "password": "x"})
            ).status_code == 401
        r = await client.post("/api/v1/auth/login", json={"username": "olga", "password": PASSWORD})
        err = assert_envelope(r, 429, "rate_limited")
        wait = int(r.headers["retry-after"])
        assert 1 <= wait <= 60 and err["details"]["retry_after"] == wait
        # another user from the same address still gets in, until the address is over its limit too
        await login(client, "pat")
        r = await client.post("/api/v1/auth/login", json={"username": "pat", "password": PASSWORD})
        assert_envelope(r, 429)
        assert (await client.get("/healthz")).status_code == 200
    failures = await audit_rows(db, action="auth.login", outcome="failure")
    reasons = [(a.actor, a.details.get("reason")) for a in failures]
    assert reasons.count(("olga", "bad_credentials")) == 3
    assert ("olga", "rate_limited") in reasons and ("pat", "rate_limited") in reasons
    assert all(a.details.get("client") for a in failures)


async def test_memory_limiter_window_slides():
    now = [1000.0]
    limiter = MemoryRateLimiter(clock=lambda: now[0])
    assert [await limiter.hit("k", limit=2, window=10) for _ in range(2)] == [None, None]
    assert await limiter.hit("k", limit=2, window=10) == 10
    now[0] += 4
    assert await limiter.hit("k", limit=2, window=10) == 6
    now[0] += 6.5
    assert await limiter.hit("k", limit=2, window=10) is None  # the first hit left the window
    await limiter.reset("k")
    assert await limiter.hit("k", limit=1, window=10) is None


async def test_redis_limiter_is_shared_and_sliding(redis_url):
    prefix = f"test:{time.time_ns()}:"
    a, b = RedisRateLimiter.from_url(redis_url, prefix=prefix), RedisRateLimiter.from_url(redis_url, prefix=prefix)
    try:
        assert await a.hit("k", limit=2, window=1) is None
        assert await b.hit("k", limit=2, window=1) is None  # another API replica shares the count
        assert await a.hit("k", limit=2, window=1) == 1
        await asyncio.sleep(1.1)
        assert await b.hit("k", limit=2, window=1) is None
        await a.reset("k")
    finally:
        await a.aclose()
        await b.aclose()


# --------------------------------------------------------------------------- audit trail


async def test_every_mutating_action_is_audited_with_request_id(api, anon, db, settings):
    rid = "req-audit-1"
    await api.post(
        "/api/v1/users",
        json={"username": "quinn", "password": PASSWORD, "roles": ["viewer"]},
        headers={"X-Request-ID": rid},
    )
    await anon.post("/api/v1/auth/login", json={"username": "quinn", "password": "wrong"})
    pair = await login(anon, "quinn")
    h = bearer(pair["access_token"])
    await anon.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    created = (await anon.post("/api/v1/auth/tokens", headers=h, json={"name": "t"})).json()
    await anon.delete(f"/api/v1/auth/tokens/{created['id']}", headers=h)
    await api.patch("/api/v1/users/quinn", json={"roles": ["operator"]})
    op = bearer((await login(anon, "quinn"))["access_token"])
    await anon.post("/api/v1/services", headers=op, json={"id": "web", "driver": "noop"})  # no code: no services:exec
    await anon.post("/api/v1/auth/logout", headers=op)
    await api.post("/api/v1/roles", json={"name": "temp", "permissions": []})
    await api.delete("/api/v1/roles/temp")
    await api.delete("/api/v1/users/quinn")
    # refused and failed requests are audited too, under the caller (or anonymous)
    viewer = bearer(mint_token(settings, permissions={"services:read"}, subject="vic", roles=("viewer",)))
    await anon.delete("/api/v1/services/web", headers=viewer)
    await anon.post("/api/v1/services", json={})
    await api.post("/api/v1/services", json={"id": "bad id!"})

    rows = await audit_rows(db)
    seen = {(a.action, a.outcome, a.actor) for a in rows}
    expected = {
        ("user.create", "success", "tester"),
        ("auth.login", "failure", "quinn"),
        ("auth.login", "success", "quinn"),
        ("auth.refresh", "success", "quinn"),
        ("token.create", "success", "quinn"),
        ("token.revoke", "success", "quinn"),
        ("user.update", "success", "tester"),
        ("service.create", "success", "quinn"),
        ("auth.logout", "success", "quinn"),
        ("role.create", "success", "tester"),
        ("role.delete", "success", "tester"),
        ("user.delete", "success", "tester"),
        ("DELETE /api/v1/services/{service_id}", "failure", "vic"),
        ("POST /api/v1/services", "failure", "anonymous"),
        ("POST /api/v1/services", "failure", "tester"),
    }
    assert expected <= seen, expected - seen
    by_action = {(a.action, a.outcome): a for a in rows}
    assert by_action[("user.create", "success")].request_id == rid
    assert all(a.request_id for a in rows if a.action != "user.bootstrap")
    denied = by_action[("DELETE /api/v1/services/{service_id}", "failure")]
    assert denied.target == "web" and denied.details["status"] == 403 and denied.details["code"] == "forbidden"
    assert by_action[("POST /api/v1/services", "failure")].details["status"] in (401, 422)
    update_row = by_action[("user.update", "success")]
    assert update_row.target == "quinn" and update_row.details["roles"]["to"] == ["operator"]
    assert all(isinstance(a.at, datetime) and a.at.tzinfo is not None for a in rows)
    # every record has its AUDIT event in the outbox (published to the bus by the relay)
    async with db.read() as s:
        from windflow.persistence.models import OutboxRow

        audit_events = (await s.execute(select(OutboxRow).where(OutboxRow.event_type == "AUDIT"))).scalars().all()
    assert len(audit_events) == len(rows)


async def test_audit_listing_filters_and_pagination(api, anon, settings):
    await create_user(api, "rex", ["viewer"])
    for _ in range(3):
        await anon.post("/api/v1/auth/login", json={"username": "rex", "password": "wrong"})
    await login(anon, "rex")
    start = datetime.now(UTC)
    await api.post(
        "/api/v1/services", json={"id": "svc1", "driver": "process", "config": {"command": ["python3", "-V"]}}
    )

    everything = (await api.get("/api/v1/audit", params={"limit": 500})).json()["items"]
    ids = [a["id"] for a in everything]
    assert ids == sorted(ids, reverse=True)  # newest first
    seen, cursor = [], None
    while True:
        page = (await api.get("/api/v1/audit", params={"limit": 2, **({"cursor": cursor} if cursor else {})})).json()
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ids

    fails = (await api.get("/api/v1/audit", params={"actor": "rex", "outcome": "failure"})).json()["items"]
    assert len(fails) == 3 and {a["action"] for a in fails} == {"auth.login"}
    assert all(a["details"]["reason"] == "bad_credentials" for a in fails)
    ok = (await api.get("/api/v1/audit", params={"action": "auth.login", "outcome": "success"})).json()["items"]
    assert [a["actor"] for a in ok] == ["rex"]
    by_target = (await api.get("/api/v1/audit", params={"target": "svc1"})).json()["items"]
    assert [a["action"] for a in by_target] == ["service.create"]
    recent = (await api.get("/api/v1/audit", params={"since": start.isoformat()})).json()["items"]
    assert [a["action"] for a in recent] == ["service.create"]
    older = (await api.get("/api/v1/audit", params={"until": start.isoformat()})).json()["items"]
    assert "service.create" not in {a["action"] for a in older} and older
    naive = start.replace(tzinfo=None).isoformat()
    assert [a["action"] for a in (await api.get("/api/v1/audit", params={"since": naive})).json()["items"]] == [
        "service.create"
    ]
    assert_envelope(await api.get("/api/v1/audit", params={"outcome": "maybe"}), 422)
    assert_envelope(await api.get("/api/v1/audit", params={"cursor": "!!"}), 422)
    viewer = bearer(mint_token(settings, permissions={"services:read", "configs:read"}, roles=("viewer",)))
    assert_envelope(await anon.get("/api/v1/audit", headers=viewer), 403)


# --------------------------------------------------------------------------- CLI against a real server


@pytest.mark.slow  # the CLI against a real API server
def test_cli_create_admin_login_tokens_logout(tmp_path, monkeypatch):
    """`windflow users create-admin`, then login/tokens/users/logout against a real uvicorn server (SQLite)."""
    import uvicorn
    from typer.testing import CliRunner

    from tests.servers import free_port
    from windflow.api.app import create_app
    from windflow.cli.main import app as cli
    from windflow.settings import Settings

    port = free_port()
    env = {
        "WINDFLOW_DATA_DIR": str(tmp_path / "data"),
        "WINDFLOW_JWT_SECRET": "z" * 48,
        "WINDFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'cli.db'}",
        "WINDFLOW_API_PORT": str(port),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD": "not-used-admin-exists",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WINDFLOW_TOKEN", raising=False)
    monkeypatch.delenv("WINDFLOW_API_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    r = runner.invoke(cli, ["users", "create-admin", "-u", "sam", "--password-stdin"], input="sam-secret-pass\n")
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["users", "create-admin", "-u", "sam", "--password-stdin"], input="sam-secret-pass\n")
    assert r.exit_code == 1 and "exists" in r.output

    server = uvicorn.Server(
        uvicorn.Config(create_app(Settings(_env_file=None)), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        r = runner.invoke(cli, ["login", "-u", "sam", "--password-stdin"], input="wrong-password\n")
        assert r.exit_code == 2
        r = runner.invoke(cli, ["login", "-u", "sam", "--password-stdin"], input="sam-secret-pass\n")
        assert r.exit_code == 0, r.output
        creds = json.loads((tmp_path / "config" / "windflow" / "credentials.json").read_text())
        assert creds["username"] == "sam" and creds["access_token"] and creds["refresh_token"]
        assert oct((tmp_path / "config" / "windflow" / "credentials.json").stat().st_mode & 0o777) == "0o600"

        r = runner.invoke(cli, ["users", "list"])
        assert r.exit_code == 0 and "sam" in r.output and "admin" in r.output, r.output
        r = runner.invoke(cli, ["tokens", "create", "deploy", "-p", "services:read"])
        assert r.exit_code == 0, r.output
        secret = r.output.strip().splitlines()[-1]
        assert secret.startswith("wf_pat_")
        resp = httpx2.get(f"http://127.0.0.1:{port}/api/v1/auth/me", headers=bearer(secret))
        assert resp.json()["permissions"] == ["services:read"]
        r = runner.invoke(cli, ["tokens", "list"])
        assert r.exit_code == 0 and "deploy" in r.output and secret not in r.output
        token_id = resp.json()["token_id"]
        assert runner.invoke(cli, ["tokens", "revoke", token_id]).exit_code == 0
        assert httpx2.get(f"http://127.0.0.1:{port}/api/v1/auth/me", headers=bearer(secret)).status_code == 401

        # an expired stored access token is refreshed transparently
        creds = json.loads((tmp_path / "config" / "windflow" / "credentials.json").read_text())
        creds["expires_at"] = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        (tmp_path / "config" / "windflow" / "credentials.json").write_text(json.dumps(creds))
        r = runner.invoke(cli, ["users", "list"])
        assert r.exit_code == 0, r.output
        fresh = json.loads((tmp_path / "config" / "windflow" / "credentials.json").read_text())
        assert fresh["refresh_token"] != creds["refresh_token"]

        r = runner.invoke(cli, ["logout"])
        assert r.exit_code == 0, r.output
        assert "access_token" not in json.loads((tmp_path / "config" / "windflow" / "credentials.json").read_text())
        assert (
            httpx2.get(f"http://127.0.0.1:{port}/api/v1/auth/me", headers=bearer(fresh["access_token"])).status_code
            == 401
        )
        r = runner.invoke(cli, ["users", "list"])
        assert r.exit_code == 2 and "windflow login" in r.output
    finally:
        server.should_exit = True
        thread.join(timeout=20)
