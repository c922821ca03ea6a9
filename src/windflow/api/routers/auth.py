"""Sign-in, token rotation, sign-out, who-am-I, own password, personal API tokens."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from windflow.api import accounts
from windflow.api.accounts import users
from windflow.api.audit import audit_as, client_address, note, record
from windflow.api.auth_schemas import (
    ApiTokenCreate,
    ApiTokenCreated,
    ApiTokenPublic,
    LoginRequest,
    LogoutRequest,
    MePublic,
    PasswordChange,
    RefreshRequest,
    TokenPair,
    UserPublic,
)
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep
from windflow.api.errors import ERROR_RESPONSES, ApiError, ErrorEnvelope
from windflow.api.ratelimit import FallbackRateLimiter, MemoryRateLimiter, RateLimiter, RedisRateLimiter
from windflow.api.resources import Resources
from windflow.api.security import AuthenticatedDep
from windflow.auth.passwords import hash_password, verify_password
from windflow.auth.permissions import Permission, unknown_permissions
from windflow.auth.tokens import API_TOKEN_PREFIX, hash_opaque_token, new_opaque_token
from windflow.domain.errors import NotFound
from windflow.persistence.auth_repositories import ApiTokenRepository, RefreshTokenRepository

router = APIRouter(prefix="/auth", tags=["auth"], responses=ERROR_RESPONSES)
api_tokens = ApiTokenRepository()
refresh_tokens = RefreshTokenRepository()

_CHALLENGE = {"WWW-Authenticate": "Bearer"}
_RATE_LIMITED: dict[int | str, dict[str, Any]] = {
    429: {"model": ErrorEnvelope, "description": "too many attempts; see Retry-After"},
}


def _delay_detail(delay: int) -> dict[str, Any]:
    """The audit detail of a throttled attempt: the delay it imposed, if any."""
    return {"delay": delay} if delay else {}


def _notify(resources: Resources) -> None:
    if resources.relay is not None:
        resources.relay.notify()


# --------------------------------------------------------------------------- login


def login_limiter(resources: Resources) -> RateLimiter:
    limiter = resources.extras.get("login_limiter")
    if limiter is None:
        url = resources.settings.redis_url
        limiter = FallbackRateLimiter(RedisRateLimiter.from_url(url)) if url else MemoryRateLimiter()
        resources.extras["login_limiter"] = limiter
    return limiter


def _failure_key(kind: str, username: str, address: str) -> str:
    return f"{kind}:fail:{username}|{address}"


def _too_many(request: Request, wait: int, limit: str, what: str) -> ApiError:
    note(request, reason="rate_limited", limit=limit)
    return ApiError(
        429,
        f"too many {what}; retry in {wait} s",
        code="rate_limited",
        headers={"Retry-After": str(wait)},
        details={"retry_after": wait, "limit": limit},
    )


async def throttle(request: Request, resources: Resources, *, kind: str, username: str) -> None:
    """Before checking a password: 429 while this user and address are held after wrong passwords, or when the
    address (or this user from it) is over its sliding window. Another address is never held by these."""
    settings = resources.settings
    limiter = login_limiter(resources)
    address = client_address(request)
    what = "login attempts" if kind == "login" else "password attempts"
    wait = await limiter.held(_failure_key(kind, username, address))
    if wait is not None:
        raise _too_many(request, wait, "failures", what)
    window = float(settings.login_window)
    for key, limit, name in (
        (f"{kind}:addr:{address}", settings.login_attempts_per_address, "addr"),
        (f"{kind}:user:{username}|{address}", settings.login_attempts_per_user, "user"),
    ):
        wait = await limiter.hit(key, limit=limit, window=window)
        if wait is not None:
            raise _too_many(request, wait, name, what)


async def failed_attempt(request: Request, resources: Resources, *, kind: str, username: str) -> int:
    """Record a wrong password; returns the delay (seconds) it imposes on this user from this address."""
    settings = resources.settings
    return await login_limiter(resources).fail(
        _failure_key(kind, username, client_address(request)),
        free=settings.login_free_failures,
        base=1.0,
        cap=float(settings.login_delay_max),
        ttl=max(3600.0, 2.0 * settings.login_delay_max),
    )


async def succeeded(request: Request, resources: Resources, *, kind: str, username: str) -> None:
    address = client_address(request)
    limiter = login_limiter(resources)
    await limiter.reset(_failure_key(kind, username, address))
    await limiter.reset(f"{kind}:user:{username}|{address}")


async def login_credentials(request: Request) -> LoginRequest:
    """JSON ``{username, password}``, or the OAuth2 password form (what the docs' Authorize button sends)."""
    ctype = request.headers.get("content-type", "")
    data: Any
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()
        data = {k: v for k, v in form.items() if k in ("username", "password") and isinstance(v, str)}
        if form.get("grant_type") not in (None, "password"):
            raise ApiError(400, "grant_type must be 'password'", code="unsupported_grant_type")
    else:
        try:
            data = json.loads(await request.body() or b"null")
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to decode
            raise RequestValidationError([{"loc": ("body",), "msg": "invalid JSON", "type": "json_invalid"}]) from None
    try:
        creds = LoginRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
    note(request, actor=creds.username, target=creds.username)
    return creds


async def limit_login(
    request: Request,
    creds: Annotated[LoginRequest, Depends(login_credentials)],
    resources: ResourcesDep,
) -> LoginRequest:
    """429 with Retry-After while this user is held at this address, or beyond the sliding windows."""
    await throttle(request, resources, kind="login", username=creds.username)
    return creds


_LOGIN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": LoginRequest.model_json_schema()},
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "required": ["username", "password"],
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["password"]},
                        "username": {"type": "string"},
                        "password": {"type": "string", "format": "password"},
                    },
                }
            },
        },
    }
}


def _pair(issued: accounts.IssuedSession) -> TokenPair:
    expires_in = max(0, int((issued.access_expires_at - datetime.now(UTC)).total_seconds()))
    return TokenPair(
        access_token=issued.access_token,
        expires_in=expires_in,
        expires_at=issued.access_expires_at,
        refresh_token=issued.refresh_token,
        refresh_expires_at=issued.refresh_expires_at,
        session_id=issued.session_id,
    )


@router.post(
    "/login",
    response_model=TokenPair,
    summary="Sign in: access token + refresh token",
    openapi_extra=_LOGIN_BODY,
    responses=_RATE_LIMITED,
)
@audit_as("auth.login")
async def login(
    request: Request,
    creds: Annotated[LoginRequest, Depends(limit_login)],
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> TokenPair:
    async with resources.db.read() as session:
        user = await users.get(session=session, username=creds.username)
    ok, new_hash = await asyncio.to_thread(verify_password, creds.password, user.password_hash if user else None)
    if not ok or user is None:
        delay = await failed_attempt(request, resources, kind="login", username=creds.username)
        note(request, reason="bad_credentials", **_delay_detail(delay))
        raise ApiError(401, "wrong user name or password", code="invalid_credentials", headers=_CHALLENGE)
    if user.disabled:
        note(request, reason="disabled")
        raise ApiError(403, "this account is disabled", code="account_disabled")
    async with resources.db.write() as session:
        row = await users.require(session=session, username=creds.username)
        if new_hash:
            await users.set_password(session=session, user=row, password_hash=new_hash)
        await users.record_login(session=session, user_id=row.id)
        account = await users.with_roles(session=session, user=row)
        issued = await accounts.open_session(
            session=session, settings=resources.settings, key=resources.jwt_key, account=account
        )
        await accounts.purge_expired(session=session)
        await record(
            session,
            row.username,
            "auth.login",
            row.username,
            request_id,
            details={"session": issued.session_id, "client": client_address(request)},
        )
    _notify(resources)
    await succeeded(request, resources, kind="login", username=creds.username)
    return _pair(issued)


@router.post("/refresh", response_model=TokenPair, summary="Rotate: a used refresh token is invalid afterwards")
@audit_as("auth.refresh")
async def refresh(
    request: Request,
    body: RefreshRequest,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> TokenPair:
    issued: accounts.IssuedSession | None = None
    async with resources.db.write() as session:
        result = await refresh_tokens.consume(session=session, token_hash=hash_opaque_token(body.refresh_token))
        owner = await users.by_id(session=session, user_id=result.user_id) if result.user_id is not None else None
        reason: str = result.status
        if owner is not None:
            note(request, actor=owner.username, target=owner.username)
        if result.status == "ok" and (owner is None or owner.disabled):
            reason = "account_disabled"
        if result.family_id and reason != "ok":
            # reuse of a rotated token means it leaked: the whole family goes, access tokens included
            await accounts.revoke_families(
                session=session, settings=resources.settings, families=[result.family_id], reason=reason
            )
        if reason == "ok" and owner is not None:
            account = await users.with_roles(session=session, user=owner)
            issued = await accounts.open_session(
                session=session,
                settings=resources.settings,
                key=resources.jwt_key,
                account=account,
                family_id=result.family_id,
            )
            await record(
                session,
                owner.username,
                "auth.refresh",
                owner.username,
                request_id,
                details={"session": result.family_id},
            )
    _notify(resources)
    if issued is None:
        note(request, reason=reason, session=result.family_id)
        messages = {
            "reused": "refresh token already used: the session is revoked, sign in again",
            "expired": "refresh token expired",
            "revoked": "refresh token revoked",
            "account_disabled": "the account is disabled",
        }
        raise ApiError(
            401, messages.get(reason, "invalid refresh token"), code="invalid_refresh_token", headers=_CHALLENGE
        )
    return _pair(issued)


@router.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="Sign out: revoke this session")
@audit_as("auth.logout")
async def logout(
    principal: AuthenticatedDep,
    session: WriteSessionDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
    body: Annotated[LogoutRequest | None, Body()] = None,
) -> Response:
    if principal.kind != "user":
        raise ApiError(
            400, "API tokens do not sign out; revoke them with DELETE /api/v1/auth/tokens/{id}", code="bad_request"
        )
    body = body or LogoutRequest()
    families: set[str] = {principal.session_id} if principal.session_id else set()
    user = await users.get(session=session, username=principal.name)
    if body.refresh_token and user is not None:
        row = await refresh_tokens.family_of(session=session, token_hash=hash_opaque_token(body.refresh_token))
        if row is not None and row.user_id == user.id:
            families.add(row.family_id)
    if body.all_sessions and user is not None:
        families.update(await refresh_tokens.live_families(session=session, user_id=user.id))
    await accounts.revoke_families(session=session, settings=resources.settings, families=families, reason="logout")
    if principal.token_id:
        await accounts.deny_access_token(
            session=session, jti=principal.token_id, expires_at=principal.expires_at, settings=resources.settings
        )
    await record(
        session,
        principal,
        "auth.logout",
        principal.name,
        request_id,
        details={"sessions": sorted(families), "all_sessions": body.all_sessions},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/me", response_model=MePublic, summary="Who am I: user, roles, permissions")
async def me(principal: AuthenticatedDep, session: ReadSessionDep) -> MePublic:
    user = await users.get(session=session, username=principal.name)
    public = None
    if user is not None:
        account = await users.with_roles(session=session, user=user)
        public = UserPublic.of(user, account.roles, account.permissions)
    return MePublic(
        username=principal.name,
        kind=principal.kind,
        roles=sorted(principal.roles),
        permissions=sorted(principal.permissions),
        token_id=principal.token_id,
        session_id=principal.session_id,
        expires_at=principal.expires_at,
        user=public,
    )


@router.post(
    "/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password (all your sessions and API tokens end)",
    responses=_RATE_LIMITED,
)
@audit_as("auth.password_change")
async def change_password(
    request: Request,
    body: PasswordChange,
    principal: AuthenticatedDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> Response:
    if principal.kind != "user":
        raise ApiError(403, "sign in with your password to change it", code="forbidden")
    await throttle(request, resources, kind="password", username=principal.name)
    async with resources.db.read() as session:
        user = await users.get(session=session, username=principal.name)
    if user is None:
        raise NotFound(f"user {principal.name!r} not found")
    ok, _ = await asyncio.to_thread(verify_password, body.current_password, user.password_hash)
    if not ok:
        delay = await failed_attempt(request, resources, kind="password", username=principal.name)
        note(request, reason="bad_current_password", **_delay_detail(delay))
        raise ApiError(403, "the current password is wrong", code="invalid_credentials")
    await succeeded(request, resources, kind="password", username=principal.name)
    new_hash = await asyncio.to_thread(hash_password, body.new_password)
    async with resources.db.write() as session:
        row = await users.require(session=session, username=principal.name)
        await users.set_password(session=session, user=row, password_hash=new_hash)
        ended = await accounts.revoke_user_sessions(
            session=session, settings=resources.settings, user_id=row.id, reason="password_change"
        )
        tokens_revoked = await api_tokens.revoke_user(session=session, user_id=row.id)
        await record(
            session,
            principal,
            "auth.password_change",
            principal.name,
            request_id,
            details={"sessions_ended": ended, "api_tokens_revoked": tokens_revoked},
        )
    _notify(resources)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- personal API tokens


@router.post(
    "/tokens",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiTokenCreated,
    summary="Create a personal API token (the secret is shown only in this answer)",
)
@audit_as("token.create")
async def create_token(
    body: ApiTokenCreate,
    principal: AuthenticatedDep,
    session: WriteSessionDep,
    request_id: RequestIdDep,
    resources: ResourcesDep,
) -> ApiTokenCreated:
    if principal.kind != "user":
        raise ApiError(
            403, "API tokens are created from a signed-in session, not with another API token", code="forbidden"
        )
    user = await users.get(session=session, username=principal.name)
    if user is None or user.disabled:
        raise ApiError(403, "API tokens belong to a stored, enabled user", code="forbidden")
    account = await users.with_roles(session=session, user=user)
    held = principal.permissions & account.permissions
    wanted = set(body.permissions) if body.permissions is not None else set(held)
    unknown = unknown_permissions(wanted)
    if unknown:
        raise ApiError(
            422,
            f"unknown permission(s): {', '.join(unknown)}",
            code="validation_error",
            details=[{"loc": ["body", "permissions"], "msg": f"unknown permission {p!r}"} for p in unknown],
        )
    excess = sorted(wanted - held)
    if excess:
        raise ApiError(
            403,
            f"a token cannot have permissions you do not hold: {', '.join(excess)}",
            code="forbidden",
            details={"not_held": excess},
        )
    settings = resources.settings
    days = body.expires_in_days or settings.api_token_ttl_days
    if days > settings.api_token_max_ttl_days:
        raise ApiError(
            422,
            f"expires_in_days: at most {settings.api_token_max_ttl_days}",
            code="validation_error",
            details=[{"loc": ["body", "expires_in_days"], "msg": f"at most {settings.api_token_max_ttl_days} days"}],
        )
    expires = datetime.now(UTC) + timedelta(days=days)
    token, token_hash = new_opaque_token(API_TOKEN_PREFIX)
    row = await api_tokens.create(
        session=session,
        user_id=user.id,
        name=body.name,
        token_hash=token_hash,
        prefix=token[: len(API_TOKEN_PREFIX) + 6],
        permissions=sorted(wanted),
        expires_at=expires,
    )
    await record(
        session,
        principal,
        "token.create",
        row.id,
        request_id,
        details={"name": row.name, "permissions": row.permissions, "expires_at": expires.isoformat()},
    )
    return ApiTokenCreated(**ApiTokenPublic.of(row, user.username).model_dump(), token=token)


@router.get("/tokens", response_model=list[ApiTokenPublic], summary="Your API tokens (never their secrets)")
async def list_tokens(
    principal: AuthenticatedDep,
    session: ReadSessionDep,
    include_revoked: bool = False,
    all_users: bool = Query(False, description="Every user's tokens (needs users:manage)"),
) -> list[ApiTokenPublic]:
    if all_users:
        if not principal.can(Permission.USERS_MANAGE.value):
            raise ApiError(
                403,
                "listing every user's tokens needs users:manage",
                code="forbidden",
                details={"required": Permission.USERS_MANAGE.value},
            )
        found = await api_tokens.get_all(session=session, include_revoked=include_revoked)
    else:
        user = await users.get(session=session, username=principal.name)
        if user is None:
            return []
        found = await api_tokens.get_all(session=session, user_id=user.id, include_revoked=include_revoked)
    return [ApiTokenPublic.of(f.token, f.user.username) for f in found]


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Revoke an API token")
@audit_as("token.revoke")
async def revoke_token(
    token_id: str,
    principal: AuthenticatedDep,
    session: WriteSessionDep,
    request_id: RequestIdDep,
) -> Response:
    found = await api_tokens.get(session=session, token_id=token_id)
    if found is None or (found.user.username != principal.name and not principal.can(Permission.USERS_MANAGE.value)):
        raise NotFound(f"API token {token_id!r} not found", details={"token_id": token_id})
    changed = await api_tokens.revoke(session=session, token_id=token_id)
    await record(
        session,
        principal,
        "token.revoke",
        token_id,
        request_id,
        details={"name": found.token.name, "owner": found.user.username, "already_revoked": not changed},
    )
    return Response(status_code=status.HTTP_204_NO_CONTENT)
