"""Scale-out: two `windflow worker` processes on one task queue share the work, and SIGKILLing one of them in
the middle of an initialization loses nothing.

Which worker ran what is read from Temporal: the worker identity of the ActivityTaskStarted events of the run's
history, and of the pending activity the victim was running when it was killed.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.api.enums.v1 import EventType

from tests.helpers import (
    eventually,
    kill_process_group,
    processes_with,
    register,
    standin,
    worker_identity,
    worker_process,
)
from windflow.domain.contracts import ComponentStatus, InitInput, InitOptions, InitState, InitStatus
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def started_identities(handle) -> set[str]:
    out = set()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            out.add(event.activity_task_started_event_attributes.identity)
    return out


async def booting(handle, name: str) -> str | None:
    """The identity of the worker running ``name``'s start while it boots (the only pending start then)."""
    state: InitState = await handle.query(SystemInitialization.status)
    comp = state.components.get(name)
    if comp is None or comp.status not in (ComponentStatus.STARTING, ComponentStatus.WAITING_HEALTHY):
        return None
    desc = await handle.describe()
    for pending in desc.raw_description.pending_activities:
        if pending.activity_type.name in ("bring_up", "start_service", "wait_healthy") and pending.last_worker_identity:
            return pending.last_worker_identity
    return None


async def test_two_workers_share_an_initialization_and_one_dying_loses_nothing(
    temporal_env, wsettings, sqlite_db, ports, task_queue, tmp_path
):
    client = temporal_env.client
    first_layer = [f"s{i}" for i in range(6)]
    layer_ports = {name: ports() for name in first_layer}
    slow_port, last_port = ports(), ports()
    await register(
        sqlite_db,
        *(standin(n, p, boot=0.1, monitored=False) for n, p in layer_ports.items()),
        standin("slow", slow_port, boot=3.0, deps=first_layer, monitored=False),
        standin("last", last_port, boot=0.1, deps=["slow"], monitored=False),
    )
    # one machine: both share the process driver's state (wsettings.data_dir)
    workers = {
        name: worker_process(wsettings, tmp_path, f"worker-{name}", WINDFLOW_LOG_FORMAT="json")
        for name in ("one", "two")
    }
    by_identity = {worker_identity(proc): proc for proc in workers.values()}
    try:
        run_id = uuid.uuid4().hex[:12]
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(), actor="tester"),
            id=f"init/{run_id}",
            task_queue=task_queue,
        )
        victim_identity = await eventually(lambda: booting(handle, "slow"), timeout=60, interval=0.1)
        before: InitState = await handle.query(SystemInitialization.status)
        pids = {name: before.components[name].pid for name in first_layer}
        victim = by_identity[victim_identity]
        kill_process_group(victim)
        result: InitState = await asyncio.wait_for(handle.result(), timeout=90)
        identities = await started_identities(handle)
    finally:
        for proc in workers.values():
            kill_process_group(proc)

    assert result.status == InitStatus.SUCCEEDED, result.message
    # both workers ran activities of this run: the victim until it died, the survivor to the end
    survivor_identity = next(i for i in by_identity if i != victim_identity)
    assert survivor_identity in identities
    assert identities | {victim_identity} == set(by_identity)
    # nothing was started twice: one process per service, and the first layer kept its processes
    for name, port in [*layer_ports.items(), ("slow", slow_port), ("last", last_port)]:
        assert len(processes_with(f"--port {port} ")) == 1, name
    for name in first_layer:
        assert result.components[name].pid == pids[name]
        assert processes_with(f"--port {layer_ports[name]} ") == [pids[name]]
