"""The `windflow` commands (a Typer app); :mod:`windflow.cli.main` is the entry point that runs them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from windflow import __version__
from windflow.cli import down as down_cmd
from windflow.cli import helptext, ops
from windflow.cli import logs as logs_cmd
from windflow.cli.auth import register as register_auth
from windflow.cli.client import ApiUrl, check, client, console, err_console
from windflow.cli.config import app as config_app
from windflow.cli.events import app as events_app
from windflow.cli.init import app as init_app
from windflow.cli.usage import OneLineErrors

if TYPE_CHECKING:
    from windflow.settings import Settings

helptext.install()  # no <bool>/<str> labels in --help

app = typer.Typer(
    name="windflow",
    help="Bring a system of services up in the right order and keep it up.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    cls=OneLineErrors,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(events_app, name="events")
app.add_typer(init_app, name="init")
app.add_typer(config_app, name="config")
app.add_typer(ops.service_app, name="service")
app.command("services")(ops.services)
app.command("scale")(ops.scale)
app.command("recover")(ops.recover)
app.command("logs")(logs_cmd.logs)
app.command("down")(down_cmd.down)
register_auth(app)  # login, logout, users, tokens


def settings_or_exit() -> Settings:
    from windflow.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def observability(settings: Settings, service_name: str, *, floor: str = "DEBUG") -> None:
    """Log format (WINDFLOW_LOG_FORMAT / _LEVEL, at least ``floor`` unless DEBUG) and tracing (OTEL_*) of a
    long-running command."""
    import logging

    from windflow.logs import configure_logging
    from windflow.tracing import configure_tracing

    level: str = settings.log_level
    if level != "DEBUG" and logging.getLevelName(level) < logging.getLevelName(floor):
        level = floor
    configure_logging(level=level, fmt=settings.log_format)
    try:
        configure_tracing(service_name)
    except ValueError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def shutdown_observability() -> None:
    """Flush buffered spans: the process leaves through os._exit, which skips atexit hooks."""
    from windflow.tracing import shutdown_tracing

    shutdown_tracing()


@app.command()
def version() -> None:
    """Print windflow's version."""
    console.print(__version__)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply database migrations (embedded mode applies them at start by itself)."""
    from windflow.persistence.db import Database
    from windflow.persistence.migrate import current_revision, upgrade

    settings = settings_or_exit()
    settings.ensure_data_dir()

    async def _run() -> str | None:
        db = Database.from_url(settings.sqlalchemy_url)
        try:
            await upgrade(db.engine, revision)
            return await current_revision(db.engine)
        finally:
            await db.dispose()

    import asyncio

    rev = asyncio.run(_run())
    console.print(f"database at revision [bold]{rev}[/bold]")


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="windflow.yaml")],
    prune: Annotated[bool, typer.Option(help="Delete services the file does not name")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate only")] = False,
    api: ApiUrl = None,
) -> None:
    """Load a system file into the registry (all-or-nothing)."""
    from windflow.domain.errors import ConfigInvalid
    from windflow.domain.system import load_system, parse_yaml, to_yaml

    text = file.read_text(encoding="utf-8")
    try:
        system = load_system(parse_yaml(text), base_dir=str(file.resolve().parent))
    except ConfigInvalid as exc:
        err_console.print(f"[red]{exc.message}[/red]")
        for item in exc.details or []:
            err_console.print(f"  - {'.'.join(map(str, item['loc']))}: {item['msg']}")
        raise typer.Exit(2) from None
    if dry_run:
        console.print(f"[green]valid[/green]: {len(system.services)} services")
        return
    from windflow.domain.system import dump_system

    body = to_yaml(dump_system(system.services, notifications=system.notifications))
    with client(api) as http:
        result = check(
            http.put(
                "/api/v1/system", content=body, params={"prune": prune}, headers={"content-type": "application/yaml"}
            )
        )
    for key in ("created", "updated", "unchanged", "deleted"):
        if result[key]:
            console.print(f"{key}: {', '.join(result[key])}")


@app.command("export")
def export(
    output: Annotated[Path | None, typer.Option("-o", "--output", help="File to write (default stdout)")] = None,
    secrets: Annotated[bool, typer.Option(help="Include secret values")] = False,
    api: ApiUrl = None,
) -> None:
    """Write the registry as a system file that re-applies to the same state."""
    with client(api) as http:
        text = check(http.get("/api/v1/system", params={"secrets": secrets, "format": "yaml"}))
    if output:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            err_console.print(f"[red]error[/red] cannot write {output}: {exc.strerror or exc}", highlight=False)
            raise typer.Exit(2) from None
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@app.command("api")
def run_api(
    host: Annotated[str | None, typer.Option(help="Bind address (WINDFLOW_API_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (WINDFLOW_API_PORT)")] = None,
) -> None:
    """Run the REST/WebSocket API."""
    import uvicorn

    from windflow.api.app import SERVER_OPTIONS, create_app

    settings = settings_or_exit()
    settings = settings.model_copy(update={k: v for k, v in {"api_host": host, "api_port": port}.items() if v})
    observability(settings, "windflow-api")
    from windflow.heap import freeze_startup_heap

    api = create_app(settings)
    freeze_startup_heap()  # windflow.heap: no full collection walking the whole start-up heap mid-request
    try:  # log_config=None: uvicorn's records go through windflow's log format
        uvicorn.run(
            api,
            host=settings.api_host,
            port=settings.api_port,
            log_config=None,
            log_level=settings.log_level.lower(),
            **SERVER_OPTIONS,
        )
    finally:
        shutdown_observability()


@app.command("worker")
def run_worker_cmd(
    host: Annotated[str | None, typer.Option("--host", help="This worker's host name (host-affine services)")] = None,
) -> None:
    """Run a Temporal worker (scale out by running several)."""
    from windflow.domain.models import is_host_name
    from windflow.worker import run_worker

    settings = settings_or_exit()
    if host:
        if not is_host_name(host):
            err_console.print(
                f"[red]--host {host!r}: must be a host name: lower-case letters, digits and inner '-', "
                "labels separated by '.'[/red]"
            )
            raise typer.Exit(2)
        settings = settings.model_copy(update={"worker_host": host})
    observability(settings, "windflow-worker")
    from windflow.metrics import MetricsPortsTaken

    try:
        import asyncio

        asyncio.run(run_worker(settings))
    except MetricsPortsTaken as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    finally:
        shutdown_observability()


@app.command("up")
def up(
    system_file: Annotated[Path | None, typer.Argument(help="windflow.yaml to apply (and initialize)")] = None,
    initialize: Annotated[bool, typer.Option("--init/--no-init", help="Initialize after applying")] = True,
    stop_services: Annotated[bool, typer.Option("--stop-services", help="Stop managed services on exit")] = False,
    exit_after_init: Annotated[bool, typer.Option("--exit-after-init", help="Stop once initialized")] = False,
) -> None:
    """Run everything on embedded defaults: Temporal dev server, worker, API (and initialize a system)."""
    from windflow.cli.up import run_up

    settings = settings_or_exit()
    if system_file is not None and not system_file.is_file():
        err_console.print(f"[red]no such file: {system_file}[/red]")
        raise typer.Exit(2)
    observability(settings, "windflow", floor="WARNING")  # the terminal belongs to the progress display
    try:
        import asyncio

        code = asyncio.run(
            run_up(
                settings,
                system_file=system_file,
                initialize=initialize,
                stop_services=stop_services,
                exit_after_init=exit_after_init,
            )
        )
    except typer.Exit:  # click's Exit is a RuntimeError: keep its code
        raise
    except RuntimeError as exc:
        err_console.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None
    finally:
        shutdown_observability()
    raise typer.Exit(code)
