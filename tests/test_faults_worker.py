"""A worker SIGKILL-ed while it watches services: the next worker on the host takes the watches over at once
(not after their heartbeat timeout), cleans up after a service whose main process died meanwhile, and counts
the health the service had before, so the attempt counter still resets after ``reset_after``."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from tests.helpers import (
    STANDIN,
    eventually,
    healthy,
    kill_process_group,
    processes_with,
    register,
    standin,
    start_service,
    supervise,
    watching,
    worker_identity,
    worker_process,
)
from windflow.domain.models import ServiceSpec
from windflow.worker import WORKER_LOST

pytestmark = pytest.mark.asyncio(loop_scope="session")


def with_child(name: str, port: int, **extra) -> ServiceSpec:
    """A stand-in whose shell first starts a child (``orphan-PORT``) in the service's process group."""
    base = standin(name, port, boot=0.3, **extra)
    child = f"{sys.executable} -c 'import time; time.sleep(1000)' orphan-{port}"
    main = f"exec {sys.executable} {STANDIN} --name {name} --port {port} --boot 0.3 --protocol http"
    config = base.config.model_copy(update={"command": ["sh", "-c", f"{child} & {main}"]})
    return base.model_copy(update={"config": config})


async def watched_by(handle, identity: str) -> bool:
    """The queue's watch activity runs on the worker ``identity``."""
    desc = await handle.watcher.describe()
    return any(
        p.activity_type.name == "watch_queue"
        and p.last_worker_identity == identity
        and p.state == 2  # PENDING_ACTIVITY_STATE_STARTED
        for p in desc.raw_description.pending_activities
    )


async def lost_worker_failures(handle) -> int:
    """Whether the watch was retried because a starting worker ended its attempt as ``WorkerLost`` (not timed
    out): the pending activity names the failure of its previous attempt."""
    desc = await handle.watcher.describe()
    return sum(
        p.activity_type.name == "watch_queue" and p.last_failure.application_failure_info.type == WORKER_LOST
        for p in desc.raw_description.pending_activities
    )


async def test_new_worker_takes_the_watch_over_and_no_child_of_the_dead_main_survives(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    client = temporal_env.client
    port = ports()
    spec = with_child("grouped", port)
    await register(sqlite_db, spec)
    main = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=15)
    old_child = processes_with(f"orphan-{port}")
    assert len(old_child) == 1
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        # a heartbeat timeout far beyond the test's waits: only the take-over can bring the watch back in time
        handle = await supervise(client, task_queue, "grouped", sqlite_db, heartbeat_timeout=120)
        await eventually(lambda: watched_by(handle, worker_identity(first)), timeout=40)
        kill_process_group(first)
        os.kill(main, signal.SIGKILL)  # the main process dies while no worker runs; its child lives on
        await asyncio.sleep(0.2)
        assert processes_with(f"orphan-{port}") == old_child
        second = worker_process(wsettings, tmp_path, "w2")
        st = await eventually(lambda: watching(handle, restarts=1), timeout=60)
        assert st.last_verdict is not None and st.last_verdict.verdict in ("not_running", "exited")
        assert await lost_worker_failures(handle) >= 1  # taken over, not timed out
        assert await healthy(port)
        live = processes_with(f"--port {port} ")
        assert len(live) == 1 and live[0] != main
        children = processes_with(f"orphan-{port}")
        assert old_child[0] not in children  # the dead main's child went with it
        assert len(children) == 1  # the new one's own
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)


async def test_attempt_count_resets_after_reset_after_of_health_across_a_worker_restart(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    """Healthy for longer than reset_after, then the worker is replaced and the service crashes soon after the new
    worker started watching: that crash is attempt 1 again, not 2."""
    client = temporal_env.client
    port = ports()
    spec = standin(
        "steady", port, boot=0.2, restart={"max_attempts": 5, "backoff": "0s", "reset_after": "3s", "jitter": 0}
    )
    await register(sqlite_db, spec)
    pid = await start_service(wsettings, spec)
    await eventually(lambda: healthy(port), timeout=15)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        handle = await supervise(client, task_queue, "steady", sqlite_db)
        await eventually(lambda: watched_by(handle, worker_identity(first)), timeout=40)
        os.kill(pid, signal.SIGKILL)
        st = await eventually(lambda: watching(handle, restarts=1), timeout=30)
        assert st.attempt == 1
        await asyncio.sleep(4.0)  # healthy for longer than reset_after
        kill_process_group(first)
        second = worker_process(wsettings, tmp_path, "w2")
        await eventually(lambda: watched_by(handle, worker_identity(second)), timeout=60)
        os.kill(processes_with(f"--port {port} ")[0], signal.SIGKILL)
        st = await eventually(lambda: watching(handle, restarts=2), timeout=30)
        assert st.attempt == 1, st
        await handle.terminate()
    finally:
        kill_process_group(first)
        kill_process_group(second)
