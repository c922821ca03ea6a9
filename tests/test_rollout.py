"""ConfigRollout on a real Temporal dev server, real workers and real stand-in processes.

The workflow tests run on SQLite only (the store code paths are the registry's, tested on both backends
elsewhere); the refusal test runs on both, which also migrates 0005 on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.worker import Replayer

from tests.conftest import mint_token
from tests.helpers import (
    create,
    eventually,
    healthy,
    kill_process_group,
    processes_with,
    running_worker,
    standin,
    start_service,
    supervise,
    terminate_quietly,
    watching,
    worker_process,
)
from windflow.domain.rollout import RolloutInput, RolloutPhase, RolloutState, RolloutStatus
from windflow.persistence.models import ConfigVersionRow, OutboxRow, ServiceRow
from windflow.persistence.rollout_models import ConfigRolloutRow
from windflow.settings import Settings
from windflow.workflows.rollout import ConfigRollout

pytestmark = pytest.mark.asyncio(loop_scope="session")
SQLITE_ONLY = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    """The API talks to the session's dev server, on the task queue this test's worker polls."""
    return temporal_settings


@pytest.fixture(autouse=True)
async def no_stray_workflows(temporal_env):
    yield
    await terminate_quietly(temporal_env.client, "recover/web", "rollout/web", "recover/kv", "rollout/kv")


# --------------------------------------------------------------------------- helpers


def cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def only_process(port: int) -> str:
    pids = processes_with(f"--port {port} ")
    assert len(pids) == 1, pids
    return cmdline(pids[0])


async def rollout(api, service: str, spec, *, window: float, comment: str = "") -> str:
    r = await api.post(
        f"/api/v1/services/{service}/rollouts",
        json={"config": spec.content(), "comment": comment, "verify_window": window},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "PENDING" and body["links"]["self"].endswith(body["rollout_id"])
    return body["rollout_id"]


async def ended(api, service: str, rollout_id: str, timeout: float = 60) -> dict:
    async def done():
        body = (await api.get(f"/api/v1/services/{service}/rollouts/{rollout_id}")).json()
        return body if body["status"] in ("SUCCEEDED", "ROLLED_BACK", "FAILED", "CANCELLED") else None

    return await eventually(done, timeout=timeout, interval=0.2)


async def in_phase(api, service: str, rollout_id: str, *phases: str) -> dict | None:
    body = (await api.get(f"/api/v1/services/{service}/rollouts/{rollout_id}")).json()
    return body if body["phase"] in phases and body["live"] else None


async def versions(db, service_id: str) -> dict[int, ConfigVersionRow]:
    async with db.read() as session:
        rows = await session.execute(select(ConfigVersionRow).where(ConfigVersionRow.service_id == service_id))
        return {r.version: r for r in rows.scalars()}


async def current_content(db, service_id: str) -> dict:
    async with db.read() as session:
        return (await session.get(ServiceRow, service_id)).spec


async def store_proposal(db, rollout_id: str, service_id: str, content: dict, actor: str = "tester") -> None:
    """What the API stores before it starts a rollout: the workflow input carries only the rollout id."""
    from windflow.persistence.rollout_models import RolloutRepository

    async with db.write() as session:
        await RolloutRepository().upsert(
            session=session,
            rollout_id=rollout_id,
            service_id=service_id,
            workflow_id=f"rollout/{service_id}",
            status="PENDING",
            phase="pending",
            actor=actor,
            verify_window=1.0,
            proposal=content,
        )


async def outbox_events(db, event_type: str) -> list[dict]:
    async with db.read() as session:
        stmt = select(OutboxRow).where(OutboxRow.event_type == event_type).order_by(OutboxRow.id)
        rows = (await session.execute(stmt)).scalars()
        return [r.payload["data"] for r in rows]


# --------------------------------------------------------------------------- the good path


@SQLITE_ONLY
async def test_good_change_is_applied_verified_and_marked_good(temporal_env, settings, db, api, ports):
    client = temporal_env.client
    port = ports()
    v1 = standin("web", port, boot=0.1, interval="0.1s")
    await create(api, v1)
    await start_service(settings, v1)
    await eventually(lambda: healthy(port), timeout=10)
    async with running_worker(client, settings, db):
        supervisor = await supervise(client, settings.task_queue, "web", db, heartbeat_timeout=3)
        await eventually(lambda: watching(supervisor), timeout=15)
        v2 = standin("web", port, boot=0.4, interval="0.1s")
        rollout_id = await rollout(api, "web", v2, window=3.0, comment="slower boot")
        live = await eventually(lambda: in_phase(api, "web", rollout_id, "verifying"), timeout=30, interval=0.05)
        assert live["state"]["supervision"] == "paused" and live["status"] == "RUNNING"
        held = await supervisor.row()  # no "recovery" in the middle of the change
        assert held.held_by and held.held_by.startswith("rollout/web") and not await supervisor.recovering()
        body = await ended(api, "web", rollout_id)
        st = body["state"]
        assert body["status"] == "SUCCEEDED", (body["message"], st["verification"], st["rollback_verification"])
        assert (body["previous_version"], body["good_version"], body["new_version"]) == (1, 1, 2)
        assert body["restored_version"] is None and st["marked_good"] == 2
        assert st["verification"]["healthy"] is True
        probes = st["verification"]["probes"]
        assert len(probes) >= 3 and probes[-1]["healthy"] and all(p["running"] for p in probes)
        assert probes[-1]["since_apply"] >= 3.0
        phases = [p["phase"] for p in st["phases"]]
        assert phases == [
            "validating",
            "pausing_supervision",
            "saving",
            "applying",
            "verifying",
            "marking_good",
            "resuming_supervision",
            "done",
        ]
        assert st["supervision"] == "resumed"
        # the new config runs, once, healthy; the versions carry the good marker
        assert "--boot 0.4" in only_process(port) and await healthy(port)
        found = await versions(db, "web")
        assert (found[1].status, found[2].status) == ("good", "good")  # 1 was good implicitly
        assert found[2].comment == "slower boot" and found[2].author == "tester"
        assert await current_content(db, "web") == v2.content()
        # supervision resumed and never restarted the service
        st_sup = await eventually(lambda: watching(supervisor), timeout=15)
        assert st_sup.restarts_total == 0
        # history and events
        history = (await api.get("/api/v1/services/web/rollouts")).json()["items"]
        assert [(h["rollout_id"], h["status"]) for h in history] == [(rollout_id, "SUCCEEDED")]
        updates = [e for e in await outbox_events(db, "ROLLOUT_UPDATE") if e["rollout_id"] == rollout_id]
        assert [e["phase"] for e in updates] == phases
        changed = await outbox_events(db, "CONFIG_CHANGED")
        assert {"version": 2, "change": "update"}.items() <= changed[-1].items()
        # the workflow validates on its own too (against the registry as it is then): nothing is saved
        await store_proposal(db, "r-invalid", "web", {**v2.content(), "depends_on": ["ghost"]})
        result: RolloutState = await client.execute_workflow(
            ConfigRollout.run,
            RolloutInput(rollout_id="r-invalid", service_id="web", actor="tester", verify_window=1),
            id="rollout/web",
            task_queue=settings.task_queue,
        )
        assert result.status == RolloutStatus.FAILED and result.new_version is None, result
        assert result.problems and "ghost" in result.problems[0]["msg"] and result.supervision == "none"
        assert list(await versions(db, "web")) == [1, 2]


# --------------------------------------------------------------------------- bad changes roll back


@SQLITE_ONLY
async def test_bad_change_is_rolled_back_with_evidence(temporal_env, settings, db, api, ports):
    """A new version that comes up, then fails its probe, is rolled back (one that exits at start: the CLI test)."""
    client = temporal_env.client
    port, dep = ports(), ports()
    v1 = standin("web", port, boot=0.1, interval="0.1s", failure_threshold=3)
    await create(api, v1)
    await start_service(settings, v1)
    await eventually(lambda: healthy(port), timeout=10)
    # the new version needs a dependency the test takes away once the version is up
    dependency = await asyncio.start_server(lambda _r, w: w.close(), "127.0.0.1", dep)
    v2 = standin("web", port, boot=0.1, interval="0.1s", failure_threshold=3, args=["--requires", f"127.0.0.1:{dep}"])
    try:
        async with running_worker(client, settings, db):
            rollout_id = await rollout(api, "web", v2, window=5.0)
            await eventually(lambda: _came_up(api, "web", rollout_id), timeout=30, interval=0.05)
            dependency.close()
            await dependency.wait_closed()
            body = await ended(api, "web", rollout_id)
    finally:
        dependency.close()
    st = body["state"]
    assert body["status"] == "ROLLED_BACK", (body["message"], st["verification"], st["rollback_verification"])
    assert (body["good_version"], body["new_version"], body["restored_version"]) == (1, 2, 3)
    bad, good = st["verification"], st["rollback_verification"]
    assert bad["healthy"] is False
    assert all(p["running"] for p in bad["probes"]) and any(p["healthy"] for p in bad["probes"])
    assert [p["healthy"] for p in bad["probes"][-3:]] == [False, False, False]
    assert "503" in bad["probes"][-1]["message"] and bad["probes"][-1]["verdict"] == "unhealthy"
    assert bad["message"].startswith("unhealthy after 3 failed probes")
    assert good["healthy"] is True and good["probes"][-1]["healthy"]
    assert "rolled back" in body["message"]
    # the service runs the old config again, for real
    assert await healthy(port)
    assert "--requires" not in only_process(port)
    assert await current_content(db, "web") == v1.content()
    found = await versions(db, "web")
    assert [found[v].status for v in (1, 2, 3)] == ["good", "bad", "good"]
    assert found[3].reverted_from == 1 and rollout_id in found[3].comment
    changes = [(e["version"], e["change"]) for e in await outbox_events(db, "CONFIG_CHANGED")]
    assert changes[-2:] == [(2, "update"), (3, "rollback")]


async def _came_up(api, service: str, rollout_id: str) -> bool:
    body = (await api.get(f"/api/v1/services/{service}/rollouts/{rollout_id}")).json()
    ver = (body.get("state") or {}).get("verification") or {}
    return any(p["verdict"] == "healthy" for p in ver.get("probes") or [])


# --------------------------------------------------------------------------- REST


@SQLITE_ONLY
async def test_concurrent_rollout_is_409_and_cancel_rolls_back(temporal_env, settings, db, api, ports):
    client = temporal_env.client
    port = ports()
    v1 = standin("web", port, boot=0.1, interval="0.1s")
    await create(api, v1)
    await start_service(settings, v1)
    await eventually(lambda: healthy(port), timeout=10)
    v2 = standin("web", port, boot=0.2, interval="0.1s")
    v3 = standin("web", port, boot=0.3, interval="0.1s")
    async with running_worker(client, settings, db):
        rollout_id = await rollout(api, "web", v2, window=6)
        await eventually(lambda: in_phase(api, "web", rollout_id, "verifying"), timeout=20)
        second = await api.post("/api/v1/services/web/rollouts", json={"config": v3.content(), "verify_window": 1})
        assert second.status_code == 409, second.text
        err = second.json()["error"]
        assert err["code"] == "conflict" and err["details"]["running_rollout"] == rollout_id
        assert set(err) == {"code", "message", "timestamp", "details"}
        r = await api.delete(f"/api/v1/services/web/rollouts/{rollout_id}")
        assert r.status_code == 202 and r.json()["status"] == "cancelling"
        body = await ended(api, "web", rollout_id)
        cancelled_run = (await client.get_workflow_handle("rollout/web").describe()).run_id
        again = await api.post(f"/api/v1/services/web/rollouts/{rollout_id}/cancel")
        assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"
        # the workflow id is free again: the next rollout runs, and `wait` answers with its outcome
        third = await api.post(
            "/api/v1/services/web/rollouts",
            json={"config": v3.content(), "verify_window": 1, "wait": True, "timeout": 120},
        )
        assert third.status_code == 200, third.text
        assert third.json()["status"] == "SUCCEEDED" and third.json()["new_version"] == 4
    st = body["state"]
    assert body["status"] == "ROLLED_BACK" and st["cancelled"] is True, body
    assert st["verification"]["message"] == "cancelled while verifying"
    assert st["rollback_verification"]["healthy"] is True
    assert await current_content(db, "web") == v3.content() and await healthy(port)
    assert "--boot 0.3" in only_process(port)
    found = await versions(db, "web")
    assert [(v, found[v].status, found[v].reverted_from) for v in sorted(found)] == [
        (1, "good", None),
        (2, "bad", None),
        (3, "good", 1),
        (4, "good", None),
    ]
    listed = (await api.get("/api/v1/services/web/rollouts")).json()["items"]
    assert [h["rollout_id"] for h in listed][1:] == [rollout_id]  # the refused one left no row
    assert [h["status"] for h in listed] == ["SUCCEEDED", "ROLLED_BACK"]
    # the recorded history (a cancel in the middle of a verification, then a rollback) replays deterministically
    replayer = Replayer(workflows=[ConfigRollout], data_converter=client.data_converter)
    history = await client.get_workflow_handle("rollout/web", run_id=cancelled_run).fetch_history()
    replayed = await replayer.replay_workflow(history)
    assert replayed.replay_failure is None


async def test_refusals_leave_nothing_saved(temporal_env, settings, db, api, app, ports):
    """403 for a viewer, the envelope for a bad config or an unknown service; no version, no rollout."""
    port = ports()
    v1 = standin("web", port)
    await create(api, v1)
    viewer = {"Authorization": f"Bearer {mint_token(settings, ['services:read', 'configs:read'], 'vic', ('viewer',))}"}
    good = {"config": standin("web", port, boot=0.5).content(), "verify_window": 1}
    r = await api.post("/api/v1/services/web/rollouts", json=good, headers=viewer)
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert (await api.get("/api/v1/services/web/rollouts", headers=viewer)).status_code == 200
    bad = {"config": {**v1.content(), "driver": "teleport"}, "verify_window": 1}
    r = await api.post("/api/v1/services/web/rollouts", json=bad)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert (
        err["code"] == "config_invalid" and err["details"] and set(err) == {"code", "message", "timestamp", "details"}
    )
    r = await api.post("/api/v1/services/web/rollouts", json={**good, "verify_window": 0})
    assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error"
    r = await api.post("/api/v1/services/web/rollouts", json={"config": v1.content()})
    assert r.status_code == 422 and r.json()["error"]["code"] == "config_unchanged"
    r = await api.post("/api/v1/services/nope/rollouts", json=good)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = await api.get(f"/api/v1/services/web/rollouts/{uuid.uuid4().hex[:16]}")
    assert r.status_code == 404
    assert list(await versions(db, "web")) == [1]
    assert (await api.get("/api/v1/services/web/rollouts")).json()["items"] == []
    async with db.read() as session:
        assert (await session.execute(select(ConfigRolloutRow))).scalars().all() == []
        audit = (await session.execute(select(OutboxRow).where(OutboxRow.event_type == "AUDIT"))).scalars().all()
    refused = [a.payload["data"] for a in audit if a.payload["data"]["action"] == "config.rollout.start"]
    assert refused and {a["outcome"] for a in refused} == {"failure"}


# --------------------------------------------------------------------------- CLI


@SQLITE_ONLY
async def test_cli_config_apply_waits_and_fails_when_rolled_back(
    temporal_env, settings, db, app_resources, ports, tmp_path
):
    import yaml

    from tests.helpers import register
    from tests.live_server import LiveServer
    from windflow.api.app import create_app

    port = ports()
    v1 = standin("web", port, boot=0.1, interval="0.1s")
    await register(db, v1)
    await start_service(settings, v1)
    await eventually(lambda: healthy(port), timeout=10)
    file = tmp_path / "web.yaml"
    file.write_text(yaml.safe_dump(standin("web", port, boot=0.1, interval="0.1s", args=["--fail-start"]).content()))
    env = {
        **os.environ,
        "WINDFLOW_TOKEN": mint_token(settings),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "COLUMNS": "200",
    }
    async with (
        LiveServer(create_app(settings, resources=app_resources)) as server,
        running_worker(temporal_env.client, settings, db),
    ):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from windflow.cli.main import run; run()",
            "config",
            "apply",
            "web",
            str(file),
            "--comment",
            "try it",
            "--verify-window",
            "1",
            "--wait",
            "--api",
            server.http_url,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=120)
    text = out.decode()
    assert proc.returncode == 1, text
    assert "ROLLED_BACK" in text and "restored version 3" in text and "new version 2" in text
    # the evidence, as stored: the new version's process was gone, the restored one is healthy
    async with db.read() as session:
        row = (await session.execute(select(ConfigRolloutRow))).scalar_one()
    st = RolloutState.model_validate(row.state)
    assert row.status == "ROLLED_BACK" and (row.new_version, row.restored_version) == (2, 3)
    assert st.verification.healthy is False and "not running" in st.verification.message
    assert st.verification.probes and not st.verification.probes[-1].running
    assert st.rollback_verification.healthy is True and st.rollback_verification.probes[-1].healthy
    # the service runs the old config again, for real
    assert await current_content(db, "web") == v1.content() and await healthy(port)
    assert "--fail-start" not in only_process(port)
    found = await versions(db, "web")
    assert [found[v].status for v in (1, 2, 3)] == ["good", "bad", "good"]
    assert found[2].comment == "try it" and found[3].reverted_from == 1


@SQLITE_ONLY
async def test_cli_config_apply_resolves_cwd_against_the_files_directory(
    temporal_env, settings, db, app_resources, ports, tmp_path
):
    """`config apply` saved ``cwd: null`` for a file without one, where `windflow apply` and `windflow up` use the
    file's directory: the same file meant different things depending on the command."""
    import yaml

    from tests.helpers import register
    from tests.live_server import LiveServer
    from windflow.api.app import create_app
    from windflow.cli.config import resolve_cwd

    port = ports()
    await register(db, standin("web", port))
    here = tmp_path / "deploy"
    here.mkdir()
    file = here / "web.yaml"
    file.write_text(yaml.safe_dump(standin("web", port, args=["--fail-start"]).content()))
    env = {**os.environ, "WINDFLOW_TOKEN": mint_token(settings), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    async with LiveServer(create_app(settings, resources=app_resources)) as server:  # no worker: it stays pending
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from windflow.cli.main import run; run()",
            "config",
            "apply",
            "web",
            str(file),
            "--api",
            server.http_url,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, out.decode()
    async with db.read() as session:
        row = (await session.execute(select(ConfigRolloutRow))).scalar_one()
    assert row.proposal["config"]["cwd"] == str(here)
    # a relative one resolves against the file too; other drivers are left alone
    content = standin("web", port).content()
    content["config"]["cwd"] = "sub"
    assert resolve_cwd(content, "web", file)["config"]["cwd"] == str(here / "sub")
    noop = {"driver": "noop", "config": {}}
    assert resolve_cwd(noop, "web", file) == noop


# --------------------------------------------------------------------------- a worker dies mid-rollout


async def _probing(handle) -> RolloutState | None:
    """The new version is being verified and has been probed at least once."""
    st: RolloutState = await handle.query(ConfigRollout.status)
    return st if st.phase == RolloutPhase.VERIFYING and st.verification and st.verification.probes else None


async def test_worker_killed_mid_rollout_ends_consistent(temporal_env, wsettings, sqlite_db, ports, tmp_path):
    from tests.helpers import register

    client = temporal_env.client
    port = ports()
    v1 = standin("kv", port, boot=0.1, interval="0.2s")
    v2 = standin("kv", port, boot=1.0, interval="0.2s")
    await register(sqlite_db, v1)
    await start_service(wsettings, v1)
    await eventually(lambda: healthy(port), timeout=10)
    first = worker_process(wsettings, tmp_path, "w1")
    second = None
    try:
        supervisor = await supervise(client, wsettings.task_queue, "kv", sqlite_db, heartbeat_timeout=3)
        await eventually(lambda: watching(supervisor), timeout=30)
        await store_proposal(sqlite_db, "r-kill", "kv", v2.content())
        handle = await client.start_workflow(
            ConfigRollout.run,
            RolloutInput(rollout_id="r-kill", service_id="kv", actor="tester", verify_window=2.0, expected_version=1),
            id="rollout/kv",
            task_queue=wsettings.task_queue,
        )
        await eventually(lambda: _probing(handle), timeout=30, interval=0.05)
        kill_process_group(first)  # the new version is booting or being verified: the rollout is in flight
        second = worker_process(wsettings, tmp_path, "w2")
        result: RolloutState = await asyncio.wait_for(handle.result(), timeout=90)
        assert result.status in (RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK), result
        # never half: the stored config, the good marker and the running process agree
        content = await current_content(sqlite_db, "kv")
        found = await versions(sqlite_db, "kv")
        running = only_process(port)
        if result.status == RolloutStatus.SUCCEEDED:
            assert content == v2.content() and found[2].status == "good" and "--boot 1.0" in running
        else:
            assert content == v1.content() and found[result.restored_version].status == "good"
            assert "--boot 0.1" in running
        assert await healthy(port)
        async with sqlite_db.read() as session:
            row = await session.get(ConfigRolloutRow, "r-kill")
        assert row.status == result.status.value and row.finished_at is not None
        await eventually(lambda: watching(supervisor), timeout=30)  # supervision resumed
        assert (await supervisor.row()).held_by is None
    finally:
        kill_process_group(first)
        kill_process_group(second)
