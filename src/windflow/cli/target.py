"""Which API the CLI talks to, and with which token (no Typer, rich or httpx2 at import: completion uses it).

Where the API's address comes from, first match wins (documented in docs/cli.md):

1. ``--api URL``;
2. ``WINDFLOW_API_URL``;
3. ``WINDFLOW_PUBLIC_URL``, ``WINDFLOW_API_HOST`` or ``WINDFLOW_API_PORT`` (the settings the API itself binds with);
4. the API URL stored by ``windflow login``;
5. the settings' default (``.env`` in the current directory, else ``http://127.0.0.1:8000``).

The stored login's token is sent only to the URL it was issued by.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

DEFAULT_API_URL = "http://127.0.0.1:8000"
SETTINGS_URL_VARS = ("WINDFLOW_PUBLIC_URL", "WINDFLOW_API_HOST", "WINDFLOW_API_PORT")


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


def resolve_api(explicit: str | None = None) -> tuple[str, str]:
    """``(base URL, where it came from)``, by the precedence in this module's docstring."""
    if explicit:
        return explicit.rstrip("/"), "--api"
    env = os.environ.get("WINDFLOW_API_URL")
    if env:
        return env.rstrip("/"), "WINDFLOW_API_URL"
    named = [name for name in SETTINGS_URL_VARS if os.environ.get(name)]
    if named:
        return _settings_url(), " / ".join(named)
    stored = load_credentials().get("api_url")
    if stored:
        return str(stored).rstrip("/"), "the stored login (`windflow login`)"
    if Path(".env").is_file():
        return _settings_url(), "the settings (.env)"
    return DEFAULT_API_URL, "the default"


def _settings_url() -> str:
    from windflow.settings import SettingsError, load_settings

    try:
        return load_settings().api_base_url
    except SettingsError as exc:
        import typer

        from windflow.cli.client import EXIT_USAGE, err_console

        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(EXIT_USAGE) from None


def api_url(explicit: str | None = None) -> str:
    return resolve_api(explicit)[0]


def token(explicit: str | None = None, *, base: str | None = None) -> str | None:
    """The bearer token: ``explicit``, ``WINDFLOW_TOKEN``, else the stored login's, which is only ever sent to
    the URL that issued it (``base``, when given, must be that URL)."""
    if explicit or os.environ.get("WINDFLOW_TOKEN"):
        return explicit or os.environ.get("WINDFLOW_TOKEN")
    if base is not None and str(load_credentials().get("api_url", "")).rstrip("/") != base:
        return None
    return stored_access_token()


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
    import httpx2

    stored_url = str(creds.get("api_url") or api_url()).rstrip("/")
    try:
        resp = httpx2.post(
            f"{stored_url}/api/v1/auth/refresh",
            json={"refresh_token": refresh},
            timeout=30.0,
            headers={"User-Agent": "windflow-cli"},
        )
    except httpx2.HTTPError:
        return str(access)  # the API is unreachable: let the real request say so
    if resp.status_code != 200:
        return str(access)  # refresh refused (session ended): the request's 401 tells the user to log in
    save_credentials({**creds, **credentials_from(resp.json())})
    return str(resp.json()["access_token"])


def credentials_from(pair: dict[str, Any]) -> dict[str, Any]:
    """What is kept of a login/refresh answer in the credentials file."""
    return {k: pair[k] for k in ("access_token", "refresh_token", "expires_at", "refresh_expires_at") if k in pair}
