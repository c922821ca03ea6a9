"""The ordinary operator path, end to end: stop, start, initialize, save a config, delete, crash.

Real Temporal dev server, real worker, real processes; what the store says (the read model the API, the events
and the dashboard show) is checked against the processes themselves.
"""

from __future__ import annotations

import os
import signal
import uuid

import pytest
from sqlalchemy import select

from tests.helpers import (
    eventually,
    healthy,
    processes_with,
    register,
    running_worker,
    standin,
    terminate_quietly,
)
from windflow.api.schemas import ServicePublic
from windflow.domain.contracts import ControlInput, InitInput, InitOptions, SupervisionState
from windflow.persistence.models import OutboxRow, ServiceRow
from windflow.workflows.control import ServiceControl
from windflow.workflows.initialization import SystemInitialization
from windflow.workflows.supervision import ServiceSupervisor

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def initialize(client, task_queue: str) -> None:
    run_id = uuid.uuid4().hex[:12]
    await client.execute_workflow(SystemInitialization.run,
                                  InitInput(run_id=run_id, options=InitOptions(), actor="tester"),
                                  id=f"init/{run_id}", task_queue=task_queue)


async def control(client, task_queue: str, service_id: str, action: str, actor: str = "alice"):
    result = await client.execute_workflow(
        ServiceControl.run, ControlInput(service_id=service_id, action=action, actor=actor),
        id=f"control/{service_id}/{uuid.uuid4().hex[:8]}", task_queue=task_queue)
    assert result.ok, result
    return result


async def read_model(db, service_id: str) -> ServicePublic:
    async with db.read() as session:
        row = await session.get(ServiceRow, service_id)
        assert row is not None
        return ServicePublic.of(row)


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def the_pid(port: int) -> int:
    pids = processes_with(f"--port {port} ")
    assert len(pids) == 1, pids
    return pids[0]


async def watching_again(client, service_id: str, restarts: int):
    st = await client.get_workflow_handle(f"supervise/{service_id}").query(ServiceSupervisor.query_status)
    return st if st.state == SupervisionState.WATCHING and st.restarts_total >= restarts else None


async def test_stop_then_initialize_then_sigkill_is_recovered(temporal_env, wsettings, sqlite_db, ports, task_queue):
    """An initialization after a user's stop makes the service desired running again: a crash is recovered."""
    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("worker", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(client, "worker", 0), timeout=20)
            await control(client, task_queue, "worker", "stop")
            model = await read_model(sqlite_db, "worker")
            assert (model.state, model.desired, model.desired_by, model.pid) == ("stopped", "stopped", "alice", None)
            await initialize(client, task_queue)
            model = await read_model(sqlite_db, "worker")
            assert model.desired == "running" and model.desired_by == "tester"
            pid = the_pid(port)
            assert model.pid == pid
            await eventually(lambda: watching_again(client, "worker", 0), timeout=20)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(client, "worker", 1), timeout=30)
            assert await healthy(port)
            model = await read_model(sqlite_db, "worker")
            new_pid = the_pid(port)
            assert new_pid != pid and model.pid == new_pid and alive(model.pid)
            assert model.state == "healthy" and model.restarts_total == 1
    finally:
        await terminate_quietly(client, "supervise/worker")


async def test_stop_then_start_then_sigkill_is_recovered(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("api", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(client, "api", 0), timeout=20)
            await control(client, task_queue, "api", "stop")
            assert processes_with(f"--port {port} ") == []
            started = await control(client, task_queue, "api", "start", actor="bob")
            assert started.supervision == "resumed"
            model = await read_model(sqlite_db, "api")
            assert (model.desired, model.desired_by) == ("running", "bob")
            await eventually(lambda: watching_again(client, "api", 0), timeout=20)
            pid = the_pid(port)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(client, "api", 1), timeout=30)
            assert await healthy(port) and the_pid(port) != pid
    finally:
        await terminate_quietly(client, "supervise/api")


async def test_read_model_is_truthful_after_stop_and_counts_restarts(temporal_env, wsettings, sqlite_db, ports,
                                                                      task_queue):
    """No stale pid or "healthy" message after a stop; the restart counter (METRICS_UPDATE.restarts) counts."""
    from windflow.api.metrics_feed import MetricsFeed

    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("web", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(client, "web", 0), timeout=20)
            os.kill(the_pid(port), signal.SIGKILL)
            await eventually(lambda: watching_again(client, "web", 1), timeout=30)
            feed = MetricsFeed(sqlite_db, None, interval=60)  # type: ignore[arg-type]
            figures = {m.service_id: m for m in await feed.collect()}
            assert figures["web"].restarts == 1
            await control(client, task_queue, "web", "stop")
            model = await read_model(sqlite_db, "web")
            assert model.state == "stopped" and model.pid is None
            assert "pid" not in model.state_detail and model.state_detail.get("message") != "healthy"
            assert "healthy_since" not in model.state_detail
            assert processes_with(f"--port {port} ") == []
    finally:
        await terminate_quietly(client, "supervise/web")


async def test_saved_config_is_pending_and_never_run_by_a_recovery(temporal_env, wsettings, sqlite_db, ports,
                                                                   task_queue):
    """Saving a version applies nothing: the next crash restarts the applied version, not the saved one."""
    from windflow.persistence import registry

    client = temporal_env.client
    port = ports()
    spec = standin("svc", port, boot=0.1)
    await register(sqlite_db, spec)
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(client, "svc", 0), timeout=20)
            model = await read_model(sqlite_db, "svc")
            assert (model.applied_version, model.pending_version) == (1, None)
            bad = spec.model_dump(mode="json")
            bad["config"]["command"] = ["/bin/false"]
            async with sqlite_db.write() as session:
                await registry.update_service(session=session, service_id="svc", data=bad, expected_version=1,
                                              author="alice")
            model = await read_model(sqlite_db, "svc")
            assert (model.version, model.applied_version, model.pending_version) == (2, 1, 2)
            pid = the_pid(port)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(client, "svc", 1), timeout=30)
            assert await healthy(port)  # the applied command runs again, not /bin/false
            model = await read_model(sqlite_db, "svc")
            assert model.state == "healthy" and model.pending_version == 2
            # a change of what is observed only (the probe's interval) is applied as it is saved
            probe_only = spec.model_dump(mode="json")
            probe_only["health"]["interval"] = "0.3s"
            async with sqlite_db.write() as session:
                await registry.update_service(session=session, service_id="svc", data=probe_only,
                                              expected_version=2, author="alice")
            model = await read_model(sqlite_db, "svc")
            assert (model.version, model.applied_version, model.pending_version) == (3, 3, None)
    finally:
        await terminate_quietly(client, "supervise/svc")


async def outbox_events(db, event_type: str, service_id: str) -> list[dict]:
    async with db.read() as session:
        rows = (await session.execute(select(OutboxRow).where(OutboxRow.event_type == event_type)
                                      .order_by(OutboxRow.id))).scalars()
        return [r.payload["data"] for r in rows if r.payload["data"].get("service_id") == service_id]
