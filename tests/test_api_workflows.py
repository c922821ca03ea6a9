"""The front door to the workflows, end to end: REST → Temporal → real worker → real processes.

Runs on SQLite and PostgreSQL (the store the worker's activities write to is the API's own).
"""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus

from tests.helpers import create, eventually, processes_with, running_worker, standin, terminate_quietly
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    """The API of these tests talks to the session's dev server, on a task queue a test worker polls."""
    return temporal_settings


@pytest.fixture(autouse=True)
async def no_stray_recoveries(temporal_env):
    """Recoveries of a failed test must not outlive it (ids are reused by the next parameter)."""
    yield
    await terminate_quietly(temporal_env.client, *(f"recover/{name}" for name in ("db", "app", "base", "top")))


async def wait_run(api, run_id: str, *statuses: str, timeout: float = 60) -> dict:
    async def done():
        body = (await api.get(f"/api/v1/initializations/{run_id}")).json()
        return body if body["status"] in statuses else None

    return await eventually(done, timeout=timeout, interval=0.2)


async def test_initialize_through_the_api_then_supervise_and_recover(temporal_env, settings, db, api, ports):
    client = temporal_env.client
    p_db, p_app = ports(), ports()
    await create(api, standin("db", p_db, boot=0.2))
    await create(api, standin("app", p_app, boot=0.2, deps=["db"]))
    async with running_worker(client, settings, db):
        r = await api.post("/api/v1/initializations", json={})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]
        assert r.json()["links"]["self"] == f"/api/v1/initializations/{run_id}"
        # a second full initialization while one runs: 409 unless queued
        second = await api.post("/api/v1/initializations", json={})
        assert second.status_code in (409, 202), second.text
        if second.status_code == 409:
            assert second.json()["error"]["code"] == "conflict"
        body = await wait_run(api, run_id, "SUCCEEDED", "FAILED")
        assert body["status"] == "SUCCEEDED", body
        assert body["progress"] == 100
        await eventually(lambda: _in_history(api, run_id), timeout=10)  # the final summary lands in the store
        # the run's healthy monitored components are watched now
        sup = await eventually(lambda: _supervised(api, "app"), timeout=20)
        assert sup["state"] == "healthy" and sup["watcher"] == f"watch/{settings.task_queue}"
        # kill the app: the watcher starts its recovery, which brings it back; the API shows the recovery
        pid = processes_with(f"--port {p_app} ")[0]
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: _restarted(api, "app"), timeout=30)
        metrics = await eventually(lambda: _metrics_show_restart(api, "app"), timeout=10)
        assert metrics["recoveries_24h"] >= 1 and metrics["time_to_recover_p50"] is not None
        recoveries = (await api.get("/api/v1/services/app/recoveries")).json()["items"]
        assert recoveries and recoveries[0]["status"] == "recovered"
        # filter by supervision state
        healthy = (await api.get("/api/v1/services", params={"state": "healthy"})).json()["items"]
        assert {"db", "app"} <= {s["id"] for s in healthy}
        # a manual recovery creates (or joins) recover/app
        r = await api.post("/api/v1/services/app/recoveries", json={"reason": "test"})
        assert r.status_code == 202, r.text
        assert r.json()["workflow_id"] == "recover/app" and r.json()["supervised"] is True
        await eventually(lambda: _restarts_at_least(api, "app", 2), timeout=30)
        # a user stop holds the service (no recovery) and is not undone
        r = await api.post("/api/v1/services/app/actions", json={"action": "stop"})
        assert r.status_code == 200 and r.json()["ok"] and r.json()["supervision"] == "paused", r.text
        await asyncio.sleep(1.0)
        assert processes_with(f"--port {p_app} ") == []
        sup = (await api.get("/api/v1/services/app/supervision")).json()
        assert sup["state"] == "stopped" and sup["recovering"] is False
        r = await api.post("/api/v1/services/app/actions", json={"action": "start"})
        assert r.json()["ok"] and r.json()["supervision"] == "resumed", r.text
        audit = (await api.get("/api/v1/audit", params={"action": "initialization.start"})).json()["items"]
        assert audit and audit[0]["actor"] == "tester"


async def _in_history(api, run_id):
    history = (await api.get("/api/v1/initializations", params={"status": "SUCCEEDED"})).json()["items"]
    return run_id in [h["run_id"] for h in history]


async def _metrics_show_restart(api, name):
    metrics = (await api.get(f"/api/v1/services/{name}/metrics")).json()
    return metrics if metrics["restarts_total"] >= 1 and metrics["recoveries_24h"] >= 1 else None


async def _supervised(api, name):
    body = (await api.get(f"/api/v1/services/{name}/supervision")).json()
    return body if body.get("supervised") and body["state"] == "healthy" and not body["recovering"] else None


async def _restarted(api, name):
    return await _restarts_at_least(api, name, 1)


async def _restarts_at_least(api, name, n):
    body = await _supervised(api, name)
    service = (await api.get(f"/api/v1/services/{name}")).json()
    return body is not None and service["restarts_total"] >= n


async def test_cancel_and_retry_through_the_api(temporal_env, settings, db, api, ports):
    client = temporal_env.client
    p1, p2 = ports(), ports()
    await create(api, standin("base", p1))
    await create(api, standin("top", p2, deps=["base"], args=["--fail-start"]))
    async with running_worker(client, settings, db):
        r = await api.post("/api/v1/initializations", json={"retry_window": 60})
        run_id = r.json()["run_id"]
        body = await wait_run(api, run_id, "FAILED")
        assert body["live"] is True
        top = body["state"]["components"]["top"]
        assert top["status"] == "FAILED" and top["last_error"]
        # retrying a healthy component is refused; the failed one after a fix is accepted
        r = await api.post(f"/api/v1/initializations/{run_id}/components/base/retry")
        assert r.status_code == 409, r.text
        current = (await api.get("/api/v1/services/top/config")).json()
        fixed = standin("top", p2, deps=["base"]).content()
        r = await api.put(
            "/api/v1/services/top/config", json={"content": fixed}, headers={"If-Match": f'"{current["version"]}"'}
        )
        assert r.status_code == 200, r.text
        r = await api.post(f"/api/v1/initializations/{run_id}/components/top/retry")
        assert r.status_code == 200 and r.json()["accepted"], r.text
        body = await wait_run(api, run_id, "SUCCEEDED")
        # a validate-only run, then a run that gets cancelled
        r = await api.post("/api/v1/initializations", json={"validate_only": True})
        assert r.status_code == 202
        v = await wait_run(api, r.json()["run_id"], "SUCCEEDED")
        assert v["state"]["plan"] == [["base"], ["top"]]
        # marked as a dry run, in the run and in the history; the real run is not
        assert v["validate_only"] is True
        listed = {i["run_id"]: i for i in (await api.get("/api/v1/initializations")).json()["items"]}
        assert listed[v["run_id"]]["validate_only"] is True
        assert listed[run_id]["validate_only"] is False
        assert (await api.get(f"/api/v1/initializations/{run_id}")).json()["validate_only"] is False
        r = await api.post(f"/api/v1/initializations/{run_id}/cancel")
        assert r.status_code == 409  # already finished
        assert (await api.get("/api/v1/initializations/nope")).status_code == 404


async def test_schedules_crud(temporal_env, settings, db, api):
    sid = f"windflow-test-{settings.task_queue[3:]}"
    r = await api.post("/api/v1/schedules", json={"id": sid, "every_seconds": 600, "paused": True})
    assert r.status_code == 201, r.text
    assert r.json()["every_seconds"] == 600 and r.json()["paused"] is True
    assert (await api.post("/api/v1/schedules", json={"id": sid})).status_code == 409
    r = await api.patch(f"/api/v1/schedules/{sid}", json={"paused": False, "every_seconds": 120})
    assert r.status_code == 200 and r.json()["paused"] is False and r.json()["every_seconds"] == 120
    assert sid in [s["id"] for s in (await api.get("/api/v1/schedules")).json()]
    assert (await api.patch(f"/api/v1/schedules/{sid}", json={})).status_code == 422
    assert (await api.delete(f"/api/v1/schedules/{sid}")).status_code == 204
    assert (await api.get(f"/api/v1/schedules/{sid}")).status_code == 404


async def test_supervision_of_a_recovery_nobody_runs_answers_from_the_store(
    temporal_env, settings, db, api, ports, tmp_path
):
    """A recovery runs (backing off) but no worker does (it was killed): `GET …/supervision` answers at once with the
    last recorded status, saying so, instead of holding the request until the engine gives up (then a 502)."""
    from tests.helpers import register, start_service, supervise, watching

    client = temporal_env.client
    port = ports()
    flag = tmp_path / "broken"
    spec = standin(
        "app",
        port,
        boot=0.1,
        args=["--fail-start-while", str(flag)],
        restart={"max_attempts": 5, "backoff": "1h", "multiplier": 1, "backoff_max": "1h", "jitter": 0},
    )
    await register(db, spec)
    pid = await start_service(settings, spec)
    async with running_worker(client, settings, db):
        handle = await supervise(client, settings.task_queue, "app", db)
        await eventually(lambda: watching(handle), timeout=20)
        body = (await api.get("/api/v1/services/app/supervision")).json()
        assert body["supervised"] is True and body["recovering"] is False and body["state"] == "healthy"
        flag.write_text("x")  # from now on it fails to start: the recovery backs off for an hour
        os.kill(pid, signal.SIGKILL)
        await eventually(lambda: _recorded_state(api, "backing_off"), timeout=20)
        body = (await api.get("/api/v1/services/app/supervision")).json()
        assert body["live"] is True and body["recovering"] is True and body["status"]["state"] == "backing_off"
    r = await api.get("/api/v1/services/app/supervision")  # the worker is gone, the recovery is not
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["recovering"] is True and body["live"] is False
    assert "did not answer" in body["message"]
    assert body["status"]["state"] == "backing_off"  # the last recorded one
    await handle.terminate()


async def _recorded_state(api, state: str) -> bool:
    body = (await api.get("/api/v1/services/app")).json()
    return (body.get("state_detail") or {}).get("supervision", {}).get("state") == state


@workflow.defn(name="SystemInitialization")
class BrokenInitialization:
    """An initialization that cannot run on this worker: its workflow task fails at every attempt."""

    @workflow.run
    async def run(self, _input: dict) -> None:
        raise RuntimeError("this build cannot run initializations")


async def test_a_run_whose_workflow_task_keeps_failing_is_reported_and_cancellable(temporal_env, settings, db, api):
    """A worker whose initialization code cannot run (here: it raises at once; at fleet size it was a search
    attribute over the engine's limit) leaves the run looking alive. The API says what is wrong, the run watchdog
    records it with an event, and cancel ends it; a run Temporal ended by itself is reported the same way."""
    from sqlalchemy import select
    from temporalio.worker import UnsandboxedWorkflowRunner, Worker

    from windflow.persistence.models import OutboxRow
    from windflow.run_health import check_runs

    client = temporal_env.client
    async with Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[BrokenInitialization],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        r = await api.post("/api/v1/initializations", json={})
        assert r.status_code == 202, r.text
        run_id = r.json()["run_id"]

        async def reported() -> dict | None:
            body = (await api.get(f"/api/v1/initializations/{run_id}")).json()
            error = body.get("error") or ""
            # the newest failed attempt's cause (on a busy test process an attempt may fail as a deadlock first)
            return body if "keeps failing" in error and "this build cannot run initializations" in error else None

        body = await eventually(reported, timeout=90, interval=0.5)
        assert body["status"] == "PENDING" and body["finished_at"] is None  # it did not end: it is stuck
        await asyncio.sleep(5)  # the watchdog leaves runs younger than its grace period alone
        await check_runs(client, db)  # reports it (unless a watchdog elsewhere on this store did already)
        assert await check_runs(client, db) == 0  # told once
        async with db.read() as s:
            events = [
                e.payload["data"]
                for e in (
                    await s.execute(select(OutboxRow).where(OutboxRow.event_type == "INITIALIZATION_UPDATE"))
                ).scalars()
                if e.payload["data"]["run_id"] == run_id
            ]
        assert any("keeps failing" in e["message"] for e in events), events

        r = await api.post(f"/api/v1/initializations/{run_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "cancelled", r.text
        desc = await client.get_workflow_handle(f"init/{run_id}").describe()
        assert desc.status == WorkflowExecutionStatus.TERMINATED
        body = (await api.get(f"/api/v1/initializations/{run_id}")).json()
        assert body["status"] == "CANCELLED" and body["finished_at"] is not None and "keeps failing" in body["error"]

        # ended by Temporal itself (as the engine did with a search attribute over its limit)
        r = await api.post("/api/v1/initializations", json={})
        second = r.json()["run_id"]
        await client.get_workflow_handle(f"init/{second}").terminate(reason="BadSearchAttributes: value too large")
        await asyncio.sleep(5)
        await check_runs(client, db)
        body = (await api.get(f"/api/v1/initializations/{second}")).json()
        assert body["status"] == "FAILED" and "BadSearchAttributes" in body["error"], body
        r = await api.post(f"/api/v1/initializations/{second}/cancel")
        assert r.status_code == 409 and "BadSearchAttributes" in r.json()["error"]["message"], r.text
