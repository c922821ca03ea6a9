"""Dependency graph rules: missing dependencies, cycles (spelled out), topological layers, closure."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from windflow.domain.errors import ConfigInvalid, DependencyCycle


def find_cycle(graph: Mapping[str, Sequence[str]]) -> list[str] | None:
    """Return one cycle as ``[a, b, c, a]`` (a depends on b ...), or ``None``. Deterministic order."""
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    parent: dict[str, str] = {}
    for root in sorted(graph):
        if color[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        color[root] = grey
        while stack:
            node, idx = stack[-1]
            deps = sorted(d for d in graph.get(node, ()) if d in graph)
            if idx < len(deps):
                stack[-1] = (node, idx + 1)
                nxt = deps[idx]
                if color[nxt] == white:
                    color[nxt] = grey
                    parent[nxt] = node
                    stack.append((nxt, 0))
                elif color[nxt] == grey:
                    cycle = [nxt]
                    cur = node
                    while cur != nxt:
                        cycle.append(cur)
                        cur = parent[cur]
                    cycle.append(nxt)
                    # cycle holds nxt <- ... <- node <- nxt reversed; present in dependency direction
                    path = [nxt, *reversed(cycle[1:-1]), nxt]
                    return path
            else:
                color[node] = black
                stack.pop()
    return None


def format_cycle(cycle: Sequence[str]) -> str:
    return " -> ".join(cycle)


def missing_dependencies(graph: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    return {
        node: sorted(d for d in deps if d not in graph)
        for node, deps in graph.items()
        if any(d not in graph for d in deps)
    }


def check_graph(graph: Mapping[str, Sequence[str]]) -> None:
    missing = missing_dependencies(graph)
    if missing:
        problems = [
            {"loc": ["services", node, "depends_on"], "msg": f"unknown service(s): {', '.join(deps)}"}
            for node, deps in sorted(missing.items())
        ]
        raise ConfigInvalid("depends_on names services that do not exist", details=problems)
    cycle = find_cycle(graph)
    if cycle:
        raise DependencyCycle(
            f"dependency cycle: {format_cycle(cycle)}",
            details=[{"loc": ["services", cycle[0], "depends_on"], "msg": f"cycle {format_cycle(cycle)}"}],
        )


def layers(graph: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Topological layers: layer 0 has no dependencies; each later layer depends only on earlier ones."""
    check_graph(graph)
    level: dict[str, int] = {}
    for root in graph:  # depth-first with an explicit stack: a long dependency chain must not exhaust recursion
        stack = [root]
        while stack:
            node = stack[-1]
            if node in level:
                stack.pop()
                continue
            pending = [d for d in graph.get(node, ()) if d not in level]
            if pending:
                stack.extend(pending)
                continue
            deps = graph.get(node, ())
            level[node] = 1 + max(level[d] for d in deps) if deps else 0
            stack.pop()
    out: list[list[str]] = [[] for _ in range(max(level.values(), default=-1) + 1)]
    for node, lvl in level.items():
        out[lvl].append(node)
    return [sorted(layer) for layer in out]


def closure(graph: Mapping[str, Sequence[str]], roots: Iterable[str]) -> set[str]:
    """``roots`` plus everything they depend on, transitively."""
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        node = todo.pop()
        if node in seen:
            continue
        seen.add(node)
        todo.extend(graph.get(node, ()))
    return seen


def dependants(graph: Mapping[str, Sequence[str]], node: str) -> set[str]:
    """Everything that depends on ``node``, transitively."""
    reverse: dict[str, list[str]] = {n: [] for n in graph}
    for n, deps in graph.items():
        for d in deps:
            reverse.setdefault(d, []).append(n)
    seen: set[str] = set()
    todo = list(reverse.get(node, ()))
    while todo:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        todo.extend(reverse.get(cur, ()))
    return seen
