"""Property tests of the pure rules: the system-file loader, the dependency planner, restart backoff, durations."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from windflow.domain.durations import format_duration, parse_duration
from windflow.domain.errors import ConfigInvalid, DependencyCycle
from windflow.domain.graph import check_graph, find_cycle, format_cycle, layers
from windflow.domain.models import RestartPolicy
from windflow.domain.system import SystemFile, dump_system, load_system, parse_yaml, to_yaml

#: examples per property: Hypothesis's profile's (100; 20 in the fast tier, see tests/conftest.py)
PROPERTY = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- strategies

service_ids = st.from_regex(r"[a-z0-9](?:[a-z0-9_-]{0,14}[a-z0-9])?", fullmatch=True)
words = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"]), min_size=1, max_size=12)
argv = st.lists(words, min_size=1, max_size=4)
durations = st.one_of(
    st.integers(0, 86_400),
    st.floats(0, 86_400, allow_nan=False, allow_infinity=False),
    st.sampled_from(["500ms", "2s", "1m30s", "1h", "0.25s", "1d"]),
)
positive_durations = st.one_of(st.integers(1, 3600), st.floats(0.001, 3600), st.sampled_from(["250ms", "2s", "1m"]))
probe_intervals = st.one_of(st.integers(1, 3600), st.floats(0.1, 3600), st.sampled_from(["100ms", "2s", "1m"]))
urls = st.sampled_from(["http://127.0.0.1:9000/x", "https://example.test/a?b=c"])
json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | words
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(words, c, max_size=3), max_leaves=8
)


@st.composite
def restart_policies(draw: st.DrawFn) -> dict[str, Any]:
    backoff = draw(st.floats(0, 600, allow_nan=False))
    return {
        "max_attempts": draw(st.integers(1, 1000)),
        "backoff": backoff,
        "multiplier": draw(st.floats(1.0, 10.0)),
        "backoff_max": backoff + draw(st.floats(0, 3600, allow_nan=False)),
        "jitter": draw(st.floats(0.0, 1.0)),
        "reset_after": draw(durations),
        "on_give_up": draw(st.sampled_from(["escalate", "escalate_and_retry", "ask"])),
    }


def drivers() -> st.SearchStrategy[tuple[str, dict[str, Any] | None]]:
    command = st.fixed_dictionaries({"run": st.one_of(argv, words)}, optional={"timeout": positive_durations})
    endpoint = st.fixed_dictionaries(
        {"url": urls}, optional={"method": st.sampled_from(["GET", "POST"]), "body": json_values}
    )
    return st.one_of(
        st.tuples(st.just("noop"), st.none()),
        st.tuples(
            st.just("process"),
            st.fixed_dictionaries(
                {"command": argv},
                optional={
                    "env": st.dictionaries(st.from_regex(r"[A-Z_]{1,8}", fullmatch=True), words, max_size=2),
                    "stop_grace": durations,
                    "stop_signal": st.sampled_from(["SIGTERM", "SIGINT"]),
                },
            ),
        ),
        st.tuples(
            st.just("command"), st.fixed_dictionaries({"start": command, "stop": command}, optional={"status": command})
        ),
        st.tuples(st.just("http"), st.fixed_dictionaries({"start": endpoint, "stop": endpoint})),
    )


health_specs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"kind": st.just("tcp"), "port": st.integers(1, 65535)},
        optional={"interval": probe_intervals, "failure_threshold": st.integers(1, 100)},
    ),
    st.fixed_dictionaries(
        {"kind": st.just("http"), "url": urls},
        optional={"expect_status": st.lists(st.integers(100, 599), min_size=1, max_size=3)},
    ),
    st.fixed_dictionaries({"kind": st.just("exec"), "command": argv}),
)


@st.composite
def systems(draw: st.DrawFn) -> dict[str, Any]:
    """A valid system document: unique ids, each depending only on ids declared before it (so a DAG)."""
    ids = draw(st.lists(service_ids, min_size=1, max_size=6, unique=True))
    services: dict[str, Any] = {}
    for i, sid in enumerate(ids):
        driver, config = draw(drivers())
        body: dict[str, Any] = {"driver": driver}
        if config is not None:
            body["config"] = config
        deps = draw(st.lists(st.sampled_from(ids[:i]), unique=True, max_size=3)) if i else []
        if deps:
            body["depends_on"] = deps
        health = draw(health_specs)
        if health is not None:
            body["health"] = health
        if draw(st.booleans()):
            body["restart"] = draw(restart_policies())
        if draw(st.booleans()):
            body["labels"] = draw(st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), words, max_size=2))
        body["monitored"] = draw(st.booleans())
        services[sid] = body
    document: dict[str, Any] = {"version": 1, "services": services}
    if draw(st.booleans()):
        document["notifications"] = {
            "channels": [{"name": "oncall", "kind": "webhook", "url": "https://example.test/hook"}]
        }
    return document


def roundtrip(system: SystemFile) -> dict[str, Any]:
    return dump_system(system.services, notifications=system.notifications)


def same(a: SystemFile, b: SystemFile) -> bool:
    """Equal services (the export lists them by id) and notifications."""
    return {s.id: s for s in a.services} == {s.id: s for s in b.services} and a.notifications == b.notifications


# --------------------------------------------------------------------------- the system-file loader


@PROPERTY
@given(systems())
def test_valid_systems_round_trip_through_dump_and_yaml(document: dict[str, Any]) -> None:
    loaded = load_system(document)
    assert [s.id for s in loaded.services] == list(document["services"])
    dumped = roundtrip(loaded)
    again = load_system(dumped)
    assert same(again, loaded)  # field by field, durations and configs included
    assert roundtrip(again) == dumped  # the dump is a fixed point
    assert same(load_system(parse_yaml(to_yaml(dumped))), loaded)  # and so is the YAML the export writes


def assert_clean_rejection(exc: ConfigInvalid) -> None:
    assert exc.message.startswith(("invalid system file", "the system file")), exc.message
    assert isinstance(exc.details, list) and exc.details, exc.details
    for problem in exc.details:
        assert isinstance(problem["loc"], list) and isinstance(problem["msg"], str) and problem["msg"]


@PROPERTY
@given(json_values)
def test_junk_documents_are_rejected_cleanly(document: Any) -> None:
    try:
        load_system(document)
    except ConfigInvalid as exc:
        assert_clean_rejection(exc)


@st.composite
def corrupted_systems(draw: st.DrawFn) -> dict[str, Any]:
    """A valid document with one value somewhere replaced by junk."""
    document = draw(systems())
    paths: list[list[Any]] = []

    def collect(node: Any, path: list[Any]) -> None:
        paths.append(path)
        if isinstance(node, dict):
            for k, v in node.items():
                collect(v, [*path, k])
        elif isinstance(node, list):
            for i, v in enumerate(node):
                collect(v, [*path, i])

    collect(document, [])
    path = draw(st.sampled_from(paths[1:]))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = draw(json_values | st.floats() | st.just(-1) | st.just("1e-07s"))
    return document


@PROPERTY
@given(corrupted_systems())
def test_corrupted_systems_load_or_are_rejected_cleanly(document: dict[str, Any]) -> None:
    try:
        loaded = load_system(document)
    except ConfigInvalid as exc:
        assert_clean_rejection(exc)
    else:
        assert same(load_system(roundtrip(loaded)), loaded)


@PROPERTY
@given(st.text(max_size=300))
@example("? ")  # {None: None}: a null top-level key
@example("1: a\nb: 2\ntrue: x\n")  # keys of mixed types
@example("services:\n  ? \n  1: {driver: noop}\n")
def test_any_text_parses_as_yaml_or_is_rejected_cleanly(text: str) -> None:
    try:
        document = parse_yaml(text)
    except ConfigInvalid as exc:
        assert exc.message.startswith("the system file"), exc.message
        return
    try:
        load_system(document)
    except ConfigInvalid as exc:
        assert_clean_rejection(exc)


def test_yaml_alias_bombs_and_deep_nesting_are_rejected_not_expanded() -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join([f'*{prev}'] * 9)}]")  # 9**9 values once expanded
    with pytest.raises(ConfigInvalid, match="expands to more than"):
        parse_yaml("\n".join(lines))
    with pytest.raises(ConfigInvalid, match="expands to more than"):
        parse_yaml("services: &s [*s]")  # a list that contains itself
    with pytest.raises(ConfigInvalid, match="nested too deeply"):
        parse_yaml("[" * 50_000 + "]" * 50_000)


# --------------------------------------------------------------------------- the dependency planner


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    nodes = draw(st.lists(service_ids, min_size=0, max_size=12, unique=True))
    graph = {
        n: sorted(set(draw(st.lists(st.sampled_from(nodes[:i]), max_size=4)))) if i else [] for i, n in enumerate(nodes)
    }
    order = draw(st.permutations(nodes))  # declaration order must not matter
    return {n: graph[n] for n in order}


@PROPERTY
@given(dags())
def test_layers_of_a_dag_start_each_service_after_its_dependencies(graph: dict[str, list[str]]) -> None:
    plan = layers(graph)
    position = {node: i for i, layer in enumerate(plan) for node in layer}
    assert sorted(position) == sorted(graph)  # every service exactly once
    assert sum(len(layer) for layer in plan) == len(graph)
    assert all(plan), "no empty layer"
    for node, deps in graph.items():
        for dep in deps:
            assert position[dep] < position[node], (node, dep, plan)
        # as early as possible: right after its latest dependency
        assert position[node] == (1 + max(position[d] for d in deps) if deps else 0)
    assert find_cycle(graph) is None


@st.composite
def cyclic_graphs(draw: st.DrawFn) -> tuple[dict[str, list[str]], list[str]]:
    graph = draw(dags())
    nodes = draw(st.lists(service_ids, min_size=1, max_size=6, unique=True))
    cycle = [n for n in nodes if n not in graph] or ["zz-cycle"]
    for node in cycle:
        graph.setdefault(node, [])
    for a, b in zip(cycle, [*cycle[1:], cycle[0]], strict=True):
        graph[a] = sorted({*graph[a], b})
    extra = list(graph)
    for node in draw(st.lists(st.sampled_from(extra), max_size=3)):  # more edges, any direction
        graph[node] = sorted({*graph[node], draw(st.sampled_from(extra))})
    return graph, cycle


@PROPERTY
@given(cyclic_graphs())
def test_a_graph_with_a_cycle_is_rejected_naming_a_real_cycle(case: tuple[dict[str, list[str]], list[str]]) -> None:
    graph, _ = case
    with pytest.raises(DependencyCycle) as caught:
        check_graph(graph)
    with pytest.raises(DependencyCycle):
        layers(graph)
    cycle = find_cycle(graph)
    assert cycle is not None and len(cycle) >= 2 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1, f"not a simple cycle: {cycle}"
    for a, b in zip(cycle, cycle[1:], strict=False):
        assert b in graph[a], f"{a} does not depend on {b}: {cycle}"
    assert format_cycle(cycle) in caught.value.message
    assert " -> ".join(cycle) == format_cycle(cycle)


def test_a_two_service_cycle_is_spelled_out() -> None:
    with pytest.raises(DependencyCycle, match=r"dependency cycle: a -> b -> a"):
        layers({"a": ["b"], "b": ["a"]})


@PROPERTY
@given(st.integers(2, 60), st.booleans())
def test_cycles_in_a_system_file_are_reported_as_problems(length: int, reverse: bool) -> None:
    ids = [f"s{i}" for i in range(length)]
    services = {sid: {"driver": "noop", "depends_on": [ids[(i + 1) % length]]} for i, sid in enumerate(ids)}
    if reverse:
        services = dict(reversed(services.items()))
    with pytest.raises(ConfigInvalid) as caught:
        load_system({"services": services})
    problem = caught.value.details[0]
    assert problem["type"] == "cycle"
    assert f"{ids[0]} -> {ids[1]}" in problem["msg"]


def test_a_long_dependency_chain_is_planned_without_exhausting_recursion() -> None:
    n = 5000
    graph = {f"s{i}": [f"s{i - 1}"] if i else [] for i in reversed(range(n))}  # declared leaf-last
    plan = layers(graph)
    assert plan == [[f"s{i}"] for i in range(n)]


# --------------------------------------------------------------------------- restart backoff


@PROPERTY
@given(restart_policies(), st.integers(1, 3000))
def test_backoff_is_monotone_non_negative_and_capped(policy_data: dict[str, Any], attempts: int) -> None:
    policy = RestartPolicy.model_validate(policy_data)
    delays = [policy.delay_before(a) for a in range(0, attempts + 1)]
    assert delays[0] == delays[1] == 0.0  # the first attempt runs at once
    assert all(0.0 <= d <= policy.backoff_max for d in delays)
    assert all(not math.isnan(d) for d in delays)
    assert all(a <= b for a, b in zip(delays, delays[1:], strict=False)), "not monotone"
    if attempts >= 2:
        assert delays[2] == min(policy.backoff, policy.backoff_max)  # the second attempt waits `backoff`


@PROPERTY
@given(restart_policies(), st.integers(2, 10**6))
def test_backoff_never_overflows_however_many_attempts(policy_data: dict[str, Any], attempt: int) -> None:
    # with on_give_up=escalate_and_retry attempts go on past max_attempts
    policy = RestartPolicy.model_validate(policy_data)
    delay = policy.delay_before(attempt)
    assert 0.0 <= delay <= policy.backoff_max
    if attempt <= 12:
        assert delay == min(policy.backoff * policy.multiplier ** (attempt - 2), policy.backoff_max)


@PROPERTY
@given(st.floats(allow_nan=True), st.floats(1.0, 10.0))
def test_jitter_is_a_fraction_of_the_delay(jitter: float, multiplier: float) -> None:
    """The supervisor waits ``policy.jittered(delay, r)`` with r in [0, 1) from workflow.random(): the policy
    admits only a jitter in [0, 1], so the wait stays within [delay, 2 * delay] and is never negative."""
    try:
        policy = RestartPolicy(jitter=jitter, multiplier=multiplier)
    except ValidationError:
        assert not 0.0 <= jitter <= 1.0
        return
    assert 0.0 <= policy.jitter <= 1.0
    for attempt in range(2, 12):
        delay = policy.delay_before(attempt)
        for r in (0.0, 0.5, math.nextafter(1.0, 0.0)):
            waited = policy.jittered(delay, r)
            assert delay <= waited <= delay * (1.0 + policy.jitter) <= 2 * delay
            assert policy.jittered(delay, 0.0) == delay


@PROPERTY
@given(st.floats(-1e9, 1e9) | st.just(math.nan), st.floats(-1e9, 1e9) | st.just(math.inf))
def test_restart_policy_rejects_negative_and_inverted_backoff(backoff: float, backoff_max: float) -> None:
    try:
        policy = RestartPolicy(backoff=backoff, backoff_max=backoff_max)
    except ValidationError:
        assert not 0.0 <= backoff <= backoff_max <= 366 * 86_400, (backoff, backoff_max)  # only bad ones refused
        return
    assert 0.0 <= policy.backoff <= policy.backoff_max


# --------------------------------------------------------------------------- durations


@PROPERTY
@given(st.floats(0, 366 * 86_400, allow_nan=False, allow_infinity=False))
def test_durations_format_to_text_that_parses_back_exactly(seconds: float) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds, text
    assert "e" not in text, text


@PROPERTY
@given(st.text(max_size=20) | st.floats() | st.integers() | st.booleans() | st.none())
def test_junk_durations_raise_value_error_only(value: Any) -> None:
    try:
        seconds = parse_duration(value)
    except ValueError:
        return
    assert 0.0 <= seconds <= 366 * 86_400
