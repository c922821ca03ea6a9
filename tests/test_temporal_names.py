"""Workflow ids, workflow types and message names are spelled in one place: ``windflow.temporal.names``.

A literal elsewhere in ``src/`` (``f"recover/{service}"``, ``handle.signal("resume")``,
``@workflow.query(name="status")``) is how callers and workflows drift apart; this test reads every module's
syntax tree and names each one it finds. Workflows use the same constants in their decorators, so a renamed
workflow or query cannot leave its callers behind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from windflow.temporal import names

SRC = Path(__file__).resolve().parent.parent / "src" / "windflow"

#: modules the per-queue watcher rewrite replaces (``supervise/{service}`` becomes ``watch/{queue}`` and
#: ``recover/{service}``); they keep their literals until that rewrite lands, then leave this list
NOT_YET: set[str] = set()

ID_PREFIXES = tuple(getattr(names, n) for n in dir(names) if n.endswith("_PREFIX"))
#: calls whose first argument names a workflow, a message or an activity
NAMED_BY_FIRST_ARG = {
    "signal",
    "query",
    "execute_update",
    "start_update",
    "execute_activity",
    "start_activity",
    "start_workflow",
    "execute_workflow",
    "get_workflow_handle",
    "get_external_workflow_handle",
    "ScheduleActionStartWorkflow",
    "start_child_workflow",
    "execute_child_workflow",
}
#: decorators whose ``name=`` names a workflow or a message
NAMED_BY_KEYWORD = {"defn", "query", "signal", "update"}


def _literal(node: ast.AST) -> str | None:
    """The text a string literal, or an f-string's literal start, spells."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        return _literal(node.values[0])
    return None


def _docstrings(tree: ast.AST) -> set[int]:
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    found: dict[str, None] = {}  # in order, each once (an f-string's literal start is a node of its own too)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            is_activity_defn = (
                isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "activity"
            )
            if called in NAMED_BY_FIRST_ARG and node.args and _literal(node.args[0]) is not None:
                found.setdefault(f"{node.lineno}: {called}({_literal(node.args[0])!r}, …)")
            if called in NAMED_BY_KEYWORD and not is_activity_defn:
                for kw in node.keywords:
                    if kw.arg == "name" and _literal(kw.value) is not None:
                        found.setdefault(f"{node.lineno}: {called}(name={_literal(kw.value)!r})")
        text = _literal(node) if isinstance(node, ast.Constant | ast.JoinedStr) else None
        if text is not None and id(node) not in docs and text.startswith(ID_PREFIXES):
            found.setdefault(f"{node.lineno}: workflow id literal {text!r}")
    return list(found)


def test_no_workflow_id_or_message_name_literal_outside_the_temporal_package():
    offenders = {}
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(("temporal/", "persistence/migrations/")) or rel in NOT_YET:
            continue
        hits = findings(path)
        if hits:
            offenders[rel] = hits
    assert offenders == {}, "spell these with windflow.temporal.names:\n" + "\n".join(
        f"  {rel}:{hit}" for rel, hits in offenders.items() for hit in hits
    )


@pytest.mark.parametrize(
    "source",
    [
        'h.signal("resume")',
        'await h.query("status", result_type=X)',
        'client.get_workflow_handle(f"supervise/{sid}")',
        'wid = f"init/{run_id}"',
        '@workflow.query(name="status")\ndef f(): ...',
        'await workflow.execute_activity("notify", x)',
        'Schedule(action=ScheduleActionStartWorkflow("RecoverySweep", x))',
    ],
)
def test_the_check_finds_each_kind_of_literal(tmp_path, source):
    module = tmp_path / "m.py"
    module.write_text(source + "\n")
    assert findings(module), source


def test_the_check_lets_constants_docstrings_and_activity_names_be(tmp_path):
    module = tmp_path / "m.py"
    module.write_text('''
"""``recover/{service}`` is started by the watcher."""
from windflow.temporal import names
h.signal(names.RESUME)
client.get_workflow_handle(names.recover_id(sid))
@activity.defn(name="start_service")
def start(): ...
url = "/api/v1/services/db/rollouts/r1"
''')
    assert not findings(module)


def test_ids_name_their_service():
    assert names.recover_id("db") == "recover/db" and names.watch_id("host-a") == "watch/host-a"
    assert names.service_of(names.recover_id("db")) == "db"
    assert names.service_of(names.rollout_id("db")) == "db"
    assert names.service_of(names.control_id("db", "a1")) == "db"
    assert names.service_of(names.init_id("r1")) is None
