"""Password hashing: argon2id through pwdlib. Hashing is CPU-bound (~0.1 s): call these off the event loop."""

from __future__ import annotations

import secrets
from functools import lru_cache

from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash((Argon2Hasher(),))


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher().hash(password)


def verify_password(password: str, password_hash: str | None) -> tuple[bool, str | None]:
    """``(ok, new_hash)``; ``new_hash`` is set when the stored hash uses outdated parameters.

    With no stored hash (unknown user) a dummy hash is verified anyway, so a missing user costs the same time
    as a wrong password and user names cannot be probed by timing.
    """
    if not password_hash:
        _hasher().verify(password, _dummy_hash())
        return False, None
    try:
        return _hasher().verify_and_update(password, password_hash)
    except Exception:  # malformed hash in the store: never a match
        return False, None


def generate_password() -> str:
    return secrets.token_urlsafe(18)
