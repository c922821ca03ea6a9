"""Account operations shared by the auth/users routes, the API start-up and the CLI.

Sessions: a login opens a *family* of refresh tokens; each refresh rotates to a new token of the same family,
and every access JWT carries the family id as ``sid``. Revoking a session revokes the family's refresh tokens
and puts ``sid:<family>`` on the access-token denylist until the last access token of it would have expired.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import IO

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.api.audit import record
from windflow.auth.passwords import generate_password, hash_password
from windflow.auth.permissions import BUILTIN_ROLES
from windflow.auth.tokens import LEEWAY_SECONDS, REFRESH_PREFIX, issue_access_token, new_opaque_token
from windflow.persistence.auth_repositories import (
    DenylistRepository,
    RefreshTokenRepository,
    RoleRepository,
    UserRepository,
    UserWithRoles,
)
from windflow.persistence.db import Database
from windflow.settings import Mode, Settings

log = logging.getLogger("windflow.auth")

USERNAME_PATTERN = r"^[a-z0-9][a-z0-9._@-]{0,127}$"
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{1,63}$"
_USERNAME = re.compile(USERNAME_PATTERN)

roles = RoleRepository()
users = UserRepository()
refresh_tokens = RefreshTokenRepository()
denylist = DenylistRepository()


def normalize_username(name: str) -> str:
    return name.strip().lower()


def valid_username(name: str) -> bool:
    return bool(_USERNAME.match(name))


@dataclass
class IssuedSession:
    access_token: str
    access_expires_at: datetime
    refresh_token: str
    refresh_expires_at: datetime
    session_id: str


async def open_session(
    *,
    session: AsyncSession,
    settings: Settings,
    key: str,
    account: UserWithRoles,
    family_id: str | None = None,
) -> IssuedSession:
    """A new refresh token (new family, or the next one of ``family_id``) and an access token bound to it."""
    token, token_hash = new_opaque_token(REFRESH_PREFIX)
    row = await refresh_tokens.issue(
        session=session,
        user_id=account.user.id,
        token_hash=token_hash,
        ttl=settings.refresh_token_ttl,
        family_id=family_id,
    )
    access, expires = issue_access_token(
        key=key,
        subject=account.user.username,
        permissions=account.permissions,
        roles=tuple(account.roles),
        ttl=settings.access_token_ttl,
        session_id=row.family_id,
    )
    return IssuedSession(access, expires, token, row.expires_at, row.family_id)


def _access_horizon(settings: Settings) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=settings.access_token_ttl + LEEWAY_SECONDS + 1)


async def revoke_families(
    *,
    session: AsyncSession,
    settings: Settings,
    families: set[str] | list[str],
    reason: str,
) -> None:
    """Revoke sessions: their refresh tokens now, their access tokens through the denylist."""
    for family in sorted(set(families)):
        await refresh_tokens.revoke_family(session=session, family_id=family, reason=reason)
    await denylist.add_many(
        session=session, keys=[f"sid:{f}" for f in sorted(set(families))], expires_at=_access_horizon(settings)
    )


async def revoke_user_sessions(*, session: AsyncSession, settings: Settings, user_id: int, reason: str) -> int:
    families = await refresh_tokens.revoke_user(session=session, user_id=user_id, reason=reason)
    await denylist.add_many(session=session, keys=[f"sid:{f}" for f in families], expires_at=_access_horizon(settings))
    return len(families)


async def deny_access_token(
    *, session: AsyncSession, jti: str, expires_at: datetime | None, settings: Settings
) -> None:
    until = (expires_at + timedelta(seconds=LEEWAY_SECONDS + 1)) if expires_at else _access_horizon(settings)
    await denylist.add(session=session, key=f"jti:{jti}", expires_at=until)


async def purge_expired(*, session: AsyncSession) -> None:
    await denylist.purge_expired(session=session)
    await refresh_tokens.purge_expired(session=session)


# --------------------------------------------------------------------------- start-up


async def ensure_builtin_roles(db: Database) -> None:
    """Create or refresh admin/operator/viewer; concurrent starts (two API replicas) are tolerated."""
    for attempt in range(3):
        try:
            async with db.write() as session:
                await roles.ensure_builtin(session=session, roles=BUILTIN_ROLES)
            return
        except IntegrityError:
            if attempt == 2:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


class AdminExists(Exception):
    pass


async def create_admin(
    db: Database,
    *,
    username: str,
    password: str,
    actor: str = "system",
    action: str = "user.bootstrap",
    only_if_no_users: bool = False,
) -> UserWithRoles:
    """Create a user with the admin role (and its audit record). Raises :class:`AdminExists` when taken."""
    username = normalize_username(username)
    if not valid_username(username):
        raise ValueError(f"invalid user name {username!r}: letters, digits and . _ @ - (max 128)")
    password_hash = await asyncio.to_thread(hash_password, password)
    await ensure_builtin_roles(db)
    try:
        async with db.write() as session:
            if only_if_no_users and await users.count(session=session) > 0:
                raise AdminExists("users exist already")
            if await users.get(session=session, username=username) is not None:
                raise AdminExists(f"user {username!r} exists already")
            row = await users.create(session=session, username=username, password_hash=password_hash, roles=["admin"])
            await record(session, actor, action, username, None, details={"roles": ["admin"]})
            return await users.with_roles(session=session, user=row)
    except IntegrityError:
        raise AdminExists(f"user {username!r} exists already") from None


async def bootstrap_auth(settings: Settings, db: Database, *, out: IO[str] | None = None) -> str | None:
    """Seed the built-in roles; with no user at all, create the first admin.

    Embedded mode creates it on first start (generated password printed once to the console, or
    ``WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD``); production only does so when that password is given, otherwise
    ``windflow users create-admin`` is the way. Returns the admin's name when one was created.
    """
    await ensure_builtin_roles(db)
    given = settings.bootstrap_admin_password
    if settings.mode != Mode.EMBEDDED and given is None:
        return None
    async with db.read() as session:
        if await users.count(session=session) > 0:
            return None
    password = given.get_secret_value() if given is not None else generate_password()
    try:
        account = await create_admin(
            db, username=settings.bootstrap_admin_user, password=password, only_if_no_users=True
        )
    except AdminExists:
        return None  # another process was first
    name = account.user.username
    if given is None:
        stream = out or sys.stderr
        stream.write(
            "\n" + "=" * 72 + "\n"
            f"windflow created the first admin user.\n  user:     {name}\n  password: {password}\n"
            "This password is shown only once: sign in with `windflow login` and change it\n"
            "(POST /api/v1/auth/password), or set WINDFLOW_BOOTSTRAP_ADMIN_PASSWORD next time.\n" + "=" * 72 + "\n\n"
        )
        stream.flush()
    log.warning(
        "created the first admin user %r with %s",
        name,
        "the configured password" if given is not None else "a generated password, printed to the console",
    )
    return name
