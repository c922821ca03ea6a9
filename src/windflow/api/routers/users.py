"""User and role management (``users:manage``)."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from windflow.api import accounts
from windflow.api.accounts import roles, users
from windflow.api.audit import audit_as, record
from windflow.api.auth_schemas import RoleCreate, RolePublic, UserCreate, UserPublic, UserUpdate
from windflow.api.deps import ReadSessionDep, RequestIdDep, ResourcesDep, WriteSessionDep
from windflow.api.errors import ERROR_RESPONSES, ApiError
from windflow.api.schemas import PageOf
from windflow.api.security import require
from windflow.auth.passwords import hash_password
from windflow.auth.permissions import BUILTIN_ROLES, Permission, Principal, unknown_permissions
from windflow.domain.errors import Conflict
from windflow.persistence.auth_models import UserRow
from windflow.persistence.auth_repositories import ApiTokenRepository

api_tokens = ApiTokenRepository()

router = APIRouter(prefix="/users", tags=["users"], responses=ERROR_RESPONSES)
roles_router = APIRouter(prefix="/roles", tags=["users"], responses=ERROR_RESPONSES)

CanManage = Annotated[Principal, Depends(require(Permission.USERS_MANAGE))]


async def _public(session: AsyncSession, row: UserRow) -> UserPublic:
    account = await users.with_roles(session=session, user=row)
    return UserPublic.of(row, account.roles, account.permissions)


async def _check_roles(session: AsyncSession, names: list[str]) -> None:
    missing = sorted(set(names) - await roles.existing(session=session, names=names))
    if missing:
        raise ApiError(
            422,
            f"unknown role(s): {', '.join(missing)}",
            code="validation_error",
            details=[{"loc": ["body", "roles"], "msg": f"unknown role {r!r}"} for r in missing],
        )


async def _keep_a_manager(session: AsyncSession) -> None:
    """Refuse a change that would leave nobody able to manage users (lock-out)."""
    if not await users.enabled_holders(session=session, permission=Permission.USERS_MANAGE.value):
        raise Conflict(
            "refused: no enabled user would be left with users:manage",
            details={"required": Permission.USERS_MANAGE.value},
        )


@router.get("", response_model=PageOf[UserPublic], summary="List users")
async def list_users(
    session: ReadSessionDep,
    _: CanManage,
    role: str | None = Query(None, max_length=64),
    disabled: bool | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, max_length=512),
) -> PageOf[UserPublic]:
    page = await users.get_all(session=session, limit=limit, cursor=cursor, role=role, disabled=disabled)
    by_id = await users.roles_of(session=session, user_ids=[u.id for u in page.items])
    items = []
    for row in page.items:
        perms = await users.permissions_for_roles(session=session, roles=by_id[row.id])
        items.append(UserPublic.of(row, by_id[row.id], perms))
    return PageOf[UserPublic](items=items, next_cursor=page.next_cursor)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=UserPublic, summary="Create a user")
@audit_as("user.create")
async def create_user(
    body: UserCreate,
    principal: CanManage,
    resources: ResourcesDep,
    request_id: RequestIdDep,
    response: Response,
) -> UserPublic:
    password_hash = await asyncio.to_thread(hash_password, body.password)  # outside the write transaction
    async with resources.db.write() as session:
        await _check_roles(session, body.roles)
        if await users.get(session=session, username=body.username) is not None:
            raise Conflict(f"user {body.username!r} exists already", details={"username": body.username})
        row = await users.create(
            session=session,
            username=body.username,
            password_hash=password_hash,
            roles=body.roles,
            disabled=body.disabled,
        )
        await record(
            session,
            principal,
            "user.create",
            row.username,
            request_id,
            details={"roles": sorted(set(body.roles)), "disabled": body.disabled},
        )
        public = await _public(session, row)
    if resources.relay is not None:
        resources.relay.notify()
    response.headers["Location"] = f"/api/v1/users/{row.username}"
    return public


@router.get("/{username}", response_model=UserPublic, summary="One user")
async def get_user(username: str, session: ReadSessionDep, _: CanManage) -> UserPublic:
    return await _public(session, await users.require(session=session, username=username))


@router.patch("/{username}", response_model=UserPublic, summary="Change roles, disable/enable, set password")
@audit_as("user.update")
async def update_user(
    username: str,
    body: UserUpdate,
    principal: CanManage,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> UserPublic:
    password_hash = await asyncio.to_thread(hash_password, body.password) if body.password else None
    async with resources.db.write() as session:
        row = await users.require(session=session, username=username, for_update=True)
        before = await users.with_roles(session=session, user=row)
        changes: dict[str, object] = {}
        if body.roles is not None and sorted(set(body.roles)) != sorted(before.roles):
            await _check_roles(session, body.roles)
            await users.set_roles(session=session, user=row, roles=body.roles)
            changes["roles"] = {"from": sorted(before.roles), "to": sorted(set(body.roles))}
        if body.disabled is not None and body.disabled != row.disabled:
            await users.set_disabled(session=session, user=row, disabled=body.disabled)
            changes["disabled"] = body.disabled
        if password_hash:
            await users.set_password(session=session, user=row, password_hash=password_hash)
            changes["password"] = "changed"
        if changes:
            await _keep_a_manager(session)
            if "roles" in changes or changes.get("disabled") is True or "password" in changes:
                # sessions carry the old permissions (or belong to a disabled account): end them now
                changes["sessions_ended"] = await accounts.revoke_user_sessions(
                    session=session, settings=resources.settings, user_id=row.id, reason="user_update"
                )
            if "password" in changes:  # a password reset (say, after a compromise) ends the API tokens too
                changes["api_tokens_revoked"] = await api_tokens.revoke_user(session=session, user_id=row.id)
            await record(session, principal, "user.update", row.username, request_id, details=changes)
        public = await _public(session, row)
    if resources.relay is not None:
        resources.relay.notify()
    return public


@router.delete("/{username}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a user (and their tokens)")
@audit_as("user.delete")
async def delete_user(
    username: str,
    principal: CanManage,
    session: WriteSessionDep,
    resources: ResourcesDep,
    request_id: RequestIdDep,
) -> Response:
    row = await users.require(session=session, username=username, for_update=True)
    ended = await accounts.revoke_user_sessions(
        session=session, settings=resources.settings, user_id=row.id, reason="user_deleted"
    )
    await users.delete(session=session, user=row)
    await _keep_a_manager(session)
    await record(session, principal, "user.delete", username, request_id, details={"sessions_ended": ended})
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --------------------------------------------------------------------------- roles


@roles_router.get("", response_model=list[RolePublic], summary="List roles and their permissions")
async def list_roles(session: ReadSessionDep, _: CanManage) -> list[RolePublic]:
    return [RolePublic.of(r) for r in await roles.get_all(session=session)]


@roles_router.post("", status_code=status.HTTP_201_CREATED, response_model=RolePublic, summary="Create a role")
@audit_as("role.create")
async def create_role(
    body: RoleCreate,
    principal: CanManage,
    session: WriteSessionDep,
    request_id: RequestIdDep,
) -> RolePublic:
    unknown = unknown_permissions(body.permissions)
    if unknown:
        raise ApiError(
            422,
            f"unknown permission(s): {', '.join(unknown)}",
            code="validation_error",
            details=[{"loc": ["body", "permissions"], "msg": f"unknown permission {p!r}"} for p in unknown],
        )
    if body.name in BUILTIN_ROLES or await roles.get(session=session, name=body.name) is not None:
        raise Conflict(f"role {body.name!r} exists already", details={"role": body.name})
    row = await roles.create(
        session=session, name=body.name, permissions=body.permissions, description=body.description
    )
    await record(session, principal, "role.create", row.name, request_id, details={"permissions": row.permissions})
    return RolePublic.of(row)


@roles_router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a custom role")
@audit_as("role.delete")
async def delete_role(name: str, principal: CanManage, session: WriteSessionDep, request_id: RequestIdDep) -> Response:
    row = await roles.require(session=session, name=name)
    if row.builtin:
        raise Conflict(f"role {name!r} is built in", details={"role": name})
    members = await roles.members(session=session, name=name)
    if members:
        raise Conflict(f"role {name!r} is still assigned", details={"users": members})
    await roles.delete(session=session, name=name)
    await record(session, principal, "role.delete", name, request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
