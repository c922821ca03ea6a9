"""A shell's Tab on a service id, answered without loading the Typer app.

Typer parses option values through pydantic, so a completion that goes through the app costs a few hundred
milliseconds before the first id is printed. The commands below take a service id as their first argument
(or as the value of one option); when the words typed so far are exactly such a command (no other options in
between), the ids come straight from :func:`windflow.cli.completion.service_ids` (its cache), printed the way
Typer prints them for bash, zsh and fish. Anything else (other commands, options, ``--api`` on the line)
returns ``None`` and the Typer app completes it. A test checks that each entry here matches a parameter of the
app that completes service ids.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

SERVICE_ARGUMENT = {
    ("recover",),
    ("logs",),
    ("service", "start"),
    ("service", "stop"),
    ("service", "restart"),
    ("config", "apply"),
    ("config", "rollouts"),
    ("config", "cancel"),
}
"""Commands whose first argument is a service id."""
SERVICE_OPTION: dict[tuple[str, ...], set[str]] = {
    ("init", "start"): {"-c", "--component"},
    ("events", "tail"): {"-s", "--service"},
}
"""Options whose value is a service id."""


def _words(environ: Mapping[str, str]) -> tuple[list[str], str] | None:
    """``(words before the one completed, the word completed)`` as Typer's shell classes read them."""
    shell = environ.get("_WINDFLOW_COMPLETE", "")
    try:
        if shell == "complete_bash":
            words = shlex.split(environ.get("COMP_WORDS", ""))
            cword = int(environ.get("COMP_CWORD", ""))
            return words[1:cword], (words[cword] if cword < len(words) else "")
        if shell in ("complete_zsh", "complete_fish"):
            line = environ.get("_TYPER_COMPLETE_ARGS", "")
            words = shlex.split(line)[1:]
            if words and not line.endswith(" "):
                return words[:-1], words[-1]
            return words, ""
    except ValueError:  # an open quote, a non-number
        return None
    return None


def wants_service(args: list[str], incomplete: str) -> bool:
    """True when the word being completed is a service id by the tables above."""
    if incomplete.startswith("-"):
        return False
    if tuple(args) in SERVICE_ARGUMENT:
        return True
    if len(args) >= 3 and tuple(args[:2]) in SERVICE_OPTION:
        options = SERVICE_OPTION[tuple(args[:2])]
        rest = args[2:]
        # only options of that one kind so far, each with its value, and the last one waits for its value
        return len(rest) % 2 == 1 and all(word in options for word in rest[::2]) and rest[-1] in options
    return False


def _zsh(value: str) -> str:
    escaped = value.replace('"', '""').replace("'", "''").replace("$", "\\$").replace("`", "\\`")
    return '"' + escaped.replace(":", r"\\:") + '"'


def try_complete(environ: Mapping[str, str]) -> str | None:
    """The completion output for a service-id position, or None to let the Typer app answer."""
    parsed = _words(environ)
    if parsed is None or not wants_service(*parsed):
        return None
    args, incomplete = parsed
    from windflow.cli.completion import service_ids

    ids = [s for s in service_ids() if s.startswith(incomplete)]
    shell = environ["_WINDFLOW_COMPLETE"]
    if shell == "complete_bash":
        return "\n".join(ids)
    if shell == "complete_zsh":
        return "_arguments '*: :((" + "\n".join(_zsh(i) for i in ids) + "))'" if ids else "_files"
    action = environ.get("_TYPER_COMPLETE_FISH_ACTION", "")
    if action == "is-args":
        raise SystemExit(0 if ids else 1)
    return "\n".join(ids) if ids else ""
