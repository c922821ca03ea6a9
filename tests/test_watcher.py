"""The watcher model: one ``watch/{queue}`` per task queue, recoveries on demand, its faults and its upgrade path.

Real Temporal dev servers (the session's, and restartable ones on a SQLite file), real workers (in process and
as OS processes) and real services.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from tests.helpers import (
    eventually,
    healthy,
    kill_process_group,
    processes_with,
    register,
    running_worker,
    standin,
    start_service,
    supervise,
    terminate_quietly,
    watching,
    worker_process,
)
from windflow.domain.contracts import RecoveryInput
from windflow.persistence.models import ServiceRow
from windflow.temporal import search_attributes as sa
from windflow.temporal.client import DATA_CONVERTER

pytestmark = pytest.mark.asyncio(loop_scope="session")

HISTORIES = Path(__file__).parent / "histories"


def boots(settings, service_id: str) -> int:
    log = Path(settings.data_dir) / "logs" / f"{service_id}.out.log"
    return log.read_text().count("booting") if log.exists() else 0


async def state_of(db, service_id: str) -> str:
    async with db.read() as session:
        return (await session.get(ServiceRow, service_id)).state


async def test_recorded_watcher_and_recovery_histories_replay():
    """A watcher run (watch, then continue-as-new) and an on-demand recovery (a crash the watcher reported:
    detected, restarted, recovered) replay on today's code."""
    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from windflow.workflows.supervision import ServiceRecovery
    from windflow.workflows.watch import Watcher

    replayer = Replayer(workflows=[Watcher, ServiceRecovery], data_converter=DATA_CONVERTER)
    for name, must in (
        ("watcher", ["watch_queue", "CONTINUED_AS_NEW"]),
        ("recovery_on_demand", ["begin_recovery", "recover_step", "record_supervision"]),
    ):
        text = (HISTORIES / f"{name}.json").read_text()
        assert all(m in text for m in must), name
        result = await replayer.replay_workflow(WorkflowHistory.from_json(name, text))
        assert result.replay_failure is None, name


async def test_one_watcher_watches_many_services_and_a_hanging_probe_delays_nobody(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """Three services under one watch activity: one hangs (its probe times out), the others keep being probed
    at their own interval and a crash of another is recovered meanwhile; the unmonitored one is reported
    unhealthy, never restarted."""
    import httpx2

    client = temporal_env.client
    p_hung, p_fast, p_free = ports(), ports(), ports()
    hung = standin("hangs", p_hung, boot=0.1, interval="0.3s", failure_threshold=100, restart={"max_attempts": 1})
    fast = standin("fast", p_fast, boot=0.1, interval="0.2s")
    free = standin("free", p_free, boot=0.1, interval="0.2s", monitored=False)
    await register(sqlite_db, hung, fast, free)
    pids = {s.id: await start_service(wsettings, s) for s in (hung, fast, free)}
    async with running_worker(client, wsettings, sqlite_db):
        handles = {name: await supervise(client, task_queue, name, sqlite_db) for name in pids}
        for handle in handles.values():
            await eventually(lambda h=handle: watching(h), timeout=20)
        async with httpx2.AsyncClient() as http:
            await http.post(f"http://127.0.0.1:{p_hung}/hang")  # every probe of it now waits out its timeout
        await asyncio.sleep(1.0)
        os.kill(pids["fast"], signal.SIGKILL)
        await eventually(lambda: watching(handles["fast"], restarts=1), timeout=15)
        assert await healthy(p_fast)
        os.kill(pids["free"], signal.SIGKILL)  # unmonitored: observed and reported, never recovered
        await eventually(lambda: _state_is(sqlite_db, "free", "unhealthy"), timeout=10)
        await asyncio.sleep(1.0)
        assert processes_with(f"--port {p_free} ") == [] and not await handles["free"].recovering()
        # one watch activity for the queue, whatever the number of services
        desc = await handles["fast"].watcher.describe()
        watches = [p for p in desc.raw_description.pending_activities if p.activity_type.name == "watch_queue"]
        assert len(watches) == 1
        for handle in handles.values():
            await handle.terminate()


async def _state_is(db, service_id: str, state: str) -> bool:
    return await state_of(db, service_id) == state


async def test_a_changed_probe_reaches_the_watch_within_two_seconds(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """A registry change (here a probe's URL, written as `PUT /system` writes it) is picked up by the running
    watch through the change stamp: the watch probes the new URL within 2 s."""
    from windflow.persistence import registry
    from windflow.persistence.repositories import ProbeResultRepository

    client = temporal_env.client
    port = ports()
    spec = standin("reprobed", port, boot=0.1, interval="0.2s", failure_threshold=100, monitored=False)
    await register(sqlite_db, spec)
    await start_service(wsettings, spec)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "reprobed", sqlite_db)
        await eventually(lambda: watching(handle), timeout=20)
        # the probe now asks a page that is not there, and one failure is a verdict (its evidence is written at
        # once; other probe results are written in batches every 15 s)
        changed = spec.model_dump(mode="json", exclude={"id"})
        changed["health"]["url"] = f"http://127.0.0.1:{port}/no-such-page"
        changed["health"]["failure_threshold"] = 1
        async with sqlite_db.write() as session:
            await registry.update_service(
                session=session, service_id="reprobed", data=changed, expected_version=1, author="tester"
            )
        loop = asyncio.get_running_loop()
        saved = loop.time()

        async def probed_new_url() -> bool:
            async with sqlite_db.read() as session:
                recent = await ProbeResultRepository().recent(session=session, service_id="reprobed", limit=5)
            return any("404" in r.message for r in recent)

        await eventually(probed_new_url, timeout=2.0)
        assert loop.time() - saved <= 2.0
        assert await state_of(sqlite_db, "reprobed") == "unhealthy"
        await handle.terminate()


async def test_worker_killed_during_a_restart_is_recovered_without_a_double_start(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    """SIGKILL the only worker while the recovery's restart is in flight (the new process boots for 2 s): the next
    worker finishes the recovery with that same process, and the watch goes on (another crash recovered)."""
    client = temporal_env.client
    port = ports()
    spec = standin("midway", port, boot=2.0)
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=15)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        handle = await supervise(client, task_queue, "midway", sqlite_db, heartbeat_timeout=3)
        await eventually(lambda: watching(handle), timeout=40)
        booted = boots(wsettings, "midway")
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: boots(wsettings, "midway") == booted + 1, timeout=20)
        kill_process_group(first)
        second = worker_process(wsettings, tmp_path, "w2")
        await eventually(lambda: watching(handle, restarts=1), timeout=60)
        assert boots(wsettings, "midway") == booted + 1
        assert len(processes_with(f"--port {port} ")) == 1
        os.kill(processes_with(f"--port {port} ")[0], signal.SIGKILL)  # the new worker watches it
        await eventually(lambda: watching(handle, restarts=2), timeout=30)
        assert boots(wsettings, "midway") == booted + 2 and await healthy(port)
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


async def test_dev_server_restarted_on_its_sqlite_file_watching_resumes(sqlite_db, ports, tmp_path):
    """The Temporal dev server is SIGKILLed and started again on the same SQLite file: the watcher's activity
    goes on (or is retried), and a crash after the outage is recovered."""
    from tests.test_faults import DevServer, settings_for

    server = DevServer(tmp_path)
    await server.start()
    try:
        client = await eventually(lambda: _connect(server.address), timeout=60, interval=0.25)
        from windflow.worker import ensure_search_attributes

        await ensure_search_attributes(client, "default")
        task_queue = f"tq-{uuid.uuid4().hex[:10]}"
        settings = settings_for(
            tmp_path, database_url=str(sqlite_db.engine.url), temporal=server.address, task_queue=task_queue
        )
        port = ports()
        spec = standin("outage", port, boot=0.2)
        await register(sqlite_db, spec)
        await start_service(settings, spec)
        async with running_worker(client, settings, sqlite_db):
            handle = await supervise(client, task_queue, "outage", sqlite_db)
            await eventually(lambda: watching(handle), timeout=30)
            server.kill()
            await asyncio.sleep(2.0)  # an outage, not a blip
            await server.start()
            await eventually(lambda: _running(handle.watcher), timeout=60, interval=0.25)
            os.kill(processes_with(f"--port {port} ")[0], signal.SIGKILL)
            await eventually(lambda: watching(handle, restarts=1), timeout=90, interval=0.25)
            assert await healthy(port) and len(processes_with(f"--port {port} ")) == 1
            await handle.terminate()
    finally:
        server.kill()


async def _connect(address: str) -> Client | None:
    """A client once the dev server's frontend answers ("Frontend is not healthy yet" until then)."""
    try:
        return await Client.connect(address, namespace="default", data_converter=DATA_CONVERTER)
    except RuntimeError:
        return None


async def _running(handle) -> bool:
    return (await handle.describe()).status == WorkflowExecutionStatus.RUNNING


async def test_everything_killed_then_windflow_restarted_brings_the_system_back(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    """A reboot: the worker and every service are SIGKILLed. Nothing says `healthy` for a dead process once
    windflow runs again, and a new worker brings every service back, dependencies first, with no operator
    action."""
    client = temporal_env.client
    p_db, p_app = ports(), ports()
    db_spec = standin("store", p_db, boot=0.5, protocol="tcp")
    app_spec = standin("front", p_app, boot=0.1, deps=["store"], args=["--requires", f"127.0.0.1:{p_db}"])
    await register(sqlite_db, db_spec, app_spec)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        for spec in (db_spec, app_spec):
            await start_service(wsettings, spec)
        handles = {
            name: await supervise(client, task_queue, name, sqlite_db, heartbeat_timeout=3)
            for name in ("store", "front")
        }
        for handle in handles.values():
            await eventually(lambda h=handle: watching(h), timeout=40)
        kill_process_group(first)
        for port in (p_db, p_app):
            for pid in processes_with(f"--port {port} "):
                os.killpg(os.getpgid(pid), signal.SIGKILL)
        await eventually(
            lambda: not processes_with(f"--port {p_db} ") and not processes_with(f"--port {p_app} "), timeout=10
        )
        second = worker_process(wsettings, tmp_path, "w2")
        # no stale "healthy": unknown until observed, then recovering, then healthy again
        await eventually(lambda: _not_healthy(sqlite_db, "store", "front"), timeout=20, interval=0.02)
        for name in ("store", "front"):
            await eventually(lambda n=name: watching(handles[n], restarts=1), timeout=60)
        assert await healthy(p_app)
        assert len(processes_with(f"--port {p_db} ")) == 1 and len(processes_with(f"--port {p_app} ")) == 1
        for handle in handles.values():
            await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


async def _not_healthy(db, *names: str) -> bool:
    states = [await state_of(db, n) for n in names]
    return all(state != "healthy" for state in states)


async def test_a_starting_worker_ends_the_supervisors_of_the_previous_version(
    temporal_env, wsettings, sqlite_db, task_queue
):
    """Upgrade path: `supervise/{service}` workflows left by the previous version are terminated, with a reason
    naming the watcher, by the worker that starts (the watcher takes their services over)."""
    from windflow.temporal.watchers import SUPERVISORS_ENDED
    from windflow.worker import take_over_watching

    client = temporal_env.client
    name = f"old-{uuid.uuid4().hex[:6]}"
    old = await client.start_workflow(
        "ServiceSupervisor",
        RecoveryInput(service_id=name),
        id=f"supervise/{name}",
        task_queue=f"{task_queue}-previous-version",  # nobody polls it: it just stays open, as a leftover
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(sa.KIND, "supervisor"), SearchAttributePair(sa.SERVICE, name)]
        ),
    )
    await eventually(lambda: _listed(client, old.id), timeout=20)
    await take_over_watching(client, task_queue, None)
    desc = await old.describe()
    assert desc.status == WorkflowExecutionStatus.TERMINATED
    terminated = [e async for e in old.fetch_history_events()][-1]
    assert terminated.workflow_execution_terminated_event_attributes.reason == SUPERVISORS_ENDED
    assert await _running(client.get_workflow_handle(f"watch/{task_queue}"))
    await terminate_quietly(client, f"watch/{task_queue}")


async def _listed(client, workflow_id: str) -> bool:
    query = f"WindflowKind = 'supervisor' AND ExecutionStatus = 'Running' AND WorkflowId = '{workflow_id}'"
    return bool([w async for w in client.list_workflows(query)])
