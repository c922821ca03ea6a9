"""Usage errors in one line, like every other error of the CLI.

Typer prints a usage error as the usage line, a "Try ... --help" line and the message in a box: five lines for
``No such option: --foo``, unlike the CLI's own errors (``error <what is wrong>``, one line, see
:func:`windflow.cli.client.check`). :class:`OneLineErrors`, the ``windflow`` app's group class, prints them the
same way: ``error No such option: --foo; see `windflow services --help```, exit code 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from typer import Abort
from typer._click import exceptions as click  # Typer (0.29) vendors click: its parser raises these
from typer.core import TyperGroup


class OneLineErrors(TyperGroup):
    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        try:
            # returns an Exit's code, or what the command returned
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except click.NoArgsIsHelpError:
            sys.exit(2)  # the help is printed already
        except click.ClickException as exc:
            print_error(exc)
            sys.exit(exc.exit_code)
        except Abort:
            print_error(None)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


def print_error(exc: click.ClickException | None) -> None:
    from rich.markup import escape

    from windflow.cli.client import err_console

    if exc is None:  # a declined confirmation (or Ctrl-C at its prompt): nothing was done, not an error message
        err_console.print("Aborted: nothing was done.", highlight=False)
        return
    # Typer checks choices with pydantic, whose messages start "Value error, "
    text = exc.format_message().replace("Value error, ", "")
    message = "; ".join(line.strip() for line in text.splitlines() if line.strip()).removesuffix(".")
    ctx = getattr(exc, "ctx", None)
    hint = f"; see `{ctx.command_path} --help`" if ctx is not None and isinstance(exc, click.UsageError) else ""
    err_console.print(f"[red]error[/red] {escape(message)}{escape(hint)}", highlight=False, soft_wrap=True)
