"""The ordinary operator path, end to end: stop, start, initialize, save a config, delete, crash.

Real Temporal dev server, real worker, real processes; what the store says (the read model the API, the events
and the dashboard show) is checked against the processes themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from windflow.workflows.supervision import ServiceRecovery

pytestmark = pytest.mark.asyncio(loop_scope="session")

#: the service ids of this file's tests; the dev server is shared by the session, and recovery ids are global
NAMES = ("api", "app", "base", "child", "crashy", "flaky", "gone", "probed", "rolled", "svc", "top", "web", "worker")


@pytest.fixture(autouse=True)
async def no_recovery_of_another_test(temporal_env):
    """Another test's recovery under one of these ids (e.g. test_initialization's `recover/worker`, on a queue
    nobody serves any more) would be joined: end them before each test."""
    from tests.helpers import terminate_quietly

    await terminate_quietly(temporal_env.client, *(f"recover/{name}" for name in NAMES))
    yield


async def initialize(client, task_queue: str) -> None:
    run_id = uuid.uuid4().hex[:12]
    await client.execute_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(), actor="tester"),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )


async def control(client, task_queue: str, service_id: str, action: str, actor: str = "alice"):
    result = await client.execute_workflow(
        ServiceControl.run,
        ControlInput(service_id=service_id, action=action, actor=actor),
        id=f"control/{service_id}/{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )
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


async def recovering(client, service_id: str) -> bool:
    from temporalio.client import WorkflowExecutionStatus
    from temporalio.service import RPCError

    try:
        desc = await client.get_workflow_handle(f"recover/{service_id}").describe()
    except RPCError:
        return False
    return desc.status == WorkflowExecutionStatus.RUNNING


async def watching_again(db, client, service_id: str, restarts: int):
    """The read model once the service is healthy again after ``restarts`` restarts, with no recovery running."""
    model = await read_model(db, service_id)
    if model.state != "healthy" or model.restarts_total < restarts or await recovering(client, service_id):
        return None
    return model


async def test_stop_then_initialize_then_sigkill_is_recovered(temporal_env, wsettings, sqlite_db, ports, task_queue):
    """An initialization after a user's stop makes the service desired running again: a crash is recovered."""
    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("worker", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "worker", 0), timeout=20)
            await control(client, task_queue, "worker", "stop")
            model = await read_model(sqlite_db, "worker")
            assert (model.state, model.desired, model.desired_by, model.pid) == ("stopped", "stopped", "alice", None)
            await initialize(client, task_queue)
            model = await read_model(sqlite_db, "worker")
            assert model.desired == "running" and model.desired_by == "tester"
            pid = the_pid(port)
            assert model.pid == pid
            await eventually(lambda: watching_again(sqlite_db, client, "worker", 0), timeout=20)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(sqlite_db, client, "worker", 1), timeout=30)
            assert await healthy(port)
            model = await read_model(sqlite_db, "worker")
            new_pid = the_pid(port)
            assert new_pid != pid and model.pid == new_pid and alive(model.pid)
            assert model.state == "healthy" and model.restarts_total == 1
    finally:
        await terminate_quietly(client, "recover/worker")


async def test_stop_then_start_then_sigkill_is_recovered(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("api", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "api", 0), timeout=20)
            await control(client, task_queue, "api", "stop")
            assert processes_with(f"--port {port} ") == []
            started = await control(client, task_queue, "api", "start", actor="bob")
            assert started.supervision == "resumed"
            model = await read_model(sqlite_db, "api")
            assert (model.desired, model.desired_by) == ("running", "bob")
            await eventually(lambda: watching_again(sqlite_db, client, "api", 0), timeout=20)
            pid = the_pid(port)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(sqlite_db, client, "api", 1), timeout=30)
            assert await healthy(port) and the_pid(port) != pid
    finally:
        await terminate_quietly(client, "recover/api")


async def test_read_model_is_truthful_after_stop_and_counts_restarts(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """No stale pid or "healthy" message after a stop; the restart counter (METRICS_UPDATE.restarts) counts."""
    from windflow.api.metrics_feed import MetricsFeed

    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("web", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "web", 0), timeout=20)
            os.kill(the_pid(port), signal.SIGKILL)
            await eventually(lambda: watching_again(sqlite_db, client, "web", 1), timeout=30)
            feed = MetricsFeed(sqlite_db, None, interval=60)  # type: ignore[arg-type]
            figures = {m.service_id: m for m in await feed.collect()}
            assert figures["web"].restarts == 1
            await control(client, task_queue, "web", "stop")
            model = await read_model(sqlite_db, "web")
            assert model.state == "stopped" and model.pid is None
            assert "pid" not in model.state_detail and model.state_detail.get("message") != "healthy"
            assert "healthy_since" not in model.state_detail
            assert processes_with(f"--port {port} ") == []
            # the stop was "stopping" (desired stopped, process not gone yet) before "stopped"
            states = [e["state"] for e in await outbox_events(sqlite_db, "SERVICE_STATUS_UPDATE", "web")]
            assert states[-2:] == ["stopping", "stopped"], states
    finally:
        await terminate_quietly(client, "recover/web")


async def test_saved_config_is_pending_and_never_run_by_a_recovery(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """Saving a version applies nothing: the next crash restarts the applied version, not the saved one."""
    from windflow.persistence import registry

    client = temporal_env.client
    port = ports()
    spec = standin("svc", port, boot=0.1)
    await register(sqlite_db, spec)
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "svc", 0), timeout=20)
            model = await read_model(sqlite_db, "svc")
            assert (model.applied_version, model.pending_version) == (1, None)
            bad = spec.model_dump(mode="json")
            bad["config"]["command"] = ["/bin/false"]
            async with sqlite_db.write() as session:
                await registry.update_service(
                    session=session, service_id="svc", data=bad, expected_version=1, author="alice"
                )
            model = await read_model(sqlite_db, "svc")
            assert (model.version, model.applied_version, model.pending_version) == (2, 1, 2)
            pid = the_pid(port)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching_again(sqlite_db, client, "svc", 1), timeout=30)
            assert await healthy(port)  # the applied command runs again, not /bin/false
            model = await read_model(sqlite_db, "svc")
            assert model.state == "healthy" and model.pending_version == 2
            # a change of what is observed only (the probe's interval) is applied as it is saved
            probe_only = spec.model_dump(mode="json")
            probe_only["health"]["interval"] = "0.3s"
            async with sqlite_db.write() as session:
                await registry.update_service(
                    session=session, service_id="svc", data=probe_only, expected_version=2, author="alice"
                )
            model = await read_model(sqlite_db, "svc")
            assert (model.version, model.applied_version, model.pending_version) == (3, 3, None)
    finally:
        await terminate_quietly(client, "recover/svc")


async def outbox_events(db, event_type: str, service_id: str) -> list[dict]:
    async with db.read() as session:
        rows = (
            await session.execute(select(OutboxRow).where(OutboxRow.event_type == event_type).order_by(OutboxRow.id))
        ).scalars()
        return [r.payload["data"] for r in rows if r.payload["data"].get("service_id") == service_id]


async def ws_events(ws, wanted, timeout: float = 60.0) -> list[dict]:
    """Read the socket until ``wanted(collected)`` holds; every event's envelope, in order."""
    from tests.live_server import next_of

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    got: list[dict] = []
    while not wanted(got):
        assert loop.time() < deadline, [
            (e["event_type"], e["data"].get("state") or e["data"].get("status")) for e in got
        ]
        msg = await next_of(ws, "event", max(0.01, deadline - loop.time()))
        got.append(msg["event"] if "event" in msg else msg)
    return got


def statuses(got: list[dict], service_id: str) -> list[dict]:
    return [
        e["data"] for e in got if e["event_type"] == "SERVICE_STATUS_UPDATE" and e["data"]["service_id"] == service_id
    ]


async def test_blocked_gave_up_and_recovered_reach_the_dashboard(temporal_env, wsettings, sqlite_db, ports, task_queue):
    """Each change of status is a SERVICE_STATUS_UPDATE on the WebSocket, and blocked/recovered are notified."""
    from tests.conftest import mint_token
    from tests.live_server import LiveServer, open_ws
    from tests.servers import Receiver
    from windflow.api.app import build_resources, create_app
    from windflow.domain.notifications import ChannelConfig
    from windflow.events.relay import OutboxRelay

    client = temporal_env.client
    receiver = Receiver()
    p_base, p_top, p_crashy = ports(), ports(), ports()
    await register(
        sqlite_db,
        standin("base", p_base, boot=0.1),
        standin("top", p_top, boot=0.1, deps=["base"]),
        standin(
            "crashy",
            p_crashy,
            boot=0.1,
            args=["--crash-after", "0.8"],
            restart={
                "max_attempts": 2,
                "backoff": "100ms",
                "backoff_max": "200ms",
                "on_give_up": "escalate",
                "reset_after": "1h",
            },
        ),
    )
    api_settings = wsettings.model_copy(update={"events_metrics_interval": 0.0, "ws_heartbeat": 30.0})
    res = await build_resources(api_settings, migrate=False)
    await res.db.dispose()
    res.db = sqlite_db
    res.relay = OutboxRelay(sqlite_db, res.bus, interval=0.05)
    worker_settings = wsettings.model_copy(
        update={
            "outbound_private_notify": True,
            "notification_channels": [ChannelConfig(name="hook", kind="webhook", url=receiver.url + "/hook")],
        }
    )
    try:
        async with (
            LiveServer(create_app(api_settings, resources=res)) as server,
            open_ws(server.ws_url + "?types=SERVICE_STATUS_UPDATE,RECOVERY_UPDATE", mint_token(api_settings)) as ws,
            running_worker(client, worker_settings, sqlite_db),
        ):
            await initialize(client, task_queue)
            for name in ("base", "top"):
                await eventually(lambda name=name: watching_again(sqlite_db, client, name, 0), timeout=20)
            # crashy crashes until supervision gives up
            got = await ws_events(ws, lambda got: any(s["state"] == "gave_up" for s in statuses(got, "crashy")))
            gave_up = [s for s in statuses(got, "crashy") if s["state"] == "gave_up"][0]
            assert gave_up["reason"] and gave_up["pid"] is None
            # base stopped by a user, then top crashes: top is blocked, not restarted
            await control(client, task_queue, "base", "stop")
            os.kill(the_pid(p_top), signal.SIGKILL)
            got = await ws_events(ws, lambda got: any(s["state"] == "blocked" for s in statuses(got, "top")))
            blocked = [s for s in statuses(got, "top") if s["state"] == "blocked"][0]
            assert "base" in blocked["reason"] and blocked["pid"] is None
            assert (await read_model(sqlite_db, "top")).pid is None
            assert processes_with(f"--port {p_top} ") == []
            # base started again: top is re-gated and recovers; the recovered transition says how long it took
            await control(client, task_queue, "base", "start")
            got = await ws_events(ws, lambda got: any(s.get("recovered") for s in statuses(got, "top")))
            recovered = [s for s in statuses(got, "top") if s.get("recovered")][0]
            assert recovered["state"] == "healthy" and recovered["recovery_seconds"] > 0
            assert recovered["attempts"] >= 1 and recovered["pid"] == the_pid(p_top)
            if not any(
                e["event_type"] == "RECOVERY_UPDATE"
                and e["data"]["status"] == "recovered"
                and e["data"]["service_id"] == "top"
                for e in got
            ):
                await ws_events(
                    ws,
                    lambda more: any(
                        e["event_type"] == "RECOVERY_UPDATE" and e["data"]["status"] == "recovered" for e in more
                    ),
                    timeout=10,
                )

            def kinds() -> set[str]:
                return {(r["json"] or {}).get("kind") for r in receiver.at("/hook")}

            await eventually(lambda: {"blocked", "recovered", "gave_up"} <= kinds(), timeout=20)
    finally:
        receiver.close()
        await res.bus.close()
        await terminate_quietly(client, "recover/base", "recover/top", "recover/crashy")


@contextlib.asynccontextmanager
async def api_on(wsettings, db):
    """The real API app on this test's store and task queue, as an authorized HTTP client (in process)."""
    import httpx2

    from tests.conftest import mint_token
    from windflow.api.app import build_resources, create_app

    res = await build_resources(wsettings, migrate=False)
    await res.db.dispose()
    res.db = db
    app = create_app(wsettings, resources=res)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(
                transport=transport,
                base_url="http://windflow.test",
                timeout=60,
                headers={"Authorization": f"Bearer {mint_token(wsettings)}"},
            ) as http:
                yield http
    finally:
        await res.bus.close()


async def test_delete_leaves_no_process(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    port, other = ports(), ports()
    await register(sqlite_db, standin("gone", port, boot=0.1), standin("child", other, boot=0.1, deps=["gone"]))
    try:
        async with running_worker(client, wsettings, sqlite_db), api_on(wsettings, sqlite_db) as api:
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "gone", 0), timeout=20)
            # a dependant refuses the delete before anything is stopped
            r = await api.delete("/api/v1/services/gone")
            assert r.status_code == 409 and r.json()["error"]["code"] == "conflict", r.text
            assert len(processes_with(f"--port {port} ")) == 1
            r = await api.delete("/api/v1/services/child")
            assert r.status_code == 204, r.text
            assert processes_with(f"--port {other} ") == []
            r = await api.delete("/api/v1/services/gone")
            assert r.status_code == 204, r.text
            assert processes_with(f"--port {port} ") == []
            assert (await api.get("/api/v1/services/gone")).status_code == 404
            await eventually(lambda: not_(recovering(client, "gone")), timeout=20)
            await asyncio.sleep(0.5)
            assert processes_with(f"--port {port} ") == [] and processes_with(f"--port {other} ") == []
    finally:
        await terminate_quietly(client, "recover/gone", "recover/child")


async def not_(awaitable) -> bool:
    return not await awaitable


async def test_sweep_retries_a_given_up_service_once_its_applied_version_changed(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    from windflow.domain.contracts import SweepInput
    from windflow.persistence import registry
    from windflow.workflows.control import RecoverySweep

    client = temporal_env.client
    port = ports()
    spec = standin(
        "flaky",
        port,
        boot=0.1,
        args=["--crash-after", "0.8"],
        restart={"max_attempts": 1, "backoff": "100ms", "on_give_up": "escalate", "reset_after": "1h"},
    )
    await register(sqlite_db, spec)

    async def sweep():
        return await client.execute_workflow(
            RecoverySweep.run, SweepInput(actor="test"), id=f"sweep/{uuid.uuid4().hex[:8]}", task_queue=task_queue
        )

    async def gave_up():
        return (await read_model(sqlite_db, "flaky")).state == "gave_up"

    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(gave_up, timeout=30)
            assert (await sweep()).retried == []  # nothing changed: it stays given up
            assert (await read_model(sqlite_db, "flaky")).state == "gave_up"
            # the operator raises the start limit: applied as saved (nothing to restart for it), so the next sweep
            # tries the service again
            fixed = spec.model_dump(mode="json")
            fixed["restart"]["max_attempts"] = 5
            async with sqlite_db.write() as session:
                await registry.update_service(
                    session=session, service_id="flaky", data=fixed, expected_version=1, author="alice"
                )
            result = await sweep()
            assert result.retried == ["flaky"], result
            await eventually(lambda: watching_again(sqlite_db, client, "flaky", 1), timeout=30)
    finally:
        await terminate_quietly(client, "recover/flaky")


async def test_changed_probe_in_put_system_reaches_the_running_watch(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    client = temporal_env.client
    port = ports()
    spec = standin("probed", port, boot=0.1, restart={"max_attempts": 1, "on_give_up": "escalate"})
    await register(sqlite_db, spec)
    try:
        async with running_worker(client, wsettings, sqlite_db), api_on(wsettings, sqlite_db) as api:
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "probed", 0), timeout=20)
            body = spec.model_dump(mode="json", exclude={"id"})
            body["health"]["url"] = f"http://127.0.0.1:{port}/no-such-page"
            r = await api.put("/api/v1/system", json={"services": {"probed": body}})
            assert r.status_code == 200 and r.json()["updated"] == ["probed"], r.text
            model = await read_model(sqlite_db, "probed")
            assert model.applied_version == 2 and model.pending_version is None  # a probe: applied as saved

            async def unhealthy_verdict():
                st = await client.get_workflow_handle("recover/probed").query(ServiceRecovery.query_status)
                return (
                    st.last_verdict is not None
                    and st.last_verdict.verdict == "unhealthy"
                    and "404" in st.last_verdict.message
                )

            await eventually(unhealthy_verdict, timeout=5)  # 2 s to reach the watch, 0.4 s to fail twice
    finally:
        await terminate_quietly(client, "recover/probed")


async def test_histories_of_the_previous_supervision_replay():
    """Recovery and sweep histories recorded with the code before desired state, status events and the watcher
    model replay on today's code (the new steps are behind ``workflow.patched``)."""
    from pathlib import Path

    from temporalio.client import WorkflowHistory
    from temporalio.worker import Replayer

    from windflow.temporal.client import DATA_CONVERTER
    from windflow.workflows.control import RecoverySweep

    histories = Path(__file__).parent / "histories"
    replayer = Replayer(workflows=[ServiceRecovery, RecoverySweep], data_converter=DATA_CONVERTER)
    for name in ("recovery_recovered", "sweep"):
        text = (histories / f"{name}.json").read_text()
        result = await replayer.replay_workflow(WorkflowHistory.from_json(name, text))
        assert result.replay_failure is None


async def test_a_rollout_applies_a_pending_version(temporal_env, wsettings, sqlite_db, ports, task_queue):
    """ "v2 saved, v1 running — apply": a rollout of the saved content applies that very version."""
    from windflow.persistence import registry

    client = temporal_env.client
    port = ports()
    spec = standin("app", port, boot=0.1)
    await register(sqlite_db, spec)
    try:
        async with running_worker(client, wsettings, sqlite_db), api_on(wsettings, sqlite_db) as api:
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "app", 0), timeout=20)
            first = the_pid(port)
            saved = standin("app", port, boot=0.2).model_dump(mode="json", exclude={"id"})
            async with sqlite_db.write() as session:
                await registry.update_service(
                    session=session, service_id="app", data=saved, expected_version=1, author="alice"
                )
            model = await read_model(sqlite_db, "app")
            assert (model.applied_version, model.pending_version) == (1, 2)
            assert the_pid(port) == first  # saving restarted nothing
            listed = (await api.get("/api/v1/services/app")).json()
            assert (listed["applied_version"], listed["pending_version"]) == (1, 2)
            r = await api.post(
                "/api/v1/services/app/rollouts",
                json={"config": saved, "verify_window": 0.5, "wait": True, "timeout": 60},
            )
            assert r.status_code in (200, 202), r.text
            assert r.json()["status"] == "SUCCEEDED" and r.json()["new_version"] == 2, r.text
            model = await read_model(sqlite_db, "app")
            assert (model.version, model.applied_version, model.pending_version) == (2, 2, None)
            assert the_pid(port) != first and model.pid == the_pid(port)
    finally:
        await terminate_quietly(client, "recover/app")


@pytest.mark.parametrize("seed", [7, 11])
async def test_read_model_stays_truthful_through_random_operator_steps(
    temporal_env, wsettings, sqlite_db, ports, task_queue, seed
):
    """stop / start / restart / initialize / crash in a random order (seeded): after each step settles, the read
    model says what the processes say (state, desired, pid vs ``kill(pid, 0)`` and the port)."""
    import random

    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("svc", port, boot=0.1))
    rng = random.Random(seed)
    steps = [rng.choice(["stop", "start", "restart", "initialize", "crash"]) for _ in range(6)]
    desired = "running"

    async def settled() -> ServicePublic | None:
        model = await read_model(sqlite_db, "svc")
        pids = processes_with(f"--port {port} ")
        if desired == "stopped":
            ok = model.state == "stopped" and model.pid is None and not pids
        else:
            ok = (
                model.state == "healthy"
                and not await recovering(client, "svc")
                and len(pids) == 1
                and model.pid == pids[0]
                and alive(model.pid)
                and await healthy(port)
            )
        return model if ok and model.desired == desired else None

    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(settled, timeout=20)
            for step in steps:
                if step == "crash":
                    if desired == "stopped":
                        continue
                    os.kill(the_pid(port), signal.SIGKILL)
                elif step == "initialize":
                    await initialize(client, task_queue)
                    desired = "running"
                else:
                    await control(client, task_queue, "svc", step)
                    desired = "stopped" if step == "stop" else "running"
                model = await eventually(settled, timeout=30)
                assert model.desired_by in ("alice", "tester"), (steps, step, model)
    finally:
        await terminate_quietly(client, "recover/svc")


async def test_sweep_covers_a_service_desired_running_whatever_its_last_state(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """A rollback that failed leaves the service "failed" (and its watcher may be gone): it is still desired
    running, so the sweep watches its queue again and recovers it."""
    from sqlalchemy import update

    from windflow.domain.contracts import SweepInput
    from windflow.workflows.control import RecoverySweep

    client = temporal_env.client
    port = ports()
    await register(sqlite_db, standin("rolled", port, boot=0.1))
    try:
        async with running_worker(client, wsettings, sqlite_db):
            await initialize(client, task_queue)
            await eventually(lambda: watching_again(sqlite_db, client, "rolled", 0), timeout=20)
            await client.get_workflow_handle(f"watch/{task_queue}").terminate("lost")
            await asyncio.sleep(6)  # its activity ends at its next heartbeat (80 % of the 5 s heartbeat timeout)
            os.kill(the_pid(port), signal.SIGKILL)
            async with sqlite_db.write() as session:
                await session.execute(update(ServiceRow).where(ServiceRow.id == "rolled").values(state="failed"))
            result = await client.execute_workflow(
                RecoverySweep.run, SweepInput(actor="test"), id=f"sweep/{uuid.uuid4().hex[:8]}", task_queue=task_queue
            )
            assert result.watchers_started == [task_queue] and "rolled" in result.recoveries_started, result
            await eventually(lambda: watching_again(sqlite_db, client, "rolled", 1), timeout=30)
            assert await healthy(port)
            assert (await read_model(sqlite_db, "rolled")).pid == the_pid(port)
    finally:
        await terminate_quietly(client, "recover/rolled")


async def test_status_function():
    """One pure function derives the status every writer records."""
    from windflow.domain.status import SUPERVISION_STATUS, service_status

    assert service_status(desired="stopped", observed="healthy") == "stopping"
    assert service_status(desired="stopped", observed="stopped") == "stopped"
    assert service_status(desired="stopped", observed="gave_up") == "stopped"
    assert service_status(desired="running", observed="blocked") == "blocked"
    assert service_status(desired=None, observed="") == "unknown"
    assert SUPERVISION_STATUS[SupervisionState.WAITING_BUDGET] == "backing_off"
    assert SupervisionState.PAUSED not in SUPERVISION_STATUS  # a paused supervisor says nothing about the service
