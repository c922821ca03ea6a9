"""Who is calling: a bearer access token (JWT) becomes a :class:`Principal`; routes declare a permission."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from windflow.api.errors import ApiError
from windflow.auth.permissions import Permission, Principal
from windflow.auth.tokens import InvalidToken, decode_access_token, principal_from_claims

bearer = HTTPBearer(auto_error=False, description="Access token from POST /api/v1/auth/login")

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


async def authenticate(request: Request, token: str) -> Principal:
    """Turn a presented token into a principal (access JWT)."""
    key: str = request.app.state.resources.jwt_key
    try:
        claims = decode_access_token(token, key=key)
    except InvalidToken as exc:
        raise ApiError(401, str(exc), code="invalid_token", headers=_CHALLENGE) from None
    return principal_from_claims(claims)


async def get_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise ApiError(401, "authentication required: send 'Authorization: Bearer <token>'",
                       code="unauthorized", headers=_CHALLENGE)
    principal = await authenticate(request, credentials.credentials)
    request.state.principal = principal
    return principal


def require(permission: Permission) -> Callable[..., Awaitable[Principal]]:
    """Dependency declaring the permission a route needs; the route table is checked against it in tests."""

    async def _check(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        if not principal.can(permission.value):
            raise ApiError(403, f"permission {permission.value!r} required", code="forbidden",
                           details={"required": permission.value})
        return principal

    _check.permission = permission  # type: ignore[attr-defined]
    _check.__name__ = f"require_{permission.name.lower()}"
    return _check
