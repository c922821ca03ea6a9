"""``-o table|json|yaml`` for every listing and status command."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any

import typer


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOpt = Annotated[
    Output,
    typer.Option(
        "--output",
        "-o",
        case_sensitive=False,
        help="table for people; json or yaml (the API's own objects) for scripts",
    ),
]


def emit(data: Any, fmt: Output, table: Callable[[], None]) -> None:
    """Print ``data`` as JSON or YAML on stdout, or call ``table`` to draw it for people."""
    if fmt == Output.JSON:
        sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    elif fmt == Output.YAML:
        import yaml

        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        table()
    sys.stdout.flush()


def follow_run(
    http: Any,
    path: str,
    render: Callable[[dict[str, Any]], Any],
    terminal: set[str],
    *,
    interval: float = 0.25,
    live_display: bool = True,
) -> dict[str, Any]:
    """Poll a run at ``path`` until its status is in ``terminal``, drawing ``render(run)`` live (or quietly);
    returns its final state."""
    import time

    from windflow.cli.client import check, console

    run = check(http.get(path))
    if not live_display:
        while run["status"] not in terminal:
            time.sleep(interval)
            run = check(http.get(path))
        return run
    from rich.live import Live

    with Live(render(run), console=console.rich, refresh_per_second=8, transient=False) as live:
        while run["status"] not in terminal:
            time.sleep(interval)
            run = check(http.get(path))
            live.update(render(run))
    if not console.is_terminal:
        console.line()  # a live display ends its last line without a newline when not on a terminal
    return run
