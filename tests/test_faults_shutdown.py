"""A worker SIGKILL-ed in the middle of a system shutdown: the next worker finishes the run, no service is left
half-stopped (a stop in its grace period goes on to its SIGKILL, children included) and none is stopped twice
(the stop in flight is resumed, not started over: one stop signal, the grace counted from the first one; stops
already done are not repeated; each service says "stopped" once)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.api.enums.v1 import EventType as HistoryEvent

from tests.helpers import (
    create,
    eventually,
    kill_marked,
    kill_process_group,
    processes_with,
    standin,
    start_service,
    worker_process,
)
from windflow.domain.models import ServiceSpec
from windflow.persistence.models import OutboxRow
from windflow.settings import Settings
from windflow.worker import WORKER_LOST

pytestmark = pytest.mark.asyncio(loop_scope="session")

MARK = uuid.uuid4().hex[:8]


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    return temporal_settings


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    kill_marked(f"--mark={MARK}")
    kill_marked(f"child-{MARK}")


def signal_counter(name: str, log: Path, *, grace: str, deps: list[str]) -> ServiceSpec:
    """A service that writes a line to ``log`` for each SIGTERM and goes on running, with a child in its process
    group that ignores SIGTERM: only the SIGKILL of the group after ``grace`` ends them."""
    child = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"
    script = (
        "import signal, subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', {child!r}, 'child-{MARK}'])\n"
        "def term(*_):\n"
        f"    with open({str(log)!r}, 'a') as fh: fh.write('TERM\\n')\n"
        "signal.signal(signal.SIGTERM, term)\n"
        "while True: time.sleep(1)\n"
    )
    return ServiceSpec.model_validate(
        {
            "id": name,
            "driver": "process",
            "depends_on": deps,
            "config": {"command": [sys.executable, "-c", script, f"--mark={MARK}-{name}"], "stop_grace": grace},
        }
    )


async def retried_stop_attempts(handle) -> int:
    """stop_service attempts retried after the kill: the starting worker ends the dead one's attempt as
    ``WorkerLost`` or, when the machine is slow enough that the heartbeat timeout comes first, the engine does."""
    scheduled: dict[int, str] = {}
    count = 0
    async for event in handle.fetch_history_events():
        if event.event_type == HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == HistoryEvent.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            failure = attrs.last_failure
            lost = failure.application_failure_info.type == WORKER_LOST or failure.HasField("timeout_failure_info")
            count += scheduled.get(attrs.scheduled_event_id) == "stop_service" and attrs.attempt > 1 and lost
    return count


async def test_worker_killed_mid_shutdown(temporal_env, settings, db, api, ports, tmp_path):
    p_base, p_quick = ports(), ports()
    terms = tmp_path / "slow.terms"
    specs = [
        standin("base", p_base),
        standin("quick", p_quick, deps=["base"]),
        signal_counter("slow", terms, grace="4s", deps=["base"]),
    ]
    for spec in specs:
        await create(api, spec)
        await start_service(settings, spec)
    await eventually(lambda: processes_with(f"child-{MARK}"), timeout=10)

    first = worker_process(settings, tmp_path, "w1")
    second = None
    try:
        r = await api.post("/api/v1/shutdowns", json={"reason": "worker fault test"})
        assert r.status_code == 202, r.text
        run_id, workflow_id = r.json()["run_id"], r.json()["workflow_id"]
        # the slow service got its SIGTERM and sits in its grace period: the worker dies now
        await eventually(lambda: terms.exists() and terms.read_text(), timeout=60, interval=0.05)
        kill_process_group(first)
        assert processes_with(f"--mark={MARK}-slow") and processes_with(f"child-{MARK}")  # half-way, for now
        second = worker_process(settings, tmp_path, "w2")

        async def finished():
            body = (await api.get(f"/api/v1/shutdowns/{run_id}")).json()
            return body if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") and not body["live"] else None

        body = await eventually(finished, timeout=90, interval=0.2)
        handle = temporal_env.client.get_workflow_handle(workflow_id)
        assert await retried_stop_attempts(handle) >= 1  # the kill did land in the middle of a stop
    finally:
        kill_process_group(first)
        kill_process_group(second)

    assert body["status"] == "COMPLETED", body
    assert {n: c["status"] for n, c in body["state"]["components"].items()} == dict.fromkeys(
        ("base", "quick", "slow"), "stopped"
    )
    # nothing half-stopped: every process is gone, the slow one's SIGTERM-proof child too
    assert not processes_with(f"--port {p_base} ") and not processes_with(f"--port {p_quick} ")
    assert not processes_with(f"--mark={MARK}-slow") and not processes_with(f"child-{MARK}")
    rows = {s["id"]: s for s in (await api.get("/api/v1/services?limit=50")).json()["items"]}
    assert {n: (s["state"], s["desired"], s.get("pid")) for n, s in rows.items()} == dict.fromkeys(
        ("base", "quick", "slow"), ("stopped", "stopped", None)
    )
    # stopped once: one stop signal (the new worker resumed the stop in its grace, it did not start it over) ...
    assert terms.read_text() == "TERM\n"

    # ... and each service said "stopped" once, in the run's progress and in its own status events
    async def events(kind: str) -> list[dict]:
        async with db.read() as session:
            found = (
                await session.execute(select(OutboxRow).where(OutboxRow.event_type == kind).order_by(OutboxRow.id))
            ).scalars()
            return [r.payload.get("data", r.payload) for r in found]

    progress = [e["component"] for e in await events("SHUTDOWN_UPDATE") if e.get("component_status") == "stopped"]
    assert sorted(progress) == ["base", "quick", "slow"], progress
    status = [e["service_id"] for e in await events("SERVICE_STATUS_UPDATE") if e["state"] == "stopped"]
    assert sorted(status) == ["base", "quick", "slow"], status
