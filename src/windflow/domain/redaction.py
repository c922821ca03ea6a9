"""Secret values never leave windflow: API responses and log lines carry a placeholder instead."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from windflow.domain.models import SECRET_KEY_PATTERN

REDACTED = "**redacted**"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_DSN_PASSWORD = re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.I)


def is_secret_key(key: str, extra: Iterable[str] = ()) -> bool:
    return key in set(extra) or bool(SECRET_KEY_PATTERN.search(key))


def redact_text(text: str) -> str:
    """Hide passwords embedded in URLs (``scheme://user:pw@``) and libpq DSNs (``password=...``)."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{REDACTED}@", text)
    return _DSN_PASSWORD.sub(lambda m: f"{m.group(1)}{REDACTED}", text)


def redact(value: Any, extra_keys: Iterable[str] = ()) -> Any:
    """Return a copy of JSON-like ``value`` with secret values replaced by :data:`REDACTED`."""
    extra = tuple(extra_keys)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if isinstance(key, str) and is_secret_key(key, extra) and item not in (None, "", {}, []):
                out[key] = REDACTED if not isinstance(item, dict | list) else redact_all(item)
            elif key == "headers" and isinstance(item, dict):
                out[key] = {
                    k: (REDACTED if k.lower() in {"authorization", "cookie", "x-api-key"} or is_secret_key(k, extra)
                        else v)
                    for k, v in item.items()
                }
            else:
                out[key] = redact(item, extra)
        return out
    if isinstance(value, list):
        return [redact(item, extra) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def redact_all(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v) for v in value]
    return REDACTED


def restore_redacted(new: Any, old: Any) -> Any:
    """Where a client sent the placeholder back, keep the stored secret (so a GET-edit-PUT loses nothing)."""
    if new == REDACTED:
        return old
    if isinstance(new, dict) and isinstance(old, dict):
        return {k: restore_redacted(v, old.get(k)) for k, v in new.items()}
    if isinstance(new, list) and isinstance(old, list) and len(new) == len(old):
        return [restore_redacted(n, o) for n, o in zip(new, old, strict=True)]
    if isinstance(new, str) and isinstance(old, str) and REDACTED in new:
        # a URL whose password was redacted: put the stored one back if the rest is unchanged
        if redact_text(old) == new:
            return old
    return new


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, dict):
        return any(contains_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_placeholder(v) for v in value)
    return isinstance(value, str) and REDACTED in value
