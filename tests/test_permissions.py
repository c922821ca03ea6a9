"""The permission matrix, derived from the app's own routes.

Every HTTP route must declare what it needs (``Depends(require(Permission.X))`` or ``Depends(authenticated)``)
unless it is in the public allow-list; a new route without a declaration fails here. Then, for every route and
each built-in role, a real user of that role (logged in through the API) must get 403 exactly when the role
lacks the permission, never 401/403 when it has it, and a request without a token must get 401.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx2
import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, APIWebSocketRoute, iter_route_contexts

from tests.auth_helpers import assert_envelope, bearer, create_user, login
from windflow.api.security import ANY_AUTHENTICATED
from windflow.auth.permissions import BUILTIN_ROLES, Permission

PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/hooks/alertmanager"),  # alert webhooks: authenticated by the hook's own token
    ("POST", "/api/v1/hooks/{hook_id}"),
    ("POST", "/api/v1/codec/ui/{token}/decode"),  # the Temporal UI's codec: authenticated by the path's token
}
"""Routes anyone may call. The OpenAPI document and the docs pages are plain Starlette routes, not API routes."""

SKIPPED_METHODS = {"HEAD", "OPTIONS"}
PROBE = "matrix-probe"


@pytest.fixture
def settings(settings):
    # many logins from one address: keep the login rate limit out of the way
    return settings.model_copy(update={"login_attempts_per_address": 10_000, "login_attempts_per_user": 10_000})


def declared(dependant: Dependant) -> set[Any]:
    """Permissions declared anywhere in a route's dependency tree (the ``.permission`` of ``require(...)``)."""
    found: set[Any] = set()
    for dep in dependant.dependencies:
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            found.add(permission)
        found |= declared(dep)
    return found


def api_routes(app) -> list[tuple[str, str, Any, Any]]:
    """``(method, path, route context, permission-or-None)`` for every HTTP API route, nested routers included."""
    out = []
    for rc in iter_route_contexts(app.routes):
        if not isinstance(rc.original_route, APIRoute):
            continue
        perms = declared(rc.dependant)
        assert len(perms) <= 1, f"{rc.path_format} declares several permissions: {perms}"
        for method in sorted((rc.methods or set()) - SKIPPED_METHODS):
            out.append((method, rc.path_format, rc, next(iter(perms), None)))
    return out


def websocket_paths(app) -> list[str]:
    return [
        rc.path_format for rc in iter_route_contexts(app.routes) if isinstance(rc.original_route, APIWebSocketRoute)
    ]


def concrete(path: str, rc) -> str:
    """Fill path parameters with plausible values: a number for ``int`` parameters, a made-up id otherwise."""
    types = {p.name: p.field_info.annotation for p in rc.dependant.path_params}

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        return "1" if types.get(name) is int else PROBE

    return re.sub(r"\{([^}]+)\}", fill, path)


def allowed(role: str, permission: Any) -> bool:
    return permission == ANY_AUTHENTICATED or permission in BUILTIN_ROLES[role]


async def test_every_route_declares_a_permission_or_is_public(app):
    routes = api_routes(app)
    assert len(routes) > 20
    missing = [f"{m} {p}" for m, p, _, perm in routes if perm is None and (m, p) not in PUBLIC]
    assert not missing, f"routes without a declared permission (add Depends(require(...))): {missing}"
    stale = PUBLIC - {(m, p) for m, p, _, _ in routes}
    assert not stale, f"public allow-list names routes that do not exist: {stale}"
    for method, path, _, perm in routes:
        assert perm is None or perm == ANY_AUTHENTICATED or isinstance(perm, Permission), (method, path, perm)
        if (method, path) in PUBLIC:
            assert perm is None, f"{method} {path} is public but declares {perm}"


async def test_every_dependency_and_endpoint_is_async(app):
    """FastAPI runs a plain ``def`` dependency or endpoint in its thread pool: a hand-off to a worker thread and
    back on every request that uses it (``get_resources`` alone is used by most routes)."""
    import inspect

    def sync_calls(dependant, path):  # type: ignore[no-untyped-def]
        call = dependant.call
        if call is not None:
            fn = call if inspect.isfunction(call) or inspect.ismethod(call) else type(call).__call__
            if not (inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)):
                yield f"{path}: {getattr(call, '__name__', call)}"
        for dep in dependant.dependencies:
            yield from sync_calls(dep, path)

    routes = api_routes(app)
    assert len(routes) > 20
    found = sorted({s for _, path, rc, _ in routes for s in sync_calls(rc.dependant, path)})
    assert not found, f"synchronous dependencies or endpoints (make them async def): {found}"


class Sessions:
    """One logged-in user per built-in role; logs in again if a request ended the session (e.g. logout)."""

    def __init__(self, client: httpx2.AsyncClient) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}

    async def token(self, role: str) -> str:
        if role not in self.tokens:
            self.tokens[role] = (await login(self.client, f"{role}-user"))["access_token"]
        return self.tokens[role]

    async def check_alive(self, role: str) -> None:
        r = await self.client.get("/api/v1/auth/me", headers=bearer(self.tokens[role]))
        if r.status_code == 401:
            del self.tokens[role]


async def test_permission_matrix_for_every_route_and_builtin_role(app, api, anon):
    for role in BUILTIN_ROLES:
        await create_user(api, f"{role}-user", [role])
    sessions = Sessions(anon)
    problems: list[str] = []
    checked = 0
    for method, path, rc, permission in api_routes(app):
        if (method, path) in PUBLIC:
            continue
        url = concrete(path, rc)
        body = {"json": {}} if method in ("POST", "PUT", "PATCH") else {}

        r = await anon.request(method, url, **body)
        if r.status_code != 401 or r.json().get("error", {}).get("code") != "unauthorized":
            problems.append(f"no token: {method} {path} -> {r.status_code} {r.text[:200]}")
        r = await anon.request(method, url, headers=bearer("not-a-token"), **body)
        if r.status_code != 401:
            problems.append(f"bad token: {method} {path} -> {r.status_code}")

        for role in BUILTIN_ROLES:
            r = await anon.request(method, url, headers=bearer(await sessions.token(role)), **body)
            checked += 1
            if allowed(role, permission):
                if r.status_code in (401, 403) or r.status_code >= 500 and r.status_code != 503:
                    problems.append(f"{role} has {permission}: {method} {path} -> {r.status_code} {r.text[:200]}")
                if r.status_code < 300 and method != "GET":
                    await sessions.check_alive(role)
            elif r.status_code != 403:
                problems.append(f"{role} lacks {permission}: {method} {path} -> {r.status_code} {r.text[:200]}")
            else:
                err = assert_envelope(r, 403, "forbidden")
                assert err["details"] == {"required": str(permission)}
    assert not problems, "\n".join(problems)
    assert checked >= 3 * 20


async def test_websocket_routes_refuse_connections_without_a_token(app):
    """WebSocket endpoints authenticate too: without a token the connection is closed, never served."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    paths = websocket_paths(app)

    def connect(path: str) -> str:
        client = TestClient(app)  # no lifespan: the app is already running in the test's loop
        try:
            with client.websocket_connect(path) as ws:
                # endpoints may also take the token as a first message: send an empty one rather than wait
                ws.send_json({"type": "auth", "token": ""})
                message = ws.receive()
                return f"served: {message}" if message.get("type") != "websocket.close" else "closed"
        except WebSocketDisconnect as exc:
            return f"closed {exc.code}"

    for path in paths:
        outcome = await asyncio.wait_for(asyncio.to_thread(connect, concrete_ws(path)), timeout=30)
        assert outcome.startswith("closed"), (path, outcome)


def concrete_ws(path: str) -> str:
    return re.sub(r"\{([^}]+)\}", PROBE, path)
