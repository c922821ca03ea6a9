"""Day-to-day operations: `windflow services`, `windflow recover`, `windflow service start|stop|restart`."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from windflow.cli.client import ApiUrl, ServiceArg, all_pages, check, client, console, err_console
from windflow.cli.output import Output, OutputOpt, emit

service_app = typer.Typer(
    help="Control one service (a stop makes it desired stopped: nothing restarts it).", no_args_is_help=True
)

STATE_STYLE = {
    "healthy": "green",
    "starting": "cyan",
    "recovering": "yellow",
    "backing_off": "yellow",
    "blocked": "magenta",
    "gave_up": "bold red",
    "failed": "red",
    "unhealthy": "red",
    "stopped": "blue",
    "completed": "green",
    "not_ready": "yellow",
    "stopping": "blue",
}

SERVICE_STATES = (
    "unknown",
    "starting",
    "healthy",
    "unhealthy",
    "stopped",
    "failed",
    "recovering",
    "backing_off",
    "blocked",
    "gave_up",
    "completed",
    "not_ready",
    "stopping",
)
"""The values of ``windflow.domain.models.ServiceState`` (kept here so the CLI starts without pydantic; a test
checks they match)."""
StateChoice = StrEnum("StateChoice", {v: v for v in SERVICE_STATES})  # type: ignore[misc]


def depends_text(service: dict[str, Any]) -> str:
    """``db, migrate (completed_successfully)``: each dependency, with its condition unless it is ``healthy``."""
    conditions = service.get("conditions") or {}
    return ", ".join(
        d if conditions.get(d, "healthy") == "healthy" else f"{d} ({conditions[d]})" for d in service["depends_on"]
    )


def services(
    state: Annotated[StateChoice | None, typer.Option(help="Only services in this state")] = None,
    label: Annotated[list[str], typer.Option(metavar="KEY=VALUE", help="Label filter; repeatable")] = [],  # noqa: B006
    q: Annotated[
        str | None, typer.Option("-q", "--search", metavar="TEXT", help="Search id, description, labels")
    ] = None,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """List services with their state."""
    params: dict[str, Any] = {"label": label}
    if state:
        params["state"] = state.value
    if q:
        params["q"] = q
    with client(api) as http:
        rows = all_pages(http, "/api/v1/services", params)

    def table() -> None:
        from rich.table import Table
        from rich.text import Text

        out = Table("service", "state", "desired", "pid", "driver", "depends on", "version", "detail")
        for s in rows:
            sup = (s.get("state_detail") or {}).get("supervision") or {}
            detail = sup.get("message") or (s.get("state_detail") or {}).get("message") or ""
            run = s.get("last_job_run")
            if run:  # a job: its last exit code and run time first
                code = "?" if run.get("exit_code") is None else run["exit_code"]
                detail = f"exit {code} in {run.get('duration', 0):.1f}s" + (f"; {detail}" if detail else "")
            name = f"{s['id']} (job)" if s.get("kind") == "job" else s["id"]
            state = s["state"]
            if s.get("replicas"):  # a replicated service: how many of its replicas are ready
                name = f"{s['id']} ×{s['replicas']}"
                state = f"{s.get('ready') or 0}/{s['replicas']} {state}"
            version = str(s["version"])
            if s.get("pending_version"):  # saved, not applied: what runs is the applied version
                version = f"{s['pending_version']} saved, {s.get('applied_version')} runs"
            out.add_row(
                name,
                Text(state, STATE_STYLE.get(s["state"], "")),
                s.get("desired") or "-",
                str(s.get("pid") or "-"),
                s["driver"],
                depends_text(s),
                version,
                detail,
            )
        console.print(out)

    emit(rows, output, table)


def scale(
    service: ServiceArg,
    replicas: Annotated[int, typer.Argument(min=1, max=100, help="How many replicas (SERVICE/0 … SERVICE/N-1)")],
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow until the replicas are there")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait")] = 300.0,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """Scale a replicated service: new replicas start in order, the highest indices stop first."""
    with client(api) as http:
        accepted = check(http.patch(f"/api/v1/services/{service}", json={"replicas": replicas}))
        if not wait:
            emit(
                accepted,
                output,
                lambda: console.print(
                    f"scaling [bold]{service}[/] {accepted['previous']} → {accepted['replicas']} replicas "
                    f"({accepted['workflow_id']})"
                ),
            )
            return
        deadline = time.monotonic() + timeout
        while True:
            body = check(http.get(f"/api/v1/services/{service}"))
            units = body.get("replica_list") or []
            done = (
                len(units) == replicas
                and (body.get("ready") or 0) >= (body.get("min_ready") or replicas)
                and all(u["state"] == "healthy" for u in units)
            )
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.5)

    def table() -> None:
        from rich.table import Table
        from rich.text import Text

        console.print(f"[bold]{service}[/]: {body.get('ready') or 0}/{body.get('replicas')} {body['state']}")
        out = Table("replica", "state", "pid", "restarts", "detail")
        for u in units:
            out.add_row(
                u["id"],
                Text(u["state"], STATE_STYLE.get(u["state"], "")),
                str(u.get("pid") or "-"),
                str(u.get("restarts_total") or 0),
                u.get("message") or "",
            )
        console.print(out)

    emit(body, output, table)
    if not done:
        raise typer.Exit(1)


def recover(
    service: ServiceArg,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail)")] = "manual",
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow until the service is back")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait")] = 300.0,
    api: ApiUrl = None,
) -> None:
    """Recover a service now (joins a recovery that is already running)."""
    with client(api) as http:
        accepted = check(http.post(f"/api/v1/services/{service}/recoveries", json={"reason": reason}))
        joined = "joined the running" if accepted["attached"] else "started a"
        console.print(f"{joined} recovery: {accepted['workflow_id']}")
        if accepted.get("temporal_ui"):
            console.print(f"[dim]{accepted['temporal_ui']}[/dim]")
        if not wait:
            return
        deadline = time.monotonic() + timeout
        time.sleep(0.3)
        from rich.text import Text

        with console.status("recovering") as status:
            while time.monotonic() < deadline:
                body = check(http.get(f"/api/v1/services/{service}/supervision"))
                sup = body.get("status") or {}
                state = body.get("state") or ""
                status.update(f"{sup.get('state', state)}: {sup.get('message', '')}")
                # the recovery (recover/{service}) ended: the service's status says how
                if not body.get("recovering") and state in ("healthy", "not_ready", "gave_up", "stopped"):
                    console.print(Text(f"{service}: {state} — {sup.get('message', '')}", STATE_STYLE.get(state, "")))
                    raise typer.Exit(0 if state in ("healthy", "not_ready") else 1)
                time.sleep(0.25)
    err_console.print(f"{service}: not back within {timeout:g}s")
    raise typer.Exit(1)


Wait = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait until the action is done")]


def _act(action: str, service: str, api: str | None, wait: bool) -> None:
    from rich.text import Text

    with client(api, timeout=300) as http:
        result = check(http.post(f"/api/v1/services/{service}/actions", json={"action": action, "wait": wait}))
    style = "green" if result["ok"] else "red"
    console.print(Text(f"{action} {service}: {result['message']} (supervision {result.get('supervision')})", style))
    if not result["ok"]:
        raise typer.Exit(1)


@service_app.command("start")
def start(service: ServiceArg, wait: Wait = True, api: ApiUrl = None) -> None:
    """Start a service (desired running), wait until healthy; its queue's watcher watches it."""
    _act("start", service, api, wait)


@service_app.command("stop")
def stop(service: ServiceArg, wait: Wait = True, api: ApiUrl = None) -> None:
    """Stop a service (desired stopped: windflow will not restart it)."""
    _act("stop", service, api, wait)


@service_app.command("restart")
def restart(service: ServiceArg, wait: Wait = True, api: ApiUrl = None) -> None:
    """Restart a service and wait until healthy."""
    _act("restart", service, api, wait)
