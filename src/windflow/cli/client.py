"""The CLI's view of the API: base URL and token from flags, environment or the stored login."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import httpx2
import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

ApiUrl = Annotated[str | None, typer.Option("--api", help="API base URL (default: settings / stored login)")]


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "windflow"


def credentials_path() -> Path:
    return config_dir() / "credentials.json"


def load_credentials() -> dict[str, Any]:
    path = credentials_path()
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def save_credentials(data: dict[str, Any]) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return path


def api_url(explicit: str | None = None) -> str:
    if explicit:
        return explicit.rstrip("/")
    env = os.environ.get("WINDFLOW_API_URL")
    if env:
        return env.rstrip("/")
    stored = load_credentials().get("api_url")
    if stored:
        return str(stored).rstrip("/")
    from windflow.settings import load_settings

    return load_settings().api_base_url


def token(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("WINDFLOW_TOKEN") or stored_access_token()


def stored_access_token(*, margin: float = 30.0) -> str | None:
    """The stored login's access token, rotated first through its refresh token when (nearly) expired."""
    creds = load_credentials()
    access, refresh, expires = creds.get("access_token"), creds.get("refresh_token"), creds.get("expires_at")
    if not access or not refresh or not expires:
        return access
    try:
        fresh = datetime.fromisoformat(str(expires)).timestamp() - time.time() > margin
    except ValueError:
        fresh = False
    if fresh:
        return str(access)
    try:
        resp = httpx2.post(f"{api_url()}/api/v1/auth/refresh", json={"refresh_token": refresh}, timeout=30.0,
                           headers={"User-Agent": "windflow-cli"})
    except httpx2.HTTPError:
        return str(access)  # the API is unreachable: let the real request say so
    if resp.status_code != 200:
        return str(access)  # refresh refused (session ended): the request's 401 tells the user to log in
    save_credentials({**creds, **credentials_from(resp.json())})
    return str(resp.json()["access_token"])


def credentials_from(pair: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a login/refresh answer in the credentials file."""
    return {k: pair[k] for k in ("access_token", "refresh_token", "expires_at", "refresh_expires_at") if k in pair}


def client(url: str | None = None, tok: str | None = None, timeout: float = 30.0) -> httpx2.Client:
    headers = {"User-Agent": "windflow-cli"}
    bearer = token(tok)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    return httpx2.Client(base_url=api_url(url), headers=headers, timeout=timeout)


def check(resp: httpx2.Response) -> Any:
    """Return the JSON body, or print the error envelope and exit non-zero."""
    if resp.status_code < 400:
        if resp.status_code == 204 or not resp.content:
            return None
        ctype = resp.headers.get("content-type", "")
        return resp.json() if "json" in ctype else resp.text
    try:
        err = resp.json()["error"]
        message = f"{err['code']}: {err['message']}"
        details = err.get("details")
    except (ValueError, KeyError, TypeError):
        message, details = f"HTTP {resp.status_code}", resp.text[:500]
    err_console.print(f"[red]error[/red] {message}")
    if isinstance(details, list):
        for item in details[:50]:
            if isinstance(item, dict) and "loc" in item:
                err_console.print(f"  - {'.'.join(map(str, item['loc']))}: {item.get('msg')}")
    if resp.status_code == 401:
        err_console.print("  (run `windflow login` or set WINDFLOW_TOKEN)")
    raise typer.Exit(2 if resp.status_code < 500 else 1)


def all_pages(http: httpx2.Client, path: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every item of a paged list (``items`` / ``next_cursor``), following the cursor to the end."""
    query = {"limit": 500, **(params or {})}
    items: list[dict[str, Any]] = []
    while True:
        page = check(http.get(path, params=query))
        items += page["items"]
        if not page["next_cursor"]:
            return items
        query["cursor"] = page["next_cursor"]
