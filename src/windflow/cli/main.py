"""Entry point of the `windflow` command.

Kept light on purpose: a shell's Tab on a service id is answered by :mod:`windflow.cli.fastcomplete` before
the Typer app (and the pydantic it loads to parse options) is imported. Everything else runs the app in
:mod:`windflow.cli.commands`, whose names (``app``, ...) this module also offers.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def __getattr__(name: str) -> Any:  # `from windflow.cli.main import app` and the like
    if name.startswith("__"):  # the import system asks for __path__ & co.: not the app's
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from windflow.cli import commands

    try:
        return getattr(commands, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def run() -> None:
    """Console-script entry: leave with os._exit so Temporal's runtime cannot abort at interpreter exit."""
    code = 0
    try:
        if os.environ.get("_WINDFLOW_COMPLETE"):
            from windflow.cli.fastcomplete import try_complete

            answered = try_complete(os.environ)
            if answered is not None:
                sys.stdout.write(answered)
                sys.stdout.flush()
                os._exit(0)
        from windflow.cli.commands import app

        app()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
