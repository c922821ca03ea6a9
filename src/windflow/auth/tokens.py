"""Tokens.

* Access tokens: short-lived HS256 JWTs (PyJWT) carrying ``sub``, ``exp``, ``iat``, ``jti``, the caller's
  ``permissions`` and roles, and ``sid`` (the refresh-token family, so logout can revoke them).
* Opaque tokens (refresh tokens, personal API tokens): 256 random bits behind a recognizable prefix. Only their
  SHA-256 is stored: with that much entropy a fast hash is enough, and it makes look-up an index hit.
"""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from windflow.auth.permissions import Principal

ALGORITHM = "HS256"
ISSUER = "windflow"
REFRESH_PREFIX = "wf_rt_"
API_TOKEN_PREFIX = "wf_pat_"
LEEWAY_SECONDS = 5


class InvalidToken(Exception):
    pass


def issue_access_token(
    *,
    key: str,
    subject: str,
    permissions: frozenset[str] | set[str],
    roles: tuple[str, ...] = (),
    ttl: int = 900,
    now: datetime | None = None,
    session_id: str | None = None,
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
        "permissions": sorted(permissions),
        "roles": list(roles),
    }
    if session_id:
        claims["sid"] = session_id
    return jwt.encode(claims, key, algorithm=ALGORITHM), expires


def decode_access_token(token: str, *, key: str) -> dict[str, Any]:
    """Verify signature (HS256 only: ``alg: none`` and any other algorithm are refused), expiry and issuer."""
    try:
        claims = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            leeway=LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "sub", "jti"]},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("token expired") from None
    except jwt.PyJWTError as exc:
        raise InvalidToken(f"invalid token: {exc}") from None
    if claims.get("typ") != "access":
        raise InvalidToken("not an access token")
    if not isinstance(claims.get("permissions", []), list):
        raise InvalidToken("invalid token: malformed permissions")
    return claims


class VerifiedTokens:
    """Access tokens this process has verified, with their claims, until they expire.

    A signed-in client presents the same token on every request; verifying it again (parse, HMAC, claim checks)
    is most of what authentication costs. The cache keeps only verification's outcome for a token and a key:
    a revocation is still looked up on every request (the denylist), and a token is dropped from the cache
    at its ``exp`` (plus the leeway verification allows). Bounded: the oldest entries go first.
    """

    def __init__(self, max_entries: int = 4096, clock: Any = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def decode(self, token: str, *, key: str) -> dict[str, Any]:
        """:func:`decode_access_token`, answered from the cache for a token verified before and not yet expired."""
        entry = (key, token)
        claims = self._entries.get(entry)
        if claims is not None:
            if self._clock() < int(claims["exp"]) + LEEWAY_SECONDS:
                return claims
            del self._entries[entry]
        claims = decode_access_token(token, key=key)
        self._entries[entry] = claims
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return claims

    def __len__(self) -> int:
        return len(self._entries)


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    return Principal(
        name=str(claims["sub"]),
        permissions=frozenset(str(p) for p in claims.get("permissions", [])),
        roles=tuple(str(r) for r in claims.get("roles", [])),
        kind="user",
        token_id=str(claims.get("jti")),
        session_id=str(claims["sid"]) if claims.get("sid") else None,
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC),
    )


# --------------------------------------------------------------------------- opaque tokens


def new_opaque_token(prefix: str) -> tuple[str, str]:
    """A fresh token and the hash to store: ``(token, sha256_hex)``."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_opaque_token(token)


def hash_opaque_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_api_token(token: str) -> bool:
    return token.startswith(API_TOKEN_PREFIX)
