"""SystemInitialization on a real Temporal dev server, a real worker and real stand-in processes."""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select, update
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowUpdateFailedError

from tests.helpers import (
    eventually,
    kill_process_group,
    processes_with,
    register,
    running_worker,
    standin,
    worker_process,
)
from windflow.domain.contracts import (
    ComponentStatus,
    InitInput,
    InitOptions,
    InitState,
    InitStatus,
    RetryComponentInput,
)
from windflow.persistence import registry
from windflow.persistence.models import OutboxRow, RunSummaryRow, ServiceRow
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")
HISTORIES = Path(__file__).parent / "histories"


async def start_init(client, task_queue, **options) -> tuple[str, object]:
    run_id = uuid.uuid4().hex[:12]
    handle = await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(**options), actor="tester"),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )
    return run_id, handle


async def test_dependency_order_and_concurrent_branches(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    db_port, cache_port, api_port, worker_port = ports(), ports(), ports(), ports()
    specs = [
        standin("database", db_port, boot=0.6, protocol="tcp"),
        standin("cache", cache_port, boot=0.6),
        standin("api", api_port, boot=0.2, deps=["database", "cache"]),
        standin("worker", worker_port, boot=0.2, deps=["database"]),
    ]
    await register(sqlite_db, *specs)
    async with running_worker(client, wsettings, sqlite_db):
        run_id, handle = await start_init(client, task_queue)
        result: InitState = await handle.result()
    assert result.status == InitStatus.SUCCEEDED and result.progress == 100
    comps = result.components
    assert all(c.status == ComponentStatus.HEALTHY for c in comps.values())
    # each component started only after all of its dependencies were healthy
    for comp in comps.values():
        for dep in comp.depends_on:
            assert comp.started_at >= comps[dep].healthy_at, (comp.name, dep)
    # independent roots ran concurrently: each started before the other was healthy
    assert comps["database"].started_at < comps["cache"].healthy_at
    assert comps["cache"].started_at < comps["database"].healthy_at
    assert result.plan == [["cache", "database"], ["api", "worker"]]
    for port in (db_port, cache_port, api_port, worker_port):
        assert len(processes_with(f"--port {port} ")) == 1
    # the summary outlives Temporal's retention, and every transition was published
    async with sqlite_db.read() as s:
        summary = (await s.execute(select(RunSummaryRow).where(RunSummaryRow.run_id == run_id))).scalar_one()
        events = list(
            (
                await s.execute(
                    select(OutboxRow).where(OutboxRow.event_type == "INITIALIZATION_UPDATE").order_by(OutboxRow.id)
                )
            ).scalars()
        )
        states = dict((await s.execute(select(ServiceRow.id, ServiceRow.state))).all())
    assert summary.status == "SUCCEEDED" and summary.finished_at is not None and summary.actor == "tester"
    data = [e.payload["data"] for e in events]
    assert data[-1]["status"] == "SUCCEEDED" and data[-1]["progress"] == 100
    assert {d["component"] for d in data if d["component"]} == {"database", "cache", "api", "worker"}
    progresses = [d["progress"] for d in data]
    assert progresses == sorted(progresses)
    assert set(states.values()) == {"healthy"}
    desc = await handle.describe()
    assert desc.status == WorkflowExecutionStatus.COMPLETED


async def test_validate_only_starts_nothing(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1, p2 = ports(), ports()
    await register(sqlite_db, standin("db", p1), standin("app", p2, deps=["db"]))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, validate_only=True)
        result = await handle.result()
    assert result.status == InitStatus.SUCCEEDED
    assert result.plan == [["db"], ["app"]]
    assert "would start" in result.message
    assert all(c.status == ComponentStatus.PENDING for c in result.components.values())
    await asyncio.sleep(0.3)
    assert processes_with(f"--port {p1} ") == [] and processes_with(f"--port {p2} ") == []


async def test_one_component_pulls_in_its_dependencies(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1, p2, p3 = ports(), ports(), ports()
    await register(sqlite_db, standin("db", p1), standin("app", p2, deps=["db"]), standin("other", p3))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, components=["app"])
        result = await handle.result()
    assert sorted(result.components) == ["app", "db"]
    assert processes_with(f"--port {p3} ") == []


async def test_failure_then_retry_component_after_fixing_config(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1, p2, p3 = ports(), ports(), ports()
    broken = standin("app", p2, deps=["db"], args=["--fail-start"])
    await register(sqlite_db, standin("db", p1), broken, standin("web", p3, deps=["app"]))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, retry_window=120)
        status: InitState = await eventually(lambda: _failed(handle), timeout=30)
        app = status.components["app"]
        assert app.status == ComponentStatus.FAILED and "exited" in (app.last_error or "")
        assert status.components["web"].status == ComponentStatus.SKIPPED
        assert status.components["db"].status == ComponentStatus.HEALTHY
        # a component that is not failed cannot be retried
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(SystemInitialization.retry_component, RetryComponentInput(component="db"))
        # fix the config, then retry: the run completes
        fixed = standin("app", p2, deps=["db"])
        async with sqlite_db.write() as s:
            await registry.update_service(
                session=s, service_id="app", data=fixed.content(), expected_version=1, author="tester", comment="fix"
            )
        accepted = await handle.execute_update(
            SystemInitialization.retry_component, RetryComponentInput(component="app")
        )
        assert accepted.accepted
        result = await handle.result()
    assert result.status == InitStatus.SUCCEEDED
    assert result.components["app"].attempts == 2
    assert result.components["web"].status == ComponentStatus.HEALTHY


async def _failed(handle) -> InitState | None:
    state = await handle.query(SystemInitialization.status)
    return state if state.status == InitStatus.FAILED else None


async def test_failure_without_retry_window_fails_the_run(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1 = ports()
    await register(sqlite_db, standin("bad", p1, args=["--fail-start"]))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, retry_window=0)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
    assert "bad" in str(info.value.cause)


async def test_cancel_rolls_back_in_reverse_dependency_order(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1, p2, p3 = ports(), ports(), ports()
    await register(
        sqlite_db,
        standin("db", p1),
        standin("app", p2, deps=["db"]),
        standin("slow", p3, deps=["app"], boot=60),
    )
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, component_timeout=120)
        await eventually(lambda: _component_is(handle, "slow", ComponentStatus.WAITING_HEALTHY), timeout=30)
        await handle.cancel()
        await eventually(lambda: _described(handle, WorkflowExecutionStatus.CANCELED), timeout=30)
        state: InitState = await handle.query(SystemInitialization.status)
    assert state.status == InitStatus.CANCELLED
    assert {c.status for c in state.components.values()} == {ComponentStatus.STOPPED}
    for port in (p1, p2, p3):
        assert processes_with(f"--port {port} ") == []
    async with sqlite_db.read() as s:
        rows = list(
            (
                await s.execute(
                    select(OutboxRow).where(OutboxRow.event_type == "SERVICE_STATUS_UPDATE").order_by(OutboxRow.id)
                )
            ).scalars()
        )
    stopped = [r.payload["data"]["service_id"] for r in rows if r.payload["data"]["state"] == "stopped"]
    assert stopped == ["slow", "app", "db"]


async def _component_is(handle, name, status) -> bool:
    state = await handle.query(SystemInitialization.status)
    return name in state.components and state.components[name].status == status


async def _described(handle, status) -> bool:
    return (await handle.describe()).status == status


async def test_cycle_is_rejected_before_anything_starts(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    p1, p2 = ports(), ports()
    await register(sqlite_db, standin("a", p1), standin("b", p2, deps=["a"]))
    # a registry edited behind windflow's back (the API refuses cycles): the run must still refuse it
    async with sqlite_db.write() as s:
        await s.execute(update(ServiceRow).where(ServiceRow.id == "a").values(depends_on=["b"]))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue)
        with pytest.raises(WorkflowFailureError) as info:
            await handle.result()
        state: InitState = await handle.query(SystemInitialization.status)
    assert "a -> b -> a" in str(info.value.cause)
    assert state.status == InitStatus.FAILED and state.problems
    assert processes_with(f"--port {p1} ") == [] and processes_with(f"--port {p2} ") == []


async def test_history_replays_without_nondeterminism(temporal_env, wsettings, sqlite_db, ports, task_queue):
    """Record a real history (with a failure, a retry and a cancel-free finish) and replay it."""
    from temporalio.worker import Replayer

    client = temporal_env.client
    p1, p2 = ports(), ports()
    await register(sqlite_db, standin("db", p1), standin("app", p2, deps=["db"], args=["--fail-start"]))
    async with running_worker(client, wsettings, sqlite_db):
        _, handle = await start_init(client, task_queue, retry_window=60)
        await eventually(lambda: _failed(handle), timeout=30)
        async with sqlite_db.write() as s:
            await registry.update_service(
                session=s,
                service_id="app",
                data=standin("app", p2, deps=["db"]).content(),
                expected_version=1,
                author="tester",
            )
        await handle.execute_update(SystemInitialization.retry_component, RetryComponentInput(component="app"))
        await handle.result()
    history = await handle.fetch_history()
    replayer = Replayer(workflows=[SystemInitialization], data_converter=client.data_converter)
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
    if os.environ.get("WINDFLOW_RECORD_HISTORIES"):
        (HISTORIES / "initialization_retry.json").write_text(history.to_json())


async def test_recorded_histories_replay():
    """Histories committed under tests/histories must keep replaying as the workflow code changes."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from windflow.temporal.client import DATA_CONVERTER

    files = sorted(HISTORIES.glob("initialization*.json"))
    assert files, "no recorded histories"
    replayer = Replayer(workflows=[SystemInitialization], data_converter=DATA_CONVERTER)
    for path in files:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        await replayer.replay_workflow(history)


async def test_worker_killed_mid_initialization_completes_without_double_starts(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    """A real worker process is SIGKILL-ed while a component boots; a new one finishes the run."""
    client = temporal_env.client
    p1, p2, p3 = ports(), ports(), ports()
    await register(sqlite_db, standin("a", p1), standin("b", p2, deps=["a"], boot=3.0), standin("c", p3, deps=["b"]))
    first = worker_process(wsettings, tmp_path, "worker1")
    second = None
    try:
        _, handle = await start_init(client, task_queue)
        state = await eventually(lambda: _component_state(handle, "b", ComponentStatus.WAITING_HEALTHY), timeout=40)
        pid_a = state.components["a"].pid
        kill_process_group(first)
        second = worker_process(wsettings, tmp_path, "worker2")
        result: InitState = await asyncio.wait_for(handle.result(), timeout=90)
    finally:
        kill_process_group(first)
        kill_process_group(second)
    assert result.status == InitStatus.SUCCEEDED
    for port in (p1, p2, p3):
        assert len(processes_with(f"--port {port} ")) == 1, port
    assert result.components["a"].pid == pid_a
    assert processes_with(f"--port {p1} ") == [pid_a]


async def _component_state(handle, name, status) -> InitState | None:
    state = await handle.query(SystemInitialization.status)
    comp = state.components.get(name)
    return state if comp is not None and comp.status == status else None
