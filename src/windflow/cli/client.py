"""The CLI's view of the API: an HTTP client that turns an unreachable API into one line and exit 3, the
error envelope into a message and an exit code, and the shared options (``--api``, service ids).

Which URL and token: :mod:`windflow.cli.target` (re-exported here). Heavy imports (httpx2, rich, settings) wait
until a command needs them, so that shell completion stays fast.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from windflow.cli.target import (  # noqa: F401 - re-exported for the commands
    DEFAULT_API_URL,
    SETTINGS_URL_VARS,
    api_url,
    config_dir,
    credentials_from,
    credentials_path,
    load_credentials,
    resolve_api,
    save_credentials,
    stored_access_token,
    token,
)

if TYPE_CHECKING:
    import httpx2

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
"""0 ok; 1 the run failed, rolled back or gave up (or the server failed); 2 usage error or a 4xx answer;
3 the API could not be reached."""


#: the width of output that goes to a pipe or a file: nothing to fit there, and a table cell cut to ``web-…`` is
#: useless to ``grep`` or a script (rich would use ``COLUMNS`` or 80)
UNLIMITED_WIDTH = 100_000


class _LazyConsole:
    """A rich Console built on first use (importing rich costs ~50 ms that completion must not pay)."""

    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._console: Any = None

    @property
    def rich(self) -> Any:
        """The rich Console itself (for ``Live``, ``Progress`` and the like)."""
        if self._console is None:
            from rich.console import Console

            self._console = Console(**self._kwargs)
            if not self._console.is_terminal:
                self._console.width = UNLIMITED_WIDTH
        return self._console

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rich, name)


console: Any = _LazyConsole()
err_console: Any = _LazyConsole(stderr=True)


def complete_service(ctx: typer.Context, incomplete: str) -> list[str]:
    from windflow.cli.completion import service_ids

    return [s for s in service_ids(ctx.params.get("api")) if s.startswith(incomplete)]


ApiUrl = Annotated[
    str | None,
    typer.Option(
        "--api",
        metavar="URL",
        show_default=False,
        help="API base URL. Default: WINDFLOW_API_URL, else WINDFLOW_PUBLIC_URL / WINDFLOW_API_HOST / "
        "WINDFLOW_API_PORT, else the URL of `windflow login`, else http://127.0.0.1:8000",
    ),
]
ServiceArg = Annotated[str, typer.Argument(metavar="SERVICE", help="Service id", autocompletion=complete_service)]


def unreachable(url: str, exc: BaseException, source: str) -> NoReturn:
    """One line on stderr naming the URL, why, and the setting to change; exit 3."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = change_hint(source)
    err_console.print(
        f"[red]error[/red] cannot reach the windflow API at {url} ({reason}); the URL comes from {source}: {hint}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(EXIT_UNREACHABLE)


def change_hint(source: str) -> str:
    """What to change so that the CLI reaches another URL."""
    if source == "--api":
        return "check --api"
    if source == "WINDFLOW_API_URL" or source.startswith("WINDFLOW_"):
        return f"change {source}, or pass --api"
    if source.startswith("the stored login"):
        return "pass --api, set WINDFLOW_API_URL, or `windflow login --api URL`"
    return "pass --api or set WINDFLOW_API_URL (is `windflow api` or `windflow up` running?)"


@functools.cache
def _client_class() -> type[httpx2.Client]:
    import httpx2

    class ApiClient(httpx2.Client):
        """An httpx2 client whose transport errors end the command with one line (exit 3), not a traceback."""

        api_source = "the default"

        def send(self, request: httpx2.Request, **kwargs: Any) -> httpx2.Response:
            try:
                return super().send(request, **kwargs)
            except httpx2.TransportError as exc:
                if isinstance(exc, httpx2.UnsupportedProtocol | httpx2.InvalidURL):
                    err_console.print(
                        f"[red]error[/red] {str(self.base_url).rstrip('/')} is not an http(s) URL "
                        f"(from {self.api_source})",
                        highlight=False,
                        soft_wrap=True,
                    )
                    raise typer.Exit(EXIT_USAGE) from None
                unreachable(str(self.base_url).rstrip("/"), exc, self.api_source)

    return ApiClient


def client(url: str | None = None, tok: str | None = None, timeout: float = 30.0) -> httpx2.Client:
    base, source = resolve_api(url)
    headers = {"User-Agent": "windflow-cli"}
    bearer = token(tok, base=base)
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    cls = _client_class()
    try:
        http = cls(base_url=base, headers=headers, timeout=timeout)
    except Exception as exc:  # httpx2 rejects a malformed base URL here
        err_console.print(
            f"[red]error[/red] {base!r} is not a valid API URL (from {source}): {exc}", highlight=False, soft_wrap=True
        )
        raise typer.Exit(EXIT_USAGE) from None
    http.api_source = source  # type: ignore[attr-defined]
    return http


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
    raise typer.Exit(EXIT_USAGE if resp.status_code < 500 else EXIT_FAILED)


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
