"""Supervision and recovery on a real Temporal dev server, a real worker and real processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy

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
    watching,
    worker_process,
)
from windflow.domain.contracts import (
    ControlInput,
    RecoveryInput,
    SupervisionState,
    SupervisorStatus,
    SweepInput,
)
from windflow.domain.notifications import ChannelConfig
from windflow.workflows.control import RecoverySweep, ServiceControl
from windflow.workflows.supervision import ServiceRecovery

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def status_of(handle) -> SupervisorStatus:
    return await handle.status()


def spawns(wsettings, service_id: str) -> int:
    """How many times the stand-in booted (it logs one line per boot)."""
    log = Path(wsettings.data_dir) / "logs" / f"{service_id}.out.log"
    return log.read_text().count("booting") if log.exists() else 0


async def stop_supervisor(handle) -> None:
    await handle.terminate("test over")


async def test_sigkilled_service_is_restarted_and_healthy(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    spec = standin("web", port, boot=0.2)
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=10)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "web", sqlite_db)
        await eventually(lambda: watching(handle), timeout=15)
        os.kill(pid, signal.SIGKILL)
        st = await eventually(lambda: watching(handle, restarts=1), timeout=20)
        assert await healthy(port)
        new = processes_with(f"--port {port} ")
        assert len(new) == 1 and new[0] != pid
        assert st.last_verdict is not None and st.last_verdict.verdict == "exited"
        assert st.last_recovery_seconds is not None
        await stop_supervisor(handle)


async def test_hung_service_is_detected_and_restarted(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    spec = standin("hung", port, boot=0.1, interval="0.2s", failure_threshold=2)
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=10)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "hung", sqlite_db)
        await eventually(lambda: watching(handle), timeout=15)
        async with httpx2.AsyncClient() as http:
            await http.post(f"http://127.0.0.1:{port}/hang")
        st = await eventually(lambda: watching(handle, restarts=1), timeout=30)
        assert st.last_verdict.verdict == "unhealthy"
        assert st.last_verdict.probes and not st.last_verdict.probes[-1].healthy
        assert processes_with(f"--port {port} ") != [pid]
        assert await healthy(port)
        await stop_supervisor(handle)


class Receiver:
    """A real local HTTP server that records the webhooks it gets."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                outer.bodies.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_crash_loop_hits_start_limit_escalates_once(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    receiver = Receiver()
    try:
        port = ports()
        spec = standin(
            "crashy",
            port,
            boot=0.1,
            args=["--crash-after", "0.3"],
            restart={"max_attempts": 3, "backoff": "100ms", "backoff_max": "200ms", "on_give_up": "escalate"},
        )
        await register(sqlite_db, spec)
        await start_service(wsettings, spec)
        settings = wsettings.model_copy(
            update={
                "outbound_private_notify": True,
                "notification_channels": [ChannelConfig(name="hook", kind="webhook", url=receiver.url)],
            }
        )
        async with running_worker(client, settings, sqlite_db):
            handle = await supervise(client, task_queue, "crashy", sqlite_db)
            st = await eventually(lambda: _in_state(handle, SupervisionState.GAVE_UP), timeout=60)
            await asyncio.sleep(1.0)  # nothing more happens once it gave up
            st = await status_of(handle)
            assert st.state == SupervisionState.GAVE_UP
            assert st.attempt == 3
            assert processes_with(f"--port {port} ") == []  # escalate: left stopped
            gave_up = [b for b in receiver.bodies if b.get("kind") == "gave_up"]
            assert len(gave_up) == 1, receiver.bodies
            assert gave_up[0]["service_id"] == "crashy"
            await stop_supervisor(handle)
    finally:
        receiver.close()


async def _in_state(handle, state) -> SupervisorStatus | None:
    st = await status_of(handle)
    return st if st.state == state else None


async def test_two_simultaneous_triggers_make_one_recovery(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    spec = standin("dup", port, boot=0.5)
    await register(sqlite_db, spec)
    await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=10)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "dup", sqlite_db)
        await eventually(lambda: watching(handle), timeout=15)
        before = spawns(wsettings, "dup")

        async def trigger():
            return await client.start_workflow(
                ServiceRecovery.run,
                RecoveryInput(service_id="dup", reason="test", actor="tester"),
                id="recover/dup",
                task_queue=task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            )

        first, second = await asyncio.gather(trigger(), trigger())
        assert first.result_run_id == second.result_run_id
        result = await first.result()
        assert result.outcome == "recovered"
        st = await eventually(lambda: watching(handle, restarts=1), timeout=20)
        assert st.restarts_total == 1
        assert spawns(wsettings, "dup") == before + 1
        await stop_supervisor(handle)


async def test_user_stop_is_not_undone(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    spec = standin("manual", port, boot=0.1)
    await register(sqlite_db, spec)
    await start_service(wsettings, spec)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "manual", sqlite_db)
        await eventually(lambda: watching(handle), timeout=15)
        stop = await client.execute_workflow(
            ServiceControl.run,
            ControlInput(service_id="manual", action="stop", actor="alice"),
            id="control/manual/1",
            task_queue=task_queue,
        )
        assert stop.ok and stop.supervision == "paused"
        await asyncio.sleep(1.5)
        st = await status_of(handle)
        row = await handle.row()
        assert st.state == SupervisionState.PAUSED and row.desired == "stopped" and row.desired_by == "alice"
        assert row.state == "stopped" and not await handle.recovering()
        assert processes_with(f"--port {port} ") == []
        start = await client.execute_workflow(
            ServiceControl.run,
            ControlInput(service_id="manual", action="start", actor="alice"),
            id="control/manual/2",
            task_queue=task_queue,
        )
        assert start.ok and start.supervision == "resumed"
        await eventually(lambda: watching(handle), timeout=15)
        assert await healthy(port)
        await stop_supervisor(handle)


async def test_sweep_restores_a_lost_watcher_recovers_and_schedule_exists(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """The sweep starts the watcher a queue lost, and recovers a service that died while nothing watched it."""
    from windflow.schedules import SWEEP_SCHEDULE_ID, ensure_sweep_schedule

    client = temporal_env.client
    port = ports()
    spec = standin("swept", port, boot=0.1)
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "swept", sqlite_db)
        await eventually(lambda: watching(handle), timeout=15)
        await handle.watcher.terminate("simulating a lost watcher")
        # its activity ends at its next heartbeat (throttled to 80 % of the 5 s heartbeat timeout)
        await asyncio.sleep(6)
        os.kill(pid, signal.SIGKILL)  # unseen: nothing watches
        await asyncio.sleep(0.5)
        assert (await handle.row()).state == "healthy"  # stale until observed
        async with sqlite_db.write() as session:  # what a watcher of the previous run last wrote
            from windflow.persistence.repositories import ServiceRepository

            row = await ServiceRepository().get(session=session, service_id="swept")
            row.state = "unhealthy"
        result = await client.execute_workflow(
            RecoverySweep.run, SweepInput(actor="tester"), id="sweep/test", task_queue=task_queue
        )
        assert result.watchers_started == [task_queue]
        assert result.recoveries_started == ["swept"]
        fresh = client.get_workflow_handle(f"watch/{task_queue}")
        assert (await fresh.describe()).status == WorkflowExecutionStatus.RUNNING
        await eventually(lambda: watching(handle, restarts=1), timeout=20)
        assert await healthy(port)
        # the schedule exists in Temporal and can be triggered
        schedule = await ensure_sweep_schedule(
            client, task_queue=task_queue, every=timedelta(minutes=5), schedule_id=f"{SWEEP_SCHEDULE_ID}-{task_queue}"
        )
        desc = await schedule.describe()
        assert desc.schedule.spec.intervals[0].every == timedelta(minutes=5)
        await schedule.trigger()
        await eventually(lambda: _schedule_ran(schedule), timeout=20)
        await schedule.delete()
        await handle.terminate()


async def _schedule_ran(schedule) -> bool:
    desc = await schedule.describe()
    return bool(desc.info.recent_actions)


async def test_dependency_down_blocks_dependants_without_restart_storm(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    client = temporal_env.client
    db_port, a_port, b_port = ports(), ports(), ports()
    db = standin("db", db_port, boot=2.0, protocol="tcp", interval="0.2s")
    apps = [
        standin(
            name,
            port,
            boot=0.1,
            deps=["db"],
            args=["--requires", f"127.0.0.1:{db_port}"],
            interval="0.2s",
            failure_threshold=2,
        )
        for name, port in (("app-a", a_port), ("app-b", b_port))
    ]
    await register(sqlite_db, db, *apps)
    db_pid = await start_service(wsettings, db)
    await eventually(lambda: _tcp_up(db_port), timeout=10)
    for spec in apps:
        await start_service(wsettings, spec)
    async with running_worker(client, wsettings, sqlite_db):
        handles = {name: await supervise(client, task_queue, name, sqlite_db) for name in ("db", "app-a", "app-b")}
        for handle in handles.values():
            await eventually(lambda h=handle: watching(h), timeout=20)
        app_spawns = {n: spawns(wsettings, n) for n in ("app-a", "app-b")}
        os.kill(db_pid, signal.SIGKILL)
        await eventually(lambda: _in_state(handles["app-a"], SupervisionState.BLOCKED), timeout=20)
        st = await status_of(handles["app-b"])
        # not seen failing yet, or its recovery begun (checking its dependencies) or blocked: never restarting
        assert st.state in (SupervisionState.BLOCKED, SupervisionState.WATCHING, SupervisionState.STARTING)
        await eventually(lambda: watching(handles["db"], restarts=1), timeout=30)
        for name in ("app-a", "app-b"):
            await eventually(lambda n=name: watching(handles[n]), timeout=20)
            st = await status_of(handles[name])
            assert st.restarts_total == 0, st
            assert spawns(wsettings, name) == app_spawns[name]
        assert await healthy(a_port) and await healthy(b_port)
        for handle in handles.values():
            await handle.terminate()


async def _tcp_up(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()
        return True
    except OSError:
        return False


async def test_worker_killed_mid_recovery_restarts_once(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    client = temporal_env.client
    port = ports()
    spec = standin("slowboot", port, boot=3.0)
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=15)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        handle = await supervise(client, task_queue, "slowboot", sqlite_db, heartbeat_timeout=3)
        await eventually(lambda: watching(handle), timeout=30)
        booted = spawns(wsettings, "slowboot")
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: _in_state(handle, SupervisionState.RECOVERING), timeout=20)
        await eventually(lambda: spawns(wsettings, "slowboot") == booted + 1, timeout=10)
        kill_process_group(first)  # the restarted service is still booting: the recovery is in flight
        second = worker_process(wsettings, tmp_path, "w2")
        st = await eventually(lambda: watching(handle, restarts=1), timeout=60)
        assert spawns(wsettings, "slowboot") == booted + 1  # one restart, not two
        assert len(processes_with(f"--port {port} ")) == 1
        assert st.restarts_total == 1
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


async def test_worker_killed_during_backoff_resumes_the_timer(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    client = temporal_env.client
    port = ports()
    flag = tmp_path / "broken"
    spec = standin(
        "flaky",
        port,
        boot=0.1,
        args=["--fail-start-while", str(flag)],
        restart={"max_attempts": 5, "backoff": "4s", "multiplier": 1, "backoff_max": "4s", "jitter": 0},
    )
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=10)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        handle = await supervise(client, task_queue, "flaky", sqlite_db, heartbeat_timeout=3)
        await eventually(lambda: watching(handle), timeout=30)
        flag.write_text("x")
        os.kill(pid, signal.SIGKILL)
        st = await eventually(lambda: _in_state(handle, SupervisionState.BACKING_OFF), timeout=20)
        due = st.next_attempt_at
        assert st.attempt == 1 and due is not None
        kill_process_group(first)
        flag.unlink()
        second = worker_process(wsettings, tmp_path, "w2")
        st = await eventually(lambda: watching(handle, restarts=2), timeout=60)
        assert st.attempt == 2  # the failed restart and the one after the backoff
        assert st.healthy_since is not None and st.healthy_since >= due
        assert (st.healthy_since - due).total_seconds() < 15
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


async def test_human_gate_waits_for_a_decision(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    spec = standin(
        "gated",
        port,
        boot=0.1,
        args=["--crash-after", "0.3"],
        restart={
            "max_attempts": 2,
            "backoff": "100ms",
            "backoff_max": "100ms",
            "on_give_up": "ask",
            "ask_timeout": "1h",
        },
    )
    await register(sqlite_db, spec)
    await start_service(wsettings, spec)
    async with running_worker(client, wsettings, sqlite_db):
        handle = await supervise(client, task_queue, "gated", sqlite_db)
        st = await eventually(lambda: _in_state(handle, SupervisionState.WAITING_DECISION), timeout=60)
        assert st.attempt == 2
        spawned = spawns(wsettings, "gated")
        await asyncio.sleep(0.8)
        assert spawns(wsettings, "gated") == spawned  # waits for the operator, durably
        await handle.decide("approve", "bob")
        await eventually(lambda: spawns(wsettings, "gated") > spawned, timeout=20)  # another round runs
        await eventually(lambda: _in_state(handle, SupervisionState.WAITING_DECISION), timeout=60)
        await handle.decide("keep_stopped", "bob")
        await eventually(lambda: _in_state(handle, SupervisionState.GAVE_UP), timeout=20)
        assert processes_with(f"--port {port} ") == []
        await stop_supervisor(handle)
