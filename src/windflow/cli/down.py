"""``windflow down [SERVICES] [--watch]``: stop services (and their dependants first) in reverse dependency order."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from windflow.cli.client import ApiUrl, check, client, complete_service, console
from windflow.cli.output import Output, OutputOpt, emit, follow_run

if TYPE_CHECKING:
    import httpx2
    from rich.console import Group

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
STYLE = {
    "pending": "dim",
    "stopping": "yellow",
    "stopped": "blue",
    "failed": "bold red",
    "skipped": "magenta",
    "COMPLETED": "bold green",
    "FAILED": "bold red",
    "CANCELLED": "blue",
    "STOPPING": "yellow",
}


def render(run: dict[str, Any]) -> Group:
    from rich.console import Group
    from rich.progress_bar import ProgressBar
    from rich.table import Table
    from rich.text import Text

    state = run.get("state") or {}
    status = run["status"]
    title = Text.assemble(
        ("shutdown ", "bold"),
        (run["run_id"], "bold cyan"),
        "  ",
        (status, STYLE.get(status, "")),
        f"  {run['progress']}%",
    )
    bar = Table.grid()
    bar.add_row(ProgressBar(total=100, completed=run["progress"], width=60))
    table = Table(box=None, pad_edge=False, show_edge=False)
    for col in ("service", "order", "status", "time", "detail"):
        table.add_column(col, overflow="fold")
    now = datetime.now(UTC)
    for c in sorted((state.get("components") or {}).values(), key=lambda c: (c["layer"], c["service_id"])):
        started = datetime.fromisoformat(c["started_at"]) if c.get("started_at") else None
        done = datetime.fromisoformat(c["finished_at"]) if c.get("finished_at") else None
        took = f"{((done or now) - started).total_seconds():.1f}s" if started else ""
        table.add_row(
            c["service_id"] + ("" if c.get("requested", True) else " (dependant)"),
            str(c["layer"] + 1),
            Text(c["status"], STYLE.get(c["status"], "")),
            took,
            c.get("message") or "",
        )
    parts: list[Any] = [title, bar, table, Text(state.get("message", ""), style="dim")]
    if run["links"].get("temporal_ui"):
        parts.append(Text(f"Temporal UI: {run['links']['temporal_ui']}", style="dim"))
    return Group(*parts)


def watch(http: httpx2.Client, run_id: str, *, interval: float = 0.25, live_display: bool = True) -> dict[str, Any]:
    """Follow a shutdown until it ends; returns its final state."""
    return follow_run(
        http, f"/api/v1/shutdowns/{run_id}", render, TERMINAL, interval=interval, live_display=live_display
    )


def down(
    services: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="[SERVICE]...",
            autocompletion=complete_service,
            help="Services to stop (their dependants are stopped first); none = every service",
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (audit trail, Temporal UI)")] = "",
    watch_run: Annotated[bool, typer.Option("--watch", "-w", help="Follow the run until it ends")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Without SERVICE: do not ask before stopping all")] = False,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """Stop services in reverse dependency order (dependants first, each layer in parallel), pausing their
    supervision so they stay stopped. Without SERVICE it stops every service, and asks first unless --yes.
    Exit 1 if a service could not be stopped or the run was cancelled (or the question was declined)."""
    if not services and not yes:
        typer.confirm("Stop every service of the system?", abort=True)
    with client(api) as http:
        accepted = check(http.post("/api/v1/shutdowns", json={"services": services or [], "reason": reason}))
        if not watch_run:
            emit(
                accepted,
                output,
                lambda: console.print(
                    f"shutdown [bold cyan]{accepted['run_id']}[/] started ({accepted['workflow_id']}); "
                    f"follow it with `windflow down --watch` or GET {accepted['links']['self']}"
                ),
            )
            return
        run = watch(http, accepted["run_id"], live_display=output == Output.TABLE)
    if output != Output.TABLE:
        emit(run, output, lambda: None)
    raise typer.Exit(0 if run["status"] == "COMPLETED" else 1)
