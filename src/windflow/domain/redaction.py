"""Secret values never leave windflow: API responses and log lines carry a placeholder instead."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from windflow.domain.models import SECRET_KEY_PATTERN

REDACTED = "**redacted**"
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@", re.I)
_DEFAULT_PORTS = {"http": 80, "https": 443, "redis": 6379, "rediss": 6379, "postgresql": 5432, "postgres": 5432}
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
                    k: (
                        REDACTED
                        if k.lower() in {"authorization", "cookie", "x-api-key"} or is_secret_key(k, extra)
                        else v
                    )
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


def _origin(url: str) -> tuple[str, str, int | None] | str:
    """Where a URL sends what goes with it: scheme, host and port (the path may change freely)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:
        return url
    return (parts.scheme.lower(), (parts.hostname or "").rstrip(".").lower(), port)


def _own_destination(node: dict[str, Any]) -> Any:
    """The destination a mapping itself names: a URL's origin (HTTP endpoints, probes, channels), or the
    program that receives its environment (process config, exec probe, shell command) with its directory."""
    url = node.get("url")
    if isinstance(url, str):
        return ("url", _origin(url))
    for key in ("command", "run"):
        if key in node:
            return (key, json.dumps(node[key], sort_keys=True, default=str), node.get("cwd"))
    return None


def _destination(node: dict[str, Any], *, root: bool) -> Any:
    """A mapping's own destination, else (below the root) the destinations of its endpoints: the http
    driver's ``auth_token`` goes to each of ``start``/``stop``/``restart``/``status``."""
    own = _own_destination(node)
    if own is not None or root:
        return own
    parts = sorted((str(k), _own_destination(v)) for k, v in node.items() if isinstance(v, dict))
    parts = [p for p in parts if p[1] is not None]
    return ("endpoints", tuple(parts)) if parts else None


def restore_secrets(new: Any, old: Any) -> tuple[Any, list[tuple[list[str | int], str]]]:
    """Where a client sent the placeholder back, keep the stored secret, but only for the destination it was
    stored for: a placeholder under a mapping whose destination (URL scheme/host/port, program) changed is
    left in place and reported, so a secret can never be redirected by someone who only saw it redacted.

    Returns the merged value and the problems (location, message); a placeholder reported here must not be
    saved."""
    problems: list[tuple[list[str | int], str]] = []
    merged = _restore(new, old, [], problems, moved=None, root=True)
    return merged, problems


def _restore(
    new: Any,
    old: Any,
    loc: list[str | int],
    problems: list[tuple[list[str | int], str]],
    *,
    moved: str | None,
    root: bool = False,
) -> Any:
    if new == REDACTED:
        if moved is not None:
            problems.append((loc, moved))
            return new
        if old is None or old == REDACTED:
            problems.append((loc, f"{REDACTED!r} is a placeholder and nothing is stored here: give the value"))
            return new
        return old
    if isinstance(new, dict):
        old_map = old if isinstance(old, dict) else {}
        here = _destination(new, root=root)
        if here is not None or (isinstance(old, dict) and _destination(old, root=root) is not None):
            was = _destination(old_map, root=root) if isinstance(old, dict) else None
            moved = (
                None
                if here == was
                else ("the destination changed: re-enter the secret to send it to the new destination")
            )
        return {k: _restore(v, old_map.get(k), [*loc, k], problems, moved=moved) for k, v in new.items()}
    if isinstance(new, list):
        old_list = old if isinstance(old, list) and len(old) == len(new) else [None] * len(new)
        return [
            _restore(n, o, [*loc, i], problems, moved=moved) for i, (n, o) in enumerate(zip(new, old_list, strict=True))
        ]
    if isinstance(new, str) and REDACTED in new:
        # a URL or DSN whose password was redacted: put the stored one back only if the rest is unchanged
        if moved is None and isinstance(old, str) and redact_text(old) == new:
            return old
        problems.append(
            (
                loc,
                "the text around the redacted password changed: re-enter the password to send it "
                "to the new destination",
            )
        )
    return new


def contains_placeholder(value: Any) -> bool:
    if isinstance(value, dict):
        return any(contains_placeholder(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_placeholder(v) for v in value)
    return isinstance(value, str) and REDACTED in value
