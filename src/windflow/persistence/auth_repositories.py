"""Repositories of users, roles, refresh-token families, API tokens and the access-token denylist.

Async, keyword-only ``session``, never commit: the unit of work (a route, the bootstrap, the CLI) owns it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.domain.errors import NotFound
from windflow.persistence.auth_models import (
    AccessDenylistRow,
    ApiTokenRow,
    RefreshTokenRow,
    RoleRow,
    UserRoleRow,
    UserRow,
)
from windflow.persistence.db import affected_rows
from windflow.persistence.models import utcnow
from windflow.persistence.repositories import MAX_LIMIT, Page, decode_cursor, encode_cursor

if TYPE_CHECKING:
    from windflow.persistence.db import Database


def _new_id() -> str:
    return uuid.uuid4().hex


def _dialect(session: AsyncSession) -> str:
    bind = session.bind
    return bind.dialect.name if bind is not None else "sqlite"


# --------------------------------------------------------------------------- roles


class RoleRepository:
    async def get_all(self, *, session: AsyncSession) -> list[RoleRow]:
        return list((await session.execute(select(RoleRow).order_by(RoleRow.name))).scalars())

    async def get(self, *, session: AsyncSession, name: str) -> RoleRow | None:
        return await session.get(RoleRow, name)

    async def require(self, *, session: AsyncSession, name: str) -> RoleRow:
        row = await self.get(session=session, name=name)
        if row is None:
            raise NotFound(f"role {name!r} not found", details={"role": name})
        return row

    async def existing(self, *, session: AsyncSession, names: Iterable[str]) -> set[str]:
        wanted = set(names)
        if not wanted:
            return set()
        stmt = select(RoleRow.name).where(RoleRow.name.in_(wanted))
        return set((await session.execute(stmt)).scalars())

    async def create(
        self,
        *,
        session: AsyncSession,
        name: str,
        permissions: Sequence[str],
        description: str = "",
        builtin: bool = False,
    ) -> RoleRow:
        row = RoleRow(
            name=name,
            permissions=sorted(set(permissions)),
            description=description,
            builtin=builtin,
            created_at=utcnow(),
            updated_at=utcnow(),
        )
        session.add(row)
        await session.flush()
        return row

    async def ensure_builtin(self, *, session: AsyncSession, roles: Mapping[str, Iterable[str]]) -> None:
        """Create the built-in roles, or bring their permissions up to date with the code."""
        for name, perms in roles.items():
            wanted = sorted(str(p) for p in perms)
            row = await self.get(session=session, name=name)
            if row is None:
                await self.create(
                    session=session, name=name, permissions=wanted, builtin=True, description=f"built-in {name} role"
                )
            elif sorted(row.permissions or []) != wanted or not row.builtin:
                row.permissions = wanted
                row.builtin = True
        await session.flush()

    async def members(self, *, session: AsyncSession, name: str) -> list[str]:
        stmt = (
            select(UserRow.username)
            .join(UserRoleRow, UserRoleRow.user_id == UserRow.id)
            .where(UserRoleRow.role_name == name)
            .order_by(UserRow.username)
        )
        return list((await session.execute(stmt)).scalars())

    async def delete(self, *, session: AsyncSession, name: str) -> None:
        await session.execute(delete(RoleRow).where(RoleRow.name == name))


# --------------------------------------------------------------------------- users


@dataclass
class UserWithRoles:
    user: UserRow
    roles: list[str]
    permissions: frozenset[str]


class UserRepository:
    async def count(self, *, session: AsyncSession) -> int:
        return int((await session.execute(select(func.count()).select_from(UserRow))).scalar_one())

    async def get(self, *, session: AsyncSession, username: str, for_update: bool = False) -> UserRow | None:
        stmt = select(UserRow).where(UserRow.username == username)
        if for_update and _dialect(session) == "postgresql":
            stmt = stmt.with_for_update()
        return (await session.execute(stmt)).scalar_one_or_none()

    async def require(self, *, session: AsyncSession, username: str, for_update: bool = False) -> UserRow:
        row = await self.get(session=session, username=username, for_update=for_update)
        if row is None:
            raise NotFound(f"user {username!r} not found", details={"username": username})
        return row

    async def by_id(self, *, session: AsyncSession, user_id: int) -> UserRow | None:
        return await session.get(UserRow, user_id)

    async def roles_of(self, *, session: AsyncSession, user_ids: Sequence[int]) -> dict[int, list[str]]:
        out: dict[int, list[str]] = {uid: [] for uid in user_ids}
        if not user_ids:
            return out
        stmt = (
            select(UserRoleRow.user_id, UserRoleRow.role_name)
            .where(UserRoleRow.user_id.in_(user_ids))
            .order_by(UserRoleRow.role_name)
        )
        for uid, role in (await session.execute(stmt)).all():
            out[uid].append(role)
        return out

    async def with_roles(self, *, session: AsyncSession, user: UserRow) -> UserWithRoles:
        roles = (await self.roles_of(session=session, user_ids=[user.id]))[user.id]
        return UserWithRoles(user, roles, await self.permissions_for_roles(session=session, roles=roles))

    async def permissions_for_roles(self, *, session: AsyncSession, roles: Sequence[str]) -> frozenset[str]:
        if not roles:
            return frozenset()
        stmt = select(RoleRow.permissions).where(RoleRow.name.in_(list(roles)))
        out: set[str] = set()
        for perms in (await session.execute(stmt)).scalars():
            out.update(str(p) for p in perms or [])
        return frozenset(out)

    async def get_all(
        self,
        *,
        session: AsyncSession,
        limit: int = 50,
        cursor: str | None = None,
        role: str | None = None,
        disabled: bool | None = None,
    ) -> Page[UserRow]:
        limit = max(1, min(limit, MAX_LIMIT))
        after = decode_cursor(cursor).get("after")
        stmt = select(UserRow)
        if isinstance(after, str):
            stmt = stmt.where(UserRow.username > after)
        if disabled is not None:
            stmt = stmt.where(UserRow.disabled == disabled)
        if role:
            stmt = stmt.where(UserRow.id.in_(select(UserRoleRow.user_id).where(UserRoleRow.role_name == role)))
        rows = list((await session.execute(stmt.order_by(UserRow.username).limit(limit + 1))).scalars())
        more = len(rows) > limit
        rows = rows[:limit]
        return Page(rows, encode_cursor({"after": rows[-1].username}) if more and rows else None)

    async def create(
        self,
        *,
        session: AsyncSession,
        username: str,
        password_hash: str,
        roles: Sequence[str],
        disabled: bool = False,
    ) -> UserRow:
        now = utcnow()
        row = UserRow(
            username=username,
            password_hash=password_hash,
            disabled=disabled,
            created_at=now,
            updated_at=now,
            password_changed_at=now,
        )
        session.add(row)
        await session.flush()
        await self.set_roles(session=session, user=row, roles=roles)
        return row

    async def set_roles(self, *, session: AsyncSession, user: UserRow, roles: Sequence[str]) -> None:
        await session.execute(delete(UserRoleRow).where(UserRoleRow.user_id == user.id))
        for name in sorted(set(roles)):
            session.add(UserRoleRow(user_id=user.id, role_name=name))
        user.updated_at = utcnow()
        await session.flush()

    async def set_password(self, *, session: AsyncSession, user: UserRow, password_hash: str) -> None:
        user.password_hash = password_hash
        user.password_changed_at = user.updated_at = utcnow()
        await session.flush()

    async def set_disabled(self, *, session: AsyncSession, user: UserRow, disabled: bool) -> None:
        user.disabled = disabled
        user.updated_at = utcnow()
        await session.flush()

    async def record_login(self, *, session: AsyncSession, user_id: int) -> None:
        await session.execute(update(UserRow).where(UserRow.id == user_id).values(last_login_at=utcnow()))

    async def delete(self, *, session: AsyncSession, user: UserRow) -> None:
        await session.delete(user)
        await session.flush()

    async def enabled_holders(self, *, session: AsyncSession, permission: str) -> list[str]:
        """User names of enabled users whose roles grant ``permission``."""
        roles = [
            r.name for r in (await session.execute(select(RoleRow))).scalars() if permission in (r.permissions or [])
        ]
        if not roles:
            return []
        stmt = (
            select(UserRow.username)
            .join(UserRoleRow, UserRoleRow.user_id == UserRow.id)
            .where(UserRoleRow.role_name.in_(roles), UserRow.disabled.is_(False))
            .distinct()
        )
        return sorted((await session.execute(stmt)).scalars())


# --------------------------------------------------------------------------- refresh tokens (sessions)


RotateStatus = Literal["ok", "unknown", "expired", "revoked", "reused"]


@dataclass
class RotateResult:
    status: RotateStatus
    user_id: int | None = None
    family_id: str | None = None
    expires_at: datetime | None = None


class RefreshTokenRepository:
    async def issue(
        self,
        *,
        session: AsyncSession,
        user_id: int,
        token_hash: str,
        ttl: int,
        family_id: str | None = None,
    ) -> RefreshTokenRow:
        now = utcnow()
        row = RefreshTokenRow(
            id=_new_id(),
            family_id=family_id or _new_id(),
            user_id=user_id,
            token_hash=token_hash,
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
        session.add(row)
        await session.flush()
        return row

    async def consume(self, *, session: AsyncSession, token_hash: str) -> RotateResult:
        """Mark the presented token used (exactly once). A token presented a second time revokes its family."""
        row = (
            await session.execute(select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash))
        ).scalar_one_or_none()
        if row is None:
            return RotateResult("unknown")
        result = RotateResult("ok", user_id=row.user_id, family_id=row.family_id)
        now = utcnow()
        if row.revoked_at is not None:
            result.status = "revoked"
            return result
        if row.used_at is not None:
            await self.revoke_family(session=session, family_id=row.family_id, reason="reuse")
            result.status = "reused"
            return result
        if row.expires_at <= now:
            await self.revoke_family(session=session, family_id=row.family_id, reason="expired")
            result.status = "expired"
            return result
        # the conditional update is the race guard: of two concurrent refreshes only one sees rowcount 1
        won = await session.execute(
            update(RefreshTokenRow)
            .where(
                RefreshTokenRow.id == row.id, RefreshTokenRow.used_at.is_(None), RefreshTokenRow.revoked_at.is_(None)
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        if affected_rows(won) != 1:
            await self.revoke_family(session=session, family_id=row.family_id, reason="reuse")
            result.status = "reused"
        return result

    async def family_of(self, *, session: AsyncSession, token_hash: str) -> RefreshTokenRow | None:
        stmt = select(RefreshTokenRow).where(RefreshTokenRow.token_hash == token_hash)
        return (await session.execute(stmt)).scalar_one_or_none()

    async def revoke_family(self, *, session: AsyncSession, family_id: str, reason: str) -> int:
        res = await session.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.family_id == family_id, RefreshTokenRow.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return affected_rows(res)

    async def live_families(self, *, session: AsyncSession, user_id: int) -> list[str]:
        stmt = (
            select(RefreshTokenRow.family_id)
            .where(RefreshTokenRow.user_id == user_id, RefreshTokenRow.revoked_at.is_(None))
            .distinct()
        )
        return sorted((await session.execute(stmt)).scalars())

    async def revoke_user(self, *, session: AsyncSession, user_id: int, reason: str) -> list[str]:
        """Revoke every session of a user; returns the family ids (to denylist their access tokens)."""
        families = await self.live_families(session=session, user_id=user_id)
        await session.execute(
            update(RefreshTokenRow)
            .where(RefreshTokenRow.user_id == user_id, RefreshTokenRow.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason)
            .execution_options(synchronize_session=False)
        )
        return families

    async def purge_expired(self, *, session: AsyncSession) -> int:
        res = await session.execute(delete(RefreshTokenRow).where(RefreshTokenRow.expires_at < utcnow()))
        return affected_rows(res)


# --------------------------------------------------------------------------- personal API tokens


@dataclass
class ApiTokenOwner:
    token: ApiTokenRow
    user: UserRow


class ApiTokenRepository:
    async def create(
        self,
        *,
        session: AsyncSession,
        user_id: int,
        name: str,
        token_hash: str,
        prefix: str,
        permissions: Sequence[str],
        expires_at: datetime | None = None,
    ) -> ApiTokenRow:
        row = ApiTokenRow(
            id=_new_id(),
            user_id=user_id,
            name=name,
            token_hash=token_hash,
            prefix=prefix,
            permissions=sorted(set(permissions)),
            created_at=utcnow(),
            expires_at=expires_at,
        )
        session.add(row)
        await session.flush()
        return row

    async def get_all(
        self,
        *,
        session: AsyncSession,
        user_id: int | None = None,
        include_revoked: bool = False,
    ) -> list[ApiTokenOwner]:
        stmt = select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        if user_id is not None:
            stmt = stmt.where(ApiTokenRow.user_id == user_id)
        if not include_revoked:
            stmt = stmt.where(ApiTokenRow.revoked_at.is_(None))
        rows = (await session.execute(stmt.order_by(ApiTokenRow.created_at.desc(), ApiTokenRow.id))).all()
        return [ApiTokenOwner(t, u) for t, u in rows]

    async def get(self, *, session: AsyncSession, token_id: str) -> ApiTokenOwner | None:
        stmt = (
            select(ApiTokenRow, UserRow)
            .join(UserRow, UserRow.id == ApiTokenRow.user_id)
            .where(ApiTokenRow.id == token_id)
        )
        found = (await session.execute(stmt)).first()
        return ApiTokenOwner(found[0], found[1]) if found else None

    async def by_hash(self, *, session: AsyncSession, token_hash: str) -> ApiTokenOwner | None:
        stmt = (
            select(ApiTokenRow, UserRow)
            .join(UserRow, UserRow.id == ApiTokenRow.user_id)
            .where(ApiTokenRow.token_hash == token_hash)
        )
        found = (await session.execute(stmt)).first()
        return ApiTokenOwner(found[0], found[1]) if found else None

    async def revoke(self, *, session: AsyncSession, token_id: str) -> bool:
        res = await session.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.id == token_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return affected_rows(res) > 0

    async def revoke_user(self, *, session: AsyncSession, user_id: int) -> int:
        """Revoke every live token of a user (a password change: whoever had the old one made tokens too)."""
        res = await session.execute(
            update(ApiTokenRow)
            .where(ApiTokenRow.user_id == user_id, ApiTokenRow.revoked_at.is_(None))
            .values(revoked_at=utcnow())
            .execution_options(synchronize_session=False)
        )
        return affected_rows(res)

    async def touch(self, *, session: AsyncSession, token_id: str, every: timedelta = timedelta(minutes=1)) -> None:
        """Record use, at most once per ``every`` (keeps authentication mostly read-only)."""
        now = utcnow()
        await session.execute(
            update(ApiTokenRow)
            .where(
                ApiTokenRow.id == token_id,
                or_(ApiTokenRow.last_used_at.is_(None), ApiTokenRow.last_used_at < now - every),
            )
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )


# --------------------------------------------------------------------------- access-token denylist


#: built once: constructing a statement costs more than running this one. A request presents one or two keys
#: (the token's id, its session's id): two fixed parameters, not an expanding ``IN``, which SQLAlchemy would
#: render anew on every run
_DENIED = (
    select(AccessDenylistRow.key)
    .where(
        or_(AccessDenylistRow.key == bindparam("key1"), AccessDenylistRow.key == bindparam("key2")),
        AccessDenylistRow.expires_at > bindparam("now", type_=AccessDenylistRow.expires_at.type),
    )
    .limit(1)
)


class DenylistRepository:
    async def add(self, *, session: AsyncSession, key: str, expires_at: datetime) -> None:
        values: dict[str, Any] = {"key": key, "expires_at": expires_at, "revoked_at": utcnow()}
        dialect = _dialect(session)
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        stmt = insert(AccessDenylistRow).values(**values)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={"expires_at": stmt.excluded.expires_at, "revoked_at": stmt.excluded.revoked_at},
        )
        await session.execute(stmt)

    async def add_many(self, *, session: AsyncSession, keys: Iterable[str], expires_at: datetime) -> None:
        for key in keys:
            await self.add(session=session, key=key, expires_at=expires_at)

    async def any_active(self, *, db: Database, keys: Sequence[str]) -> bool:
        """Whether any of ``keys`` is denied now: read on every request, so outside a session
        (:meth:`Database.rows`)."""
        now = utcnow()
        for first in range(0, len(keys), 2):
            pair = keys[first : first + 2]
            if await db.rows(_DENIED, {"key1": pair[0], "key2": pair[-1], "now": now}):
                return True
        return False

    async def purge_expired(self, *, session: AsyncSession) -> int:
        res = await session.execute(delete(AccessDenylistRow).where(AccessDenylistRow.expires_at <= utcnow()))
        return affected_rows(res)
