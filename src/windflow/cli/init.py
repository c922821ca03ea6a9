"""`windflow init start|status|list|cancel|retry` with a live Rich progress display."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from windflow.cli.client import ApiUrl, check, client, complete_service, console, err_console
from windflow.cli.output import Output, OutputOpt, emit, follow_run

if TYPE_CHECKING:
    import httpx2
    from rich.console import Group

app = typer.Typer(help="Initialize the system (bring services up in dependency order).", no_args_is_help=True)

STYLE = {
    "PENDING": "dim",
    "STARTING": "cyan",
    "WAITING_HEALTHY": "yellow",
    "HEALTHY": "green",
    "FAILED": "bold red",
    "SKIPPED": "magenta",
    "STOPPED": "blue",
    "SUCCEEDED": "bold green",
    "RUNNING": "cyan",
    "VALIDATING": "cyan",
    "CANCELLING": "yellow",
    "CANCELLED": "blue",
    "COMPLETED": "green",
}
TERMINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}
INIT_STATUSES = ("PENDING", "VALIDATING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLING", "CANCELLED")
"""The values of ``windflow.domain.contracts.InitStatus`` (a test checks they match)."""
StatusChoice = StrEnum("StatusChoice", {v: v for v in INIT_STATUSES})  # type: ignore[misc]


class OnFailure(StrEnum):
    STOP = "stop"
    CONTINUE = "continue"


class OnCancel(StrEnum):
    ROLLBACK = "rollback"
    LEAVE_RUNNING = "leave_running"


Component = Annotated[str, typer.Argument(metavar="COMPONENT", help="Service id", autocompletion=complete_service)]


def _ts(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def render(run: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    state = run.get("state") or {}
    status = run["status"]
    title = Text.assemble(
        ("initialization ", "bold"),
        (run["run_id"], "bold cyan"),
        "  ",
        (status, STYLE.get(status, "")),
        f"  {run['progress']}%",
    )
    # a bar alone ends without a line break: in a grid row it gets its own line, never sharing the table's
    bar = Table.grid()
    bar.add_row(ProgressBar(total=100, completed=run["progress"], width=60))
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("component", "layer", "status", "attempts", "time", "detail"):
        table.add_column(col, overflow="fold")
    now = datetime.now(UTC)
    comps = sorted((state.get("components") or {}).values(), key=lambda c: (c["layer"], c["name"]))
    for c in comps:
        started, done = _ts(c.get("started_at")), _ts(c.get("healthy_at") or c.get("finished_at"))
        took = f"{((done or now) - started).total_seconds():.1f}s" if started else ""
        detail = c.get("last_error") or ""
        name = c["name"]
        if c.get("kind") == "job":
            name += " (job)"
            if c.get("duration") is not None:
                took = f"{c['duration']:.1f}s"
            if c.get("exit_code") is not None:
                detail = f"exit {c['exit_code']}" + (f"; {detail}" if detail else "")
            if c["status"] == "FAILED" and c.get("log_tail") and not c.get("last_error"):
                detail += f"; {c['log_tail'][-1]}"
        conditions = c.get("conditions") or {}
        waits = [
            f"{d} ({conditions[d]})" for d in c.get("depends_on") or [] if conditions.get(d, "healthy") != "healthy"
        ]
        if waits and c["status"] == "PENDING":
            detail = detail or f"waits for {', '.join(waits)}"
        table.add_row(
            name, str(c["layer"]), Text(c["status"], STYLE.get(c["status"], "")), str(c["attempts"]), took, detail
        )
    message = Text(state.get("message", ""), style="dim")
    parts: list[Any] = [title, bar, table, message]
    for problem in state.get("problems") or []:
        parts.append(Text(f"  {'.'.join(map(str, problem.get('loc', [])))}: {problem.get('msg')}", style="red"))
    if run["links"].get("temporal_ui"):
        parts.append(Text(f"Temporal UI: {run['links']['temporal_ui']}", style="dim"))
    return Group(*parts)


def watch(http: httpx2.Client, run_id: str, *, interval: float = 0.25, live_display: bool = True) -> dict[str, Any]:
    """Follow a run until it ends; returns its final state (``live_display=False``: quietly)."""
    return follow_run(
        http, f"/api/v1/initializations/{run_id}", render, TERMINAL, interval=interval, live_display=live_display
    )


def _awaiting_retry(run: dict[str, Any]) -> bool:
    return bool((run.get("state") or {}).get("awaiting_retry_until")) and run.get("live", False)


def exit_code(run: dict[str, Any]) -> int:
    """0 unless the run ended FAILED or CANCELLED (rolled back): 1. A run still going is not a failure."""
    return 1 if run["status"] in ("FAILED", "CANCELLED") else 0


@app.command("start")
def start(
    component: Annotated[
        list[str],
        typer.Option(
            "--component",
            "-c",
            metavar="SERVICE",
            autocompletion=complete_service,
            help="Only this (and its dependencies); repeatable",
        ),
    ] = [],  # noqa: B006
    validate_only: Annotated[bool, typer.Option("--validate-only", help="Validate and plan; start nothing")] = False,
    parallelism: Annotated[int | None, typer.Option(help="Components starting at once")] = None,
    on_failure: Annotated[OnFailure, typer.Option(help="After a component fails")] = OnFailure.STOP,
    on_cancel: Annotated[OnCancel, typer.Option(help="When the run is cancelled")] = OnCancel.ROLLBACK,
    component_timeout: Annotated[float, typer.Option(help="Seconds for one component")] = 120.0,
    queue: Annotated[bool, typer.Option(help="Queue behind a running initialization")] = False,
    watch_run: Annotated[bool, typer.Option("--watch/--no-watch", help="Show live progress")] = True,
    api: ApiUrl = None,
) -> None:
    """Start an initialization."""
    body = {
        "components": component,
        "validate_only": validate_only,
        "parallelism": parallelism,
        "on_failure": on_failure.value,
        "on_cancel": on_cancel.value,
        "component_timeout": component_timeout,
        "queue": queue,
    }
    with client(api) as http:
        accepted = check(http.post("/api/v1/initializations", json=body))
        console.print(f"started [bold cyan]{accepted['run_id']}[/] ({accepted['workflow_id']})")
        if not watch_run:
            return
        run = watch(http, accepted["run_id"])
    if run["status"] == "FAILED" and _awaiting_retry(run):
        err_console.print(f"failed; fix the config and run `windflow init retry {run['run_id']} COMPONENT`")
    raise typer.Exit(exit_code(run))


@app.command("status")
def status(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID")],
    follow: Annotated[bool, typer.Option("--watch", help="Follow until the run ends")] = False,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """Show one initialization (live while it runs). Exit 1 when it FAILED or was CANCELLED."""
    with client(api) as http:
        if follow:
            run = watch(http, run_id, live_display=output == Output.TABLE)
        else:
            run = check(http.get(f"/api/v1/initializations/{run_id}"))
    if output != Output.TABLE or not follow:
        emit(run, output, lambda: console.print(render(run)))
    raise typer.Exit(exit_code(run))


@app.command("list")
def list_runs(
    status_filter: Annotated[
        StatusChoice | None, typer.Option("--status", case_sensitive=False, help="Only runs in this status")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 20,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """Initialization history."""
    params: dict[str, Any] = {"limit": limit}
    if status_filter:
        params["status"] = status_filter.value
    with client(api) as http:
        page = check(http.get("/api/v1/initializations", params=params))

    def table() -> None:
        from rich.table import Table
        from rich.text import Text

        out = Table("run id", "status", "progress", "actor", "started", "finished")
        for r in page["items"]:
            out.add_row(
                r["run_id"],
                Text(r["status"], STYLE.get(r["status"], "")),
                f"{r['progress']}%",
                r["actor"],
                r["started_at"][:19],
                (r["finished_at"] or "")[:19],
            )
        console.print(out)

    emit(page["items"], output, table)


@app.command("cancel")
def cancel(run_id: Annotated[str, typer.Argument(metavar="RUN_ID")], api: ApiUrl = None) -> None:
    """Cancel a running initialization (rolls back unless started with --on-cancel leave_running)."""
    with client(api) as http:
        check(http.post(f"/api/v1/initializations/{run_id}/cancel"))
    console.print(f"cancelling {run_id}")


@app.command("retry")
def retry(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID")],
    component: Component,
    follow: Annotated[bool, typer.Option("--watch/--no-watch", help="Follow the run")] = True,
    api: ApiUrl = None,
) -> None:
    """Retry one failed component of a run (after fixing its config)."""
    with client(api) as http:
        result = check(http.post(f"/api/v1/initializations/{run_id}/components/{component}/retry"))
        console.print(result["message"])
        if follow:
            raise typer.Exit(exit_code(watch(http, run_id)))
