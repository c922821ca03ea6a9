"""Shell completion of service ids, from the API, through a small cache.

The first Tab asks the API (``GET /api/v1/services``, :data:`FETCH_TIMEOUT`) and keeps the ids in
``$XDG_CACHE_HOME/windflow/completion.json`` for :data:`FRESH_FOR` seconds, per API URL; later Tabs read the
file. When the API does not answer, the last known ids are offered (or none): completion never errs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

FRESH_FOR = 30.0
FETCH_TIMEOUT = 3.0  # the first Tab after the cache went stale waits at most this long
MAX_IDS = 2000


def cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "windflow" / "completion.json"


def _read() -> dict[str, dict[str, object]]:
    try:
        data = json.loads(cache_path().read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write(entries: dict[str, dict[str, object]]) -> None:
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, path)
    except OSError:
        pass


def fetch(base: str) -> list[str] | None:
    """Service ids from the API, or None when it cannot say (unreachable, refused, not signed in)."""
    import httpx2

    from windflow.cli.target import token

    headers = {"User-Agent": "windflow-cli"}
    bearer = token(base=base)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    ids: list[str] = []
    params: dict[str, str | int] = {"limit": 500}
    try:
        with httpx2.Client(base_url=base, headers=headers, timeout=FETCH_TIMEOUT) as http:
            while len(ids) < MAX_IDS:
                resp = http.get("/api/v1/services", params=params)
                if resp.status_code != 200:
                    return None
                page = resp.json()
                ids += [item["id"] for item in page["items"]]
                if not page.get("next_cursor"):
                    break
                params["cursor"] = page["next_cursor"]
    except (httpx2.HTTPError, ValueError, KeyError, TypeError):
        return None
    return sorted(ids)


def service_ids(explicit_api: str | None = None, *, now: float | None = None) -> list[str]:
    """The service ids to offer: cached when fresh, else fetched (and cached), else the stale ones."""
    from windflow.cli.target import resolve_api

    try:
        base, _ = resolve_api(explicit_api)
    except BaseException:  # a bad setting must not break the shell's Tab
        return []
    current = time.time() if now is None else now
    entries = _read()
    entry = entries.get(base) or {}
    cached = entry.get("ids")
    at = entry.get("at")
    if isinstance(cached, list) and isinstance(at, int | float) and abs(current - at) < FRESH_FOR:
        return [str(i) for i in cached]
    fetched = fetch(base)
    if fetched is None:
        return [str(i) for i in cached] if isinstance(cached, list) else []
    entries[base] = {"at": current, "ids": fetched}
    _write(entries)
    return fetched
