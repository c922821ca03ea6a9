"""`windflow config apply|rollouts|cancel`: roll out a service's config safely (verified, rolled back on failure)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from windflow.cli.client import ApiUrl, ServiceArg, check, client, console, err_console
from windflow.cli.output import Output, OutputOpt, emit

app = typer.Typer(
    help="Roll out service configs: save, apply, verify health, roll back on failure.", no_args_is_help=True
)

TERMINAL = {"SUCCEEDED", "ROLLED_BACK", "FAILED", "CANCELLED"}
STYLE = {
    "SUCCEEDED": "green",
    "ROLLED_BACK": "yellow",
    "FAILED": "red",
    "CANCELLED": "blue",
    "RUNNING": "cyan",
    "ROLLING_BACK": "yellow",
    "PENDING": "dim",
}


def load_definition(file: Path, service: str) -> dict[str, Any]:
    """The service's definition from a YAML/JSON file: the definition itself, or a system file naming it."""
    from windflow.domain.errors import ConfigInvalid
    from windflow.domain.system import parse_yaml

    text = file.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if file.suffix == ".json" else parse_yaml(text)
    except (ValueError, ConfigInvalid) as exc:
        err_console.print(f"[red]cannot read {file}: {getattr(exc, 'message', exc)}[/red]")
        raise typer.Exit(2) from None
    if isinstance(data, dict) and isinstance(data.get("services"), dict):
        found = data["services"].get(service)
        if not isinstance(found, dict):
            err_console.print(f"[red]{file} does not define service {service!r}[/red]")
            raise typer.Exit(2)
        data = found
    if not isinstance(data, dict):
        err_console.print(f"[red]{file} must hold a mapping: the service's definition[/red]")
        raise typer.Exit(2)
    if data.get("id") not in (None, service):
        err_console.print(f"[red]{file} defines service {data['id']!r}, not {service!r}[/red]")
        raise typer.Exit(2)
    return resolve_cwd({k: v for k, v in data.items() if k != "id"}, service, file)


def resolve_cwd(definition: dict[str, Any], service: str, file: Path) -> dict[str, Any]:
    """A process service's missing or relative ``cwd`` resolved against ``file``'s directory, as `windflow apply`
    and `windflow up` resolve it (one file means the same wherever it is applied from)."""
    from pydantic import ValidationError

    from windflow.domain.models import ProcessConfig, ServiceSpec
    from windflow.domain.system import resolve_paths

    try:
        spec = ServiceSpec.model_validate({**definition, "id": service})
    except ValidationError:
        return definition  # the API names what is wrong
    resolved = resolve_paths(spec, str(file.resolve().parent))
    if resolved is spec or not isinstance(resolved.config, ProcessConfig):
        return definition
    return {**definition, "config": {**definition.get("config", {}), "cwd": resolved.config.cwd}}


@app.command("apply")
def apply(
    service: ServiceArg,
    file: Annotated[
        Path,
        typer.Argument(
            exists=True,
            dir_okay=False,
            readable=True,
            help="YAML/JSON: the service's definition, or a system file naming it",
        ),
    ],
    comment: Annotated[str, typer.Option("--comment", "-m", help="Why (kept with the config version)")] = "",
    verify_window: Annotated[
        float, typer.Option("--verify-window", min=0.1, max=3600, help="Seconds the new config must stay healthy")
    ] = 30.0,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow the rollout until it ends")] = False,
    timeout: Annotated[float, typer.Option(help="With --wait: give up following after this many seconds")] = 3600.0,
    api: ApiUrl = None,
) -> None:
    """Roll out a new config: validate, save a version, apply, verify health, roll back on failure."""
    body = {"config": load_definition(file, service), "comment": comment, "verify_window": verify_window}
    with client(api) as http:
        accepted = check(http.post(f"/api/v1/services/{service}/rollouts", json=body))
        rollout_id = accepted["rollout_id"]
        console.print(f"rollout [bold]{rollout_id}[/bold] of {service} started ({accepted['workflow_id']})")
        if accepted["links"].get("temporal_ui"):
            console.print(f"[dim]{accepted['links']['temporal_ui']}[/dim]")
        if not wait:
            return
        final = follow(http, service, rollout_id, timeout=timeout)
    raise typer.Exit(report(final))


def follow(http: Any, service: str, rollout_id: str, *, timeout: float) -> dict[str, Any]:
    """Poll the rollout with a live progress display; Ctrl-C asks for a cancel (a rollback) and keeps following."""
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    path = f"/api/v1/services/{service}/rollouts/{rollout_id}"
    deadline = time.monotonic() + timeout
    cancelled = False
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.fields[phase]:<22}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    )
    body: dict[str, Any] = {}
    with Progress(*columns, console=console.rich, transient=False) as progress:
        task = progress.add_task("rollout", total=100, phase="pending", detail="")
        while True:
            try:
                body = check(http.get(path))
                progress.update(task, completed=body["progress"], phase=body["phase"], detail=_detail(body))
                if body["status"] in TERMINAL:
                    return body
                if time.monotonic() > deadline:
                    err_console.print(f"still running after {timeout:g}s; follow it with GET {path}")
                    raise typer.Exit(1)
                time.sleep(0.5)
            except KeyboardInterrupt:
                if cancelled:
                    raise
                cancelled = True
                progress.console.print("[yellow]cancelling: rolling back to the last good version[/yellow]")
                check(http.post(f"{path}/cancel"))


def _detail(body: dict[str, Any]) -> str:
    state = body.get("state") or {}
    ver = state.get("rollback_verification") or state.get("verification")
    text = body.get("message", "")
    if ver and ver.get("healthy") is None:
        probes = ver.get("probes") or []
        ok = sum(1 for p in probes if p.get("healthy"))
        text = f"v{ver['version']}: {ok}/{len(probes)} probes passed"
    return text[:80]


def report(body: dict[str, Any]) -> int:
    """Print the outcome and its evidence; the exit code: 0 when the new config is good, else 1."""
    from rich.table import Table
    from rich.text import Text

    status = body["status"]
    console.print(Text(f"{status}: {body['message']}", STYLE.get(status, "")))
    state = body.get("state") or {}
    for label, key in (("new version", "verification"), ("restored version", "rollback_verification")):
        ver = state.get(key)
        if not ver:
            continue
        table = Table(title=f"{label} {ver['version']}: {ver.get('message', '')}", show_lines=False)
        for col in ("t+s", "running", "healthy", "verdict", "latency ms", "message"):
            table.add_column(col)
        for p in (ver.get("probes") or [])[-15:]:
            table.add_row(
                f"{p.get('since_apply', 0):.1f}",
                "yes" if p["running"] else "no",
                Text("yes", "green") if p["healthy"] else Text("no", "red"),
                p.get("verdict", ""),
                f"{p.get('latency_ms', 0):.1f}",
                (p.get("message") or "")[:60],
            )
        console.print(table)
    return 0 if status == "SUCCEEDED" else 1


@app.command("rollouts")
def rollouts(
    service: ServiceArg,
    limit: Annotated[int, typer.Option(min=1, max=500, help="How many, newest first")] = 20,
    output: OutputOpt = Output.TABLE,
    api: ApiUrl = None,
) -> None:
    """A service's rollout history, newest first."""
    with client(api) as http:
        page = check(http.get(f"/api/v1/services/{service}/rollouts", params={"limit": limit}))

    def table() -> None:
        from rich.table import Table
        from rich.text import Text

        out = Table("rollout", "status", "versions", "by", "started", "message")
        for r in page["items"]:
            versions = f"{r['previous_version']} → {r['new_version'] or '-'}"
            if r["restored_version"]:
                versions += f" → {r['restored_version']}"
            out.add_row(
                r["rollout_id"],
                Text(r["status"], STYLE.get(r["status"], "")),
                versions,
                r["actor"],
                r["started_at"][:19],
                r["message"][:60],
            )
        console.print(out)

    emit(page["items"], output, table)


@app.command("cancel")
def cancel(
    service: ServiceArg, rollout_id: Annotated[str, typer.Argument(metavar="ROLLOUT_ID")], api: ApiUrl = None
) -> None:
    """Cancel a running rollout: it rolls back to the last good version."""
    with client(api) as http:
        answer = check(http.post(f"/api/v1/services/{service}/rollouts/{rollout_id}/cancel"))
    console.print(answer["message"])
