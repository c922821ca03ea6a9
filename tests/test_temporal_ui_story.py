"""What the Temporal UI shows for a run: every activity and timer bar names its component and its step (read back
from the real history, as the UI reads it), and a running workflow's current details say where it stands."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle

from tests.helpers import eventually, register, running_worker, standin
from windflow.domain.contracts import InitInput, InitOptions, InitState, InitStatus
from windflow.workflows.initialization import SystemInitialization

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def bars(handle: WorkflowHandle) -> list[tuple[str, str | None]]:
    """``(activity type or "timer", summary)`` of every activity and timer the run scheduled."""
    converter = handle._client.data_converter  # noqa: SLF001 - the converter the UI's codec would use
    out = []
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kind = event.activity_task_scheduled_event_attributes.activity_type.name
        elif event.event_type == EventType.EVENT_TYPE_TIMER_STARTED:
            kind = "timer"
        else:
            continue
        summary = None
        if event.HasField("user_metadata") and event.user_metadata.HasField("summary"):
            summary = (await converter.decode([event.user_metadata.summary], [str]))[0]
        out.append((kind, summary))
    return out


async def test_initialization_timeline_names_each_component(temporal_env, wsettings, sqlite_db, ports, task_queue):
    client = temporal_env.client
    db_port, api_port = ports(), ports()
    await register(
        sqlite_db, standin("db", db_port, boot=0.3, protocol="tcp"), standin("api", api_port, boot=0.2, deps=["db"])
    )
    run_id = uuid.uuid4().hex[:12]
    async with running_worker(client, wsettings, sqlite_db):
        handle = await client.start_workflow(
            SystemInitialization.run,
            InitInput(run_id=run_id, options=InitOptions(), actor="tester"),
            id=f"init/{run_id}",
            task_queue=task_queue,
            static_summary="initialization by tester",
        )

        async def waiting_details() -> str | None:
            meta = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
            details = meta.current_details
            return details if "waiting for health" in details or "starting:" in details else None

        details = await eventually(waiting_details, timeout=30, interval=0.05)
        state: InitState = await handle.result()
        final = (await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    assert state.status == InitStatus.SUCCEEDED
    assert "of 2 healthy" in details, details  # e.g. "**running**: starting 2 components ... 0 of 2 healthy"
    assert "succeeded" in final and "2 of 2 healthy" in final, final

    found = await bars(handle)
    unlabeled = [kind for kind, summary in found if not summary]
    assert not unlabeled, f"bars without a summary: {unlabeled}"
    summaries = [summary for _, summary in found]
    assert "validate configs and the dependency graph" in summaries
    assert "start db" in summaries and "start api" in summaries
    assert f"wait healthy: db (tcp 127.0.0.1:{db_port})" in summaries
    assert f"wait healthy: api (http GET 127.0.0.1:{api_port}/health)" in summaries
    # whole-state records and the partial ones (record_initialization_changes) alike
    records = [summary for kind, summary in found if kind.startswith("record_initialization")]
    assert records and all(s.startswith("record") for s in records)
    assert "record: db healthy" in records and "record: api waiting healthy" in records, records
    timers = [summary for kind, summary in found if kind == "timer"]
    assert any("while db start" in s for s in timers), timers
    assert records[-1] == "record the result: succeeded"
    desc = await handle.describe()
    assert await desc.static_summary() == "initialization by tester"


async def test_recovery_timeline_tells_attempts_backoff_and_giving_up(
    temporal_env, wsettings, sqlite_db, ports, task_queue
):
    from windflow.domain.contracts import RecoveryInput
    from windflow.workflows.supervision import ServiceRecovery

    client = temporal_env.client
    port = ports()
    service = f"flaky-{uuid.uuid4().hex[:6]}"
    await register(
        sqlite_db,
        standin(
            service,
            port,
            boot=0.1,
            args=["--fail-start"],
            monitored=False,
            restart={"max_attempts": 2, "backoff": "0.2s", "jitter": 0, "on_give_up": "escalate"},
        ),
    )
    async with running_worker(client, wsettings, sqlite_db):
        handle = await client.start_workflow(
            ServiceRecovery.run,
            RecoveryInput(service_id=service, reason="exited (code 1)", actor="tester", source="api"),
            id=f"recover/{service}",
            task_queue=task_queue,
        )
        result = await handle.result()
        details = (await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)).current_details
    assert result.outcome == "gave_up"
    assert details.startswith("**gave up**") and "attempt 2 of 2" in details, details
    assert "last error:" in details and "exited" in details, details

    found = await bars(handle)
    assert not [kind for kind, summary in found if not summary], found
    summaries = [summary for _, summary in found]
    assert f"restart {service} (attempt 1 of 2): exited (code 1)" in summaries, summaries
    assert f"restart {service} (attempt 2 of 2): exited (code 1)" in summaries, summaries
    assert "backoff 0.2 s before attempt 2" in summaries, summaries
    assert f"notify: {service} gave up" in summaries, summaries
    assert f"stop {service} (gave up: left stopped)" in summaries, summaries


async def test_every_activity_and_timer_in_workflow_code_has_a_summary():
    """A machine check over workflows/: no activity call or timer without a summary (no unlabeled bar in the UI)."""
    import ast
    from pathlib import Path

    import windflow.workflows as package

    activity_calls = {
        "execute_activity_method",
        "execute_activity",
        "execute_on_host",
        "start_activity_method",
        "start_activity",
        "execute_local_activity_method",
    }
    missing = []
    for path in sorted(Path(package.__file__).parent.glob("*.py")):
        if path.name == "_policies.py":  # the routing wrapper passes the caller's summary on
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            keywords = {k.arg for k in node.keywords}
            if name in activity_calls and "summary" not in keywords:
                missing.append(f"{path.name}:{node.lineno} {name}")
            elif (
                name == "sleep"
                and isinstance(node.func, ast.Attribute)
                and getattr(node.func.value, "id", "") == "workflow"
                and "summary" not in keywords
            ):
                missing.append(f"{path.name}:{node.lineno} workflow.sleep")
            elif name == "wait_condition" and "timeout" in keywords and "timeout_summary" not in keywords:
                missing.append(f"{path.name}:{node.lineno} wait_condition with a timeout")
    assert not missing, "calls without a summary:\n" + "\n".join(missing)


async def test_scheduled_sweeps_say_what_they_are(temporal_env, task_queue):
    from temporalio.client import ScheduleActionStartWorkflow

    from windflow.schedules import ensure_sweep_schedule

    schedule_id = f"sweep-story-{uuid.uuid4().hex[:6]}"
    handle = await ensure_sweep_schedule(
        temporal_env.client, task_queue=task_queue, every=timedelta(minutes=5), schedule_id=schedule_id
    )
    try:
        action = (await handle.describe()).schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        summary = (await temporal_env.client.data_converter.decode([action.static_summary], [str]))[0]
        assert summary == f"recovery sweep, every 5 min (schedule {schedule_id})"
    finally:
        await handle.delete()


async def test_summary_texts_are_short_and_secret_free():
    from windflow.domain import summaries
    from windflow.domain.models import ServiceSpec

    assert [summaries.seconds(v) for v in (0.2, 4, 90, 3599, 5400)] == ["0.2 s", "4 s", "1.5 min", "1 h", "1 h 30 min"]
    spec = ServiceSpec.model_validate(
        {
            "id": "api",
            "driver": "process",
            "config": {"command": ["x"]},
            "host": "alpha",
            "health": {
                "kind": "http",
                "url": "https://user:s3cret@api.internal:8443/health?token=t0k",
                "interval": "1s",
            },
        }
    )
    label = summaries.wait_healthy(spec)
    assert label == "wait healthy: api (http GET api.internal:8443/health)"
    assert "s3cret" not in label and "t0k" not in label
    assert summaries.restart(spec, "exited (code 1)", 2, 5) == "restart api on alpha (attempt 2 of 5): exited (code 1)"
    assert len(summaries.restart(spec, "x" * 500)) == summaries.MAX_SUMMARY
