"""Request and response models of the auth, users, roles and API-token routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator

from windflow.api.accounts import ROLE_PATTERN, USERNAME_PATTERN, normalize_username
from windflow.api.bodies import RequestBody
from windflow.auth.passwords import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH
from windflow.persistence.auth_models import ApiTokenRow, RoleRow, UserRow

Password = Field(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)


class LoginRequest(RequestBody):
    model_config = ConfigDict(json_schema_extra={"examples": [{"username": "admin", "password": "..."}]})

    username: str = Field(min_length=1, max_length=128)
    password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)

    @field_validator("username")
    @classmethod
    def _norm(cls, value: str) -> str:
        return normalize_username(value)


class TokenPair(BaseModel):
    access_token: str = Field(description="Send as 'Authorization: Bearer <token>'")
    token_type: str = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    expires_at: datetime
    refresh_token: str = Field(description="Trade it for a new pair at POST /auth/refresh (once)")
    refresh_expires_at: datetime
    session_id: str


class RefreshRequest(RequestBody):
    refresh_token: str = Field(min_length=1, max_length=256)


class LogoutRequest(RequestBody):
    refresh_token: str | None = Field(None, max_length=256, description="Also revoke this token's session")
    all_sessions: bool = Field(False, description="Sign out everywhere (every session of this user)")


class PasswordChange(RequestBody):
    current_password: str = Field(min_length=1, max_length=MAX_PASSWORD_LENGTH)
    new_password: str = Password


class UserPublic(BaseModel):
    username: str
    roles: list[str]
    permissions: list[str]
    disabled: bool
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None

    @classmethod
    def of(cls, row: UserRow, roles: list[str], permissions: frozenset[str] | set[str]) -> UserPublic:
        return cls(
            username=row.username,
            roles=sorted(roles),
            permissions=sorted(permissions),
            disabled=row.disabled,
            created_at=row.created_at,
            updated_at=row.updated_at,
            last_login_at=row.last_login_at,
        )


class MePublic(BaseModel):
    username: str
    kind: str = Field(description="user (signed-in session) or api_token")
    roles: list[str]
    permissions: list[str] = Field(description="What this token may do: check these for hasPermission")
    token_id: str | None
    session_id: str | None
    expires_at: datetime | None
    user: UserPublic | None = Field(description="The account, when the caller is a stored user")


class UserCreate(RequestBody):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"username": "dana", "password": "correct horse battery", "roles": ["operator"]}]
        }
    )

    username: str = Field(pattern=USERNAME_PATTERN)
    password: str = Password
    roles: list[str] = Field(default_factory=lambda: ["viewer"], max_length=32)
    disabled: bool = False

    @field_validator("username", mode="before")
    @classmethod
    def _norm(cls, value: object) -> object:
        return normalize_username(value) if isinstance(value, str) else value


class UserUpdate(RequestBody):
    roles: list[str] | None = Field(None, max_length=32, description="Replace the user's roles")
    disabled: bool | None = Field(None, description="Disable (sessions end at once) or re-enable")
    password: str | None = Field(
        None,
        min_length=MIN_PASSWORD_LENGTH,
        max_length=MAX_PASSWORD_LENGTH,
        description="Set a new password (the user's sessions end)",
    )


class RoleCreate(RequestBody):
    name: str = Field(pattern=ROLE_PATTERN)
    description: str = Field("", max_length=2000)
    permissions: list[str] = Field(max_length=64)


class RolePublic(BaseModel):
    name: str
    description: str
    permissions: list[str]
    builtin: bool

    @classmethod
    def of(cls, row: RoleRow) -> RolePublic:
        return cls(
            name=row.name, description=row.description, permissions=sorted(row.permissions or []), builtin=row.builtin
        )


class ApiTokenCreate(RequestBody):
    name: str = Field(min_length=1, max_length=128)
    permissions: list[str] | None = Field(
        None, max_length=64, description="A subset of yours; default: all your current permissions"
    )
    expires_in_days: int | None = Field(
        None,
        ge=1,
        le=3650,
        description="Default: 90 days (api_token_ttl_days); at most api_token_max_ttl_days (365 by default)",
    )


class ApiTokenPublic(BaseModel):
    id: str
    name: str
    owner: str
    prefix: str = Field(description="The token's first characters, to recognize it")
    permissions: list[str]
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, row: ApiTokenRow, owner: str) -> ApiTokenPublic:
        return cls(
            id=row.id,
            name=row.name,
            owner=owner,
            prefix=row.prefix,
            permissions=sorted(row.permissions or []),
            created_at=row.created_at,
            expires_at=row.expires_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )


class ApiTokenCreated(ApiTokenPublic):
    token: str = Field(description="The secret itself: shown only now, store it safely")
