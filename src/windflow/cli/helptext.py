"""Help without type labels: ``--wait/--no-wait`` rather than ``--wait/--no-wait <bool>``.

Typer prints a ``<bool>``/``<str>``/``<int>`` label beside every parameter, and has no setting to turn that off.
windflow's help shows what a person needs instead, as kubectl and git do: nothing after a flag, the choices after
an option that takes one of them (``--output [table|json|yaml]``), and an upper-case placeholder after any other
option that takes a value (``--api URL``, ``--limit LIMIT``). :func:`install` swaps in that label once, for every
command of the ``windflow`` CLI (the only Typer app in this process).
"""

from __future__ import annotations

from typing import Any

from typer import core


def _label(param: Any, ctx: Any) -> str | None:  # noqa: ARG001 - Typer's signature
    if param.metavar is not None:
        return str(param.metavar)
    if isinstance(param, core.TyperOption) and (param.is_flag or param.count):
        return None
    desc = param.type_descriptor
    if desc.is_choice and desc.choices:
        return "[" + "|".join(str(getattr(c, "value", c)) for c in desc.choices) + "]"
    if isinstance(param, core.TyperArgument):
        return None  # its name is printed already
    name = (param.name or "value").upper()
    return f"{name}..." if param.nargs != 1 or param.multiple else name


def install() -> None:
    core._TyperParameter.display_type_rich = _label  # type: ignore[method-assign,assignment]
    core.TyperOption.display_type_rich = _label  # type: ignore[method-assign,assignment]
