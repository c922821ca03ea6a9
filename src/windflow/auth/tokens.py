"""Access tokens: short-lived HS256 JWTs (PyJWT) carrying the caller's permissions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from windflow.auth.permissions import Principal

ALGORITHM = "HS256"
ISSUER = "windflow"


class InvalidToken(Exception):
    pass


def issue_access_token(
    *, key: str, subject: str, permissions: frozenset[str] | set[str], roles: tuple[str, ...] = (),
    ttl: int = 900, now: datetime | None = None,
) -> tuple[str, datetime]:
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(seconds=ttl)
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": subject,
        "iat": int(issued.timestamp()),
        "nbf": int(issued.timestamp()),
        "exp": int(expires.timestamp()),
        "jti": uuid.uuid4().hex,
        "typ": "access",
        "perms": sorted(permissions),
        "roles": list(roles),
    }
    return jwt.encode(claims, key, algorithm=ALGORITHM), expires


def decode_access_token(token: str, *, key: str) -> dict[str, Any]:
    try:
        claims = jwt.decode(
            token, key, algorithms=[ALGORITHM], issuer=ISSUER,
            options={"require": ["exp", "iat", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    return claims


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    return Principal(
        name=str(claims["sub"]),
        permissions=frozenset(str(p) for p in claims.get("perms", [])),
        roles=tuple(str(r) for r in claims.get("roles", [])),
        kind="user",
        token_id=str(claims.get("jti")),
    )
