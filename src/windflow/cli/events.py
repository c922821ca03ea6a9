"""``windflow events tail``: follow the live event stream over the API's WebSocket."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer

from windflow.cli.client import (
    EXIT_UNREACHABLE,
    ApiUrl,
    change_hint,
    complete_service,
    console,
    err_console,
    resolve_api,
    token,
)
from windflow.domain.backoff import reconnect_delay

app = typer.Typer(help="Events: follow what windflow does, live.", no_args_is_help=True)

EVENT_TYPES = (
    "INITIALIZATION_UPDATE",
    "SERVICE_STATUS_UPDATE",
    "HEALTH_CHECK",
    "METRICS_UPDATE",
    "RECOVERY_UPDATE",
    "CONFIG_CHANGED",
    "ROLLOUT_UPDATE",
    "SHUTDOWN_UPDATE",
    "AUDIT",
)
"""The values of ``windflow.domain.events.EventType`` (kept here so the CLI starts without pydantic; a test checks
they match)."""

FATAL_CLOSE = {4400: "bad request", 4401: "not authenticated", 4403: "permission denied"}


def ws_url(base: str, *, types: list[str], services: list[str], since: str | None) -> str:
    scheme, sep, rest = base.partition("://")
    ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme) if sep else "ws"
    query: list[tuple[str, str]] = []
    if types:
        query.append(("types", ",".join(types)))
    if services:
        query.append(("services", ",".join(services)))
    if since:
        query.append(("last_event_id", since))
    url = f"{ws_scheme}://{rest if sep else base}/api/v1/ws"
    return f"{url}?{urlencode(query)}" if query else url


def describe(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    service = data.get("service_id") or data.get("component") or ""
    kind = event.get("event_type", "?")
    details = {
        "SERVICE_STATUS_UPDATE": lambda: f"{data.get('previous_state') or '?'} → {data.get('state')}",
        "HEALTH_CHECK": lambda: (
            f"{'healthy' if data.get('healthy') else 'UNHEALTHY'} {data.get('latency_ms', 0):.0f} ms"
        ),
        "CONFIG_CHANGED": lambda: f"v{data.get('version')} {data.get('change', '')} by {data.get('author')}",
        "INITIALIZATION_UPDATE": lambda: (
            f"{data.get('status')} {data.get('progress')}%"
            + (f" {data.get('component')}={data.get('component_status')}" if data.get("component") else "")
        ),
        "RECOVERY_UPDATE": lambda: f"{data.get('status')} attempt {data.get('attempt')}/{data.get('max_attempts')}",
        "ROLLOUT_UPDATE": lambda: f"{data.get('status')} v{data.get('version')}",
        "METRICS_UPDATE": lambda: (
            f"{data.get('health')} latency={data.get('latency_ms')} "
            f"restarts={data.get('restarts')} avail1h={data.get('availability_1h')}"
        ),
        "AUDIT": lambda: f"{data.get('actor')} {data.get('action')} {data.get('target')} {data.get('outcome')}",
    }.get(kind, lambda: json.dumps(data))()
    message = data.get("message")
    return " ".join(p for p in (kind, service, details, f"— {message}" if message else "") if p)


async def tail(
    url: str,
    bearer: str | None,
    *,
    raw: bool,
    count: int | None,
    follow: bool = True,
    source: str = "",
    api_base: str | None = None,
    services: Sequence[str] = (),
) -> int:
    """Print events until ``count`` were shown or interrupted; reconnects (resuming by id) when dropped. Once
    subscribed, warns about each of ``services`` the registry at ``api_base`` does not know."""
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI

    headers = {"Authorization": f"Bearer {bearer}"} if bearer else None
    last_id: str | None = None
    shown = 0
    failures = 0
    connected = False  # an API that never answered is a wrong URL or a stopped API: say so at once
    while True:
        try:
            async with connect(resume_url(url, last_id), additional_headers=headers, open_timeout=10) as ws:
                connected = True
                async for frame in ws:
                    failures = 0
                    msg = json.loads(frame)
                    kind = msg.get("type")
                    if kind == "event":
                        last_id = msg["id"]
                        show(msg, raw=raw)
                        shown += 1
                        if count is not None and shown >= count:
                            return 0
                    elif kind == "gap":
                        err_console.print(f"[yellow]{msg.get('message')}[/yellow]")
                    elif kind == "lagging":
                        err_console.print("[yellow]fell behind; resuming[/yellow]")
                    elif kind == "subscribed" and last_id is None:
                        last_id = msg.get("position")
                        if api_base is not None and services:
                            await warn_unknown_services(api_base, bearer, services)
                            services = ()
        except ConnectionClosed as exc:
            if closed_for_good(exc):
                return 2
        except InvalidStatus as exc:
            err_console.print(f"[red]the API refused the connection: HTTP {exc.response.status_code}[/red]")
            return 2
        except InvalidURI as exc:
            err_console.print(f"[red]{exc}[/red]")
            return 2
        except (OSError, TimeoutError) as exc:
            failures += 1
            if not follow or not connected or failures > 30:
                unreachable(url, exc, source)
                return EXIT_UNREACHABLE
        if not follow:
            return 0
        await asyncio.sleep(reconnect_delay(failures, base=0.2, cap=5.0))


def closed_for_good(exc: Any) -> bool:
    """The API closed the stream for a reason a retry cannot fix (bad request, not signed in, no permission):
    say which."""
    code = exc.rcvd.code if exc.rcvd is not None else None
    if code not in FATAL_CLOSE:
        return False
    reason = exc.rcvd.reason if exc.rcvd is not None else ""
    err_console.print(f"[red]{FATAL_CLOSE[code]}[/red]: {reason}")
    if code == 4401:
        err_console.print("  (run `windflow login` or set WINDFLOW_TOKEN)")
    return True


def unreachable(url: str, exc: BaseException, source: str) -> None:
    """The one line saying the API could not be reached, at the URL as the user gave it and where it came from."""
    where = url.partition("?")[0].removesuffix("/api/v1/ws")
    where = "http" + where[2:] if where.startswith("ws") else where
    err_console.print(
        f"[red]error[/red] cannot reach the windflow API at {where} ({exc})"
        f"{f'; the URL comes from {source}: {change_hint(source)}' if source else ''}",
        highlight=False,
        soft_wrap=True,
    )


def resume_url(url: str, last_id: str | None) -> str:
    """``url`` resuming after ``last_id`` (the stream position of the last event shown), when there is one."""
    if last_id is None:
        return url
    base, _, query = url.partition("?")
    params = [p for p in query.split("&") if p and not p.startswith("last_event_id=")]
    return base + "?" + "&".join([*params, urlencode({"last_event_id": last_id})])


def show(msg: dict[str, Any], *, raw: bool) -> None:
    """One event: the message as JSON (``--json``), or a line for people."""
    if raw:
        sys.stdout.write(json.dumps(msg) + "\n")
        sys.stdout.flush()
        return
    event = msg["event"]
    console.print(
        f"[dim]{event.get('timestamp', '')} {msg['id']}[/dim] {describe(event)}", highlight=False, soft_wrap=True
    )


async def warn_unknown_services(base: str, bearer: str | None, services: Sequence[str]) -> None:
    """A warning on stderr for each service the registry does not know: a typo would otherwise wait silently
    forever. The tail goes on: a service's events may be followed before it is created."""
    import httpx2

    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    try:
        async with httpx2.AsyncClient(base_url=base, headers=headers, timeout=5.0) as http:
            for sid in services:
                if (await http.get(f"/api/v1/services/{quote(sid, safe='')}")).status_code == 404:
                    err_console.print(
                        f"[yellow]warning[/yellow] no service {sid!r} exists (yet); waiting for its events",
                        highlight=False,
                        soft_wrap=True,
                    )
    except httpx2.HTTPError:
        return  # the stream itself reports an API that cannot be reached


@app.command("tail")
def tail_cmd(
    event_type: Annotated[
        list[str] | None, typer.Option("--type", "-t", help="Event type (repeatable), e.g. SERVICE_STATUS_UPDATE")
    ] = None,
    service: Annotated[
        list[str] | None,
        typer.Option(
            "--service", "-s", metavar="SERVICE", help="Service id (repeatable)", autocompletion=complete_service
        ),
    ] = None,
    since: Annotated[str | None, typer.Option("--since", help="Resume after this event id (stream position)")] = None,
    raw: Annotated[bool, typer.Option("--json", help="One JSON message per line")] = False,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1, help="Exit after this many events")] = None,
    api: ApiUrl = None,
) -> None:
    """Print events as they happen (Ctrl-C to stop); reconnects and resumes by id if the connection drops."""
    wanted = [part.strip().upper() for value in event_type or [] for part in value.split(",") if part.strip()]
    unknown = [t for t in wanted if t not in EVENT_TYPES]
    if unknown:
        err_console.print(
            f"[red]error[/red] unknown event type {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(2)
    base, source = resolve_api(api)
    url = ws_url(base, types=wanted, services=service or [], since=since)
    try:
        import asyncio

        code = asyncio.run(
            tail(url, token(base=base), raw=raw, count=count, source=source, api_base=base, services=service or [])
        )
    except KeyboardInterrupt:
        code = 0
    raise typer.Exit(code)
