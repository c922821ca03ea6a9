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


OutputOpt = Annotated[Output, typer.Option(
    "--output", "-o", case_sensitive=False,
    help="table for people; json or yaml (the API's own objects) for scripts")]


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
