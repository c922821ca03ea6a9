"""Who is calling: a bearer token becomes a :class:`Principal`; routes declare what they need.

Two kinds of bearer token are accepted:

* an access JWT from ``POST /api/v1/auth/login`` (HS256; refused once its ``jti`` or its session is revoked);
* a personal API token (``wf_pat_...``), looked up by its SHA-256; it acts as its owner, limited to its own
  permissions intersected with the owner's current ones, and stops working when revoked, expired or when the
  owner is disabled or deleted.

Every route declares its permission with ``Depends(require(Permission.X))`` or, when any signed-in caller may
use it, ``Depends(authenticated)``; the permission-matrix test walks the app's routes and fails on a route that
declares neither and is not public.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, OAuth2PasswordBearer
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from windflow.api.errors import ApiError
from windflow.api.resources import Resources
from windflow.auth.permissions import Permission, Principal
from windflow.auth.tokens import (
    InvalidToken,
    VerifiedTokens,
    hash_opaque_token,
    is_api_token,
    principal_from_claims,
)
from windflow.persistence.auth_repositories import ApiTokenRepository, DenylistRepository, UserRepository

log = logging.getLogger("windflow.api.security")

LOGIN_PATH = "/api/v1/auth/login"
ANY_AUTHENTICATED = "authenticated"
"""The pseudo-permission of routes open to every signed-in caller (``/auth/me``, own API tokens, logout)."""

bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/login, or an API token")
oauth2 = OAuth2PasswordBearer(
    tokenUrl=LOGIN_PATH,
    auto_error=False,
    description="Sign in with user name and password (the docs' Authorize button)",
)

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
TOUCH_EVERY = timedelta(minutes=1)  # an API token's last_used_at is recorded at most this often
_denylist = DenylistRepository()
_verified = VerifiedTokens()
_api_tokens = ApiTokenRepository()
_users = UserRepository()


def _unauthorized(message: str, code: str = "invalid_token") -> ApiError:
    return ApiError(401, message, code=code, headers=_CHALLENGE)


async def authenticate(conn: HTTPConnection, token: str) -> Principal:
    """Turn a presented token into a principal (HTTP requests and WebSockets alike); 401 ``ApiError`` if not."""
    resources = conn.app.state.resources
    if not token:
        raise _unauthorized("authentication required", code="unauthorized")
    if is_api_token(token):
        principal = await _api_token_principal(resources, token)
    else:
        try:
            claims = _verified.decode(token, key=resources.jwt_key)
        except InvalidToken as exc:
            raise _unauthorized(str(exc)) from None
        principal = principal_from_claims(claims)
        keys = [f"jti:{principal.token_id}"] + ([f"sid:{principal.session_id}"] if principal.session_id else [])
        if await _denylist.any_active(db=resources.db, keys=keys):
            raise _unauthorized("token revoked")
    conn.state.principal = principal
    return principal


async def _api_token_principal(resources: Resources, token: str) -> Principal:
    db = resources.db
    async with db.read() as session:
        found = await _api_tokens.by_hash(session=session, token_hash=hash_opaque_token(token))
        if found is None:
            raise _unauthorized("invalid API token")
        row, user = found.token, found.user
        now = datetime.now(UTC)
        if row.revoked_at is not None:
            raise _unauthorized("API token revoked")
        if row.expires_at is not None and row.expires_at <= now:
            raise _unauthorized("API token expired")
        if user.disabled:
            raise _unauthorized("the token's owner is disabled", code="account_disabled")
        owner = await _users.with_roles(session=session, user=user)
    if row.last_used_at is None or row.last_used_at < now - TOUCH_EVERY:  # else touch() would change nothing:
        try:  # no write transaction (on SQLite: no wait for the one write slot) on most requests
            async with db.write() as session:
                await _api_tokens.touch(session=session, token_id=row.id, every=TOUCH_EVERY)
        except Exception as exc:  # bookkeeping only: never refuse a valid token over it
            log.warning("could not record API token use: %s", exc)
    return Principal(
        name=user.username,
        permissions=frozenset(row.permissions or []) & owner.permissions,
        roles=tuple(owner.roles),
        kind="api_token",
        token_id=row.id,
        expires_at=row.expires_at,
    )


def _forbidden(permission: str) -> ApiError:
    return ApiError(403, f"permission {permission!r} required", code="forbidden", details={"required": permission})


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    _password_flow: Annotated[str | None, Depends(oauth2)] = None,
) -> Principal:
    known = getattr(request.state, "principal", None)
    if isinstance(known, Principal):  # already authenticated for this request (by the route guard)
        return known
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'", code="unauthorized")
    return await authenticate(request, credentials.credentials)


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """Dependency declaring the permission a route needs; the route table is checked against it in tests."""

    async def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(permission.value):
            raise _forbidden(permission.value)
        return principal

    _check.permission = permission  # type: ignore[attr-defined]
    _check.__name__ = f"require_{permission.name.lower()}"
    return _check


async def authenticated(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
    """Dependency of routes open to any signed-in caller (declares :data:`ANY_AUTHENTICATED`)."""
    return principal


authenticated.permission = ANY_AUTHENTICATED  # type: ignore[attr-defined]

AuthenticatedDep = Annotated[Principal, Depends(authenticated)]


# --------------------------------------------------------------------------- authorize before anything else


def declared_permission(route: object) -> str | None:
    """The permission a route declares anywhere in its dependency tree (``None``: a public route)."""
    cached = getattr(route, "_windflow_permission", False)
    if cached is not False:
        return None if cached is None else str(cached)
    found: str | None = None
    stack = list(getattr(getattr(route, "dependant", None), "dependencies", []))
    while stack and found is None:
        dep = stack.pop()
        permission = getattr(dep.call, "permission", None)
        if permission is not None:
            found = str(permission)
        stack.extend(dep.dependencies)
    route._windflow_permission = found  # type: ignore[attr-defined]
    return found


async def authorize_first(conn: HTTPConnection) -> None:
    """Router-level guard: checks the route's declared permission before any other dependency runs.

    FastAPI resolves a route's dependencies in parameter order, so a route listing ``TemporalDep`` or a write
    session before its ``require(...)`` would contact Temporal or lock the store for an anonymous caller. This
    guard runs first whatever the order (401/403 before any work); ``require`` then finds the principal cached.
    """
    if conn.scope.get("type") != "http":
        return  # WebSocket endpoints authenticate themselves (token in the query, header or first message)
    permission = declared_permission(conn.scope.get("route"))
    if permission is None:
        return
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("authentication required: send 'Authorization: Bearer <token>'", code="unauthorized")
    principal = await authenticate(conn, token.strip())
    if permission != ANY_AUTHENTICATED and not principal.can(permission):
        raise _forbidden(permission)


# --------------------------------------------------------------------------- long-lived connections


class Revalidator:
    """Re-checks the tokens of long-lived connections (WebSockets, followed logs): a revocation, logout, password
    change or disabled account ends them within ``ws_revalidate_interval``. One look-up per distinct token per
    ``interval / 2``, however many connections present it (a dashboard's tabs, listeners sharing an API token)."""

    def __init__(self, interval: float) -> None:
        self.ttl = interval / 2
        self._checks: dict[str, tuple[float, asyncio.Future[Principal]]] = {}

    async def check(self, conn: HTTPConnection, token: str) -> Principal:
        """The token's principal now; 401 ``ApiError`` once it is no longer good."""
        now = time.monotonic()
        entry = self._checks.get(token)
        if entry is None or now - entry[0] >= self.ttl:
            if len(self._checks) > 1000:
                self._checks = {k: v for k, v in self._checks.items() if now - v[0] < self.ttl}
            future = asyncio.ensure_future(authenticate(conn, token))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())  # retrieved: no warning
            entry = (now, future)
            self._checks[token] = entry
        return await asyncio.shield(entry[1])


def revalidator(app: Starlette, interval: float) -> Revalidator:
    """The app's one :class:`Revalidator`."""
    state = app.state
    found = getattr(state, "token_revalidator", None)
    if found is None:
        found = state.token_revalidator = Revalidator(interval)
    return found


def bearer_token(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None
