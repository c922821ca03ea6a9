"""Permissions and the built-in roles that bundle them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Permission(StrEnum):
    INITIALIZE_SYSTEM = "initialize_system"
    SERVICES_READ = "services:read"
    SERVICES_CONTROL = "services:control"
    CONFIGS_READ = "configs:read"
    CONFIGS_WRITE = "configs:write"
    SERVICES_EXEC = "services:exec"  # author what a host runs: commands, exec probes, their env, cwd and user
    RECOVERY_TRIGGER = "recovery:trigger"
    SCHEDULES_MANAGE = "schedules:manage"
    USERS_MANAGE = "users:manage"
    AUDIT_READ = "audit:read"
    WEBHOOKS_MANAGE = "webhooks:manage"
    CODEC_DECODE = "codec:decode"  # decrypt Temporal payloads: reads every secret a config or input holds
    CODEC_ENCODE = "codec:encode"  # encrypt with the production key
    LOGS_READ = "logs:read"  # services' stdout/stderr: may hold what configs redact, so not for viewers


ALL_PERMISSIONS = frozenset(Permission)

BUILTIN_ROLES: dict[str, frozenset[Permission]] = {
    "admin": ALL_PERMISSIONS,
    "operator": frozenset(
        {
            Permission.INITIALIZE_SYSTEM,
            Permission.SERVICES_READ,
            Permission.SERVICES_CONTROL,
            Permission.CONFIGS_READ,
            Permission.CONFIGS_WRITE,
            Permission.RECOVERY_TRIGGER,
            Permission.SCHEDULES_MANAGE,
            Permission.AUDIT_READ,
            Permission.LOGS_READ,
        }
    ),
    "viewer": frozenset({Permission.SERVICES_READ, Permission.CONFIGS_READ}),
}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user (through a session token) or a machine (through a personal API token)."""

    name: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    roles: tuple[str, ...] = ()
    kind: str = "user"  # user | api_token | system
    token_id: str | None = None  # the access token's jti, or the API token's id
    session_id: str | None = None  # refresh-token family the access token belongs to (logout revokes it)
    expires_at: datetime | None = None  # when the presented token stops being valid

    def can(self, permission: str) -> bool:
        return permission in self.permissions


def unknown_permissions(values: list[str] | set[str] | frozenset[str]) -> list[str]:
    known = {p.value for p in Permission}
    return sorted(v for v in values if v not in known)


SYSTEM_PRINCIPAL = Principal(name="system", permissions=ALL_PERMISSIONS, roles=("admin",), kind="system")
