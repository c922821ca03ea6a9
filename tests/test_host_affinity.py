"""Host-affine services: drivers and probes run on the worker of the service's host, and a host nobody serves is
reported as such.

Two real `windflow worker --host NAME` processes share one task queue (and the store); each is the only poller of
its own host queue. Which worker ran an activity is read from Temporal itself (the worker identity of the
ActivityTaskStarted event, or of a pending activity) and from the process driver's state files, which live in the
data dir of the worker that spawned the service.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError

from tests.helpers import (
    eventually,
    kill_process_group,
    processes_with,
    register,
    running_worker,
    standin,
    terminate_quietly,
    worker_identity,
    worker_process,
)
from windflow.domain.contracts import ComponentStatus, InitInput, InitOptions, InitState, InitStatus
from windflow.domain.models import ServiceSpec
from windflow.settings import Settings
from windflow.workflows import _policies as policies
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")
DRIVER_ACTIVITIES = {
    "bring_up",
    "start_service",
    "wait_healthy",
    "stop_service",
    "restart_service",
    "watch_service",
    "recover_step",
}


def host_worker(settings: Settings, tmp_path: Path, host: str) -> subprocess.Popen[bytes]:
    """A `windflow worker --host HOST` process with a data dir of its own (each host is its own machine)."""
    own = settings.model_copy(update={"data_dir": tmp_path / f"data-{host}"})
    return worker_process(own, tmp_path, f"worker-{host}", "--host", host, WINDFLOW_LOG_FORMAT="json")


async def start_init(client, task_queue: str, **options):
    run_id = uuid.uuid4().hex[:12]
    return await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(**options), actor="tester"),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )


async def driver_runs(handle) -> list[tuple[str, str, str]]:
    """(activity type, task queue, worker identity) of every started driver or probe activity of a run."""
    scheduled: dict[int, tuple[str, str]] = {}
    out = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            attrs = event.activity_task_scheduled_event_attributes
            scheduled[event.event_id] = (attrs.activity_type.name, attrs.task_queue.name)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            kind, queue = scheduled[attrs.scheduled_event_id]
            if kind in DRIVER_ACTIVITIES:
                out.append((kind, queue, attrs.identity))
    return out


async def watched_by(client, queue: str) -> str | None:
    """Identity of the worker running the watch of ``queue`` (``watch/{queue}``; None until one runs it)."""
    from temporalio.service import RPCError

    try:
        desc = await client.get_workflow_handle(f"watch/{queue}").describe()
    except RPCError:
        return None
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name == "watch_queue" and pending.last_worker_identity:
            return pending.last_worker_identity
    return None


def bound(spec: ServiceSpec, host: str) -> ServiceSpec:
    return spec.model_copy(update={"host": host})


async def test_each_service_is_started_and_watched_by_its_hosts_worker(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    client = temporal_env.client
    p1, p2 = ports(), ports()
    await register(
        sqlite_db,
        bound(standin("on-alpha", p1, boot=0.1), "alpha"),
        bound(standin("on-beta", p2, boot=0.1, deps=["on-alpha"]), "beta"),
    )
    alpha = beta = None
    try:
        alpha = host_worker(wsettings, tmp_path, "alpha")
        beta = host_worker(wsettings, tmp_path, "beta")
        handle = await start_init(client, task_queue)
        result: InitState = await asyncio.wait_for(handle.result(), timeout=90)
        assert result.status == InitStatus.SUCCEEDED, result.message
        runs = await driver_runs(handle)
        on_alpha = {(kind, who) for kind, queue, who in runs if queue == f"{task_queue}.host.alpha"}
        on_beta = {(kind, who) for kind, queue, who in runs if queue == f"{task_queue}.host.beta"}
        assert on_alpha and on_beta and len(on_alpha) + len(on_beta) == len(set(runs)), runs
        assert {who for _, who in on_alpha} == {worker_identity(alpha)}
        assert {who for _, who in on_beta} == {worker_identity(beta)}
        # the process driver of the host's worker spawned (and tracks) the service
        assert (tmp_path / "data-alpha" / "run" / "on-alpha.json").exists()
        assert not (tmp_path / "data-beta" / "run" / "on-alpha.json").exists()
        assert (tmp_path / "data-beta" / "run" / "on-beta.json").exists()
        assert len(processes_with(f"--port {p1} ")) == 1 and len(processes_with(f"--port {p2} ")) == 1
        # each host's watcher watches its services from that host
        assert await eventually(lambda: watched_by(client, f"{task_queue}.host.alpha"), timeout=30) == worker_identity(
            alpha
        )
        assert await eventually(lambda: watched_by(client, f"{task_queue}.host.beta"), timeout=30) == worker_identity(
            beta
        )
    finally:
        await terminate_quietly(
            client,
            f"watch/{task_queue}.host.alpha",
            f"watch/{task_queue}.host.beta",
            f"watch/{task_queue}",
            "recover/on-alpha",
            "recover/on-beta",
        )
        kill_process_group(alpha)
        kill_process_group(beta)


async def test_a_host_without_a_worker_fails_its_component_with_a_clear_error(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    """Nobody runs `windflow worker --host ghost`: after HOST_START_TIMEOUT the component fails, saying so."""
    client = temporal_env.client
    p1, p2 = ports(), ports()
    await register(
        sqlite_db,
        standin("local", p1, boot=0.1, monitored=False),
        bound(standin("remote", p2, boot=0.1, monitored=False), "ghost"),
    )
    async with running_worker(client, wsettings, sqlite_db):
        handle = await start_init(client, task_queue, retry_window=0, on_failure="continue")
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), timeout=policies.HOST_START_TIMEOUT.total_seconds() + 60)
        state: InitState = await handle.query(SystemInitialization.status)
    remote = state.components["remote"]
    assert remote.status == ComponentStatus.FAILED
    assert f"no worker polls host queue {task_queue}.host.ghost" in (remote.last_error or ""), remote.last_error
    assert state.components["local"].status == ComponentStatus.HEALTHY
    assert processes_with(f"--port {p2} ") == []
