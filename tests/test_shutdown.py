"""System shutdown end to end: REST → SystemShutdown on a real dev server and worker → real processes stopped in
reverse dependency order, supervision paused, progress in the query and SHUTDOWN_UPDATE events, cancel, CLI."""

from __future__ import annotations

import asyncio
import sys
import uuid
from datetime import datetime

import pytest
from sqlalchemy import select

from tests.conftest import mint_token
from tests.helpers import (
    create,
    eventually,
    kill_marked,
    processes_with,
    running_worker,
    standin,
    start_service,
    terminate_quietly,
)
from tests.live_server import LiveServer
from tests.test_cli import invoke
from windflow.domain.models import ServiceSpec
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    return temporal_settings


async def wait_done(api, run_id: str, timeout: float = 60) -> dict:
    async def done():
        body = (await api.get(f"/api/v1/shutdowns/{run_id}")).json()
        # finished and recorded (read from the store, no longer from the running workflow)
        return body if body["status"] in ("COMPLETED", "FAILED", "CANCELLED") and not body["live"] else None

    return await eventually(done, timeout=timeout, interval=0.2)


MARK = uuid.uuid4().hex[:8]


@pytest.fixture(autouse=True)
def no_stubborn_leftovers():
    yield
    kill_marked(f"--mark={MARK}")
    kill_marked(f"child-{MARK}")


def stubborn(name: str, deps: list[str] | None = None, grace: str = "0.5s") -> ServiceSpec:
    """A service that ignores SIGTERM and has a child in its process group: only SIGKILL of the group ends it."""
    script = (
        f"import signal, subprocess, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"subprocess.Popen(['sleep', '1000', '{name}-child-{MARK}']); time.sleep(1000)"
    )
    return ServiceSpec.model_validate(
        {
            "id": name,
            "driver": "process",
            "depends_on": deps or [],
            "config": {"command": [sys.executable, "-c", script, f"--mark={MARK}-{name}"], "stop_grace": grace},
        }
    )


async def test_shutdown_stops_dependants_first_and_leaves_the_rest(temporal_env, settings, db, api, ports):
    p_db, p_app, p_web, p_other = ports(), ports(), ports(), ports()
    specs = [
        standin("db", p_db),
        standin("app", p_app, deps=["db"]),
        standin("web", p_web, deps=["app"]),
        standin("other", p_other),
        stubborn("sidecar", ["db"]),
    ]
    for spec in specs:
        await create(api, spec)
        await start_service(settings, spec)
    assert processes_with(f"--mark={MARK}-sidecar") and processes_with(f"sidecar-child-{MARK}")

    bad = await api.post("/api/v1/shutdowns", json={"services": ["db", "nope"]})
    assert bad.status_code == 422 and "nope" in bad.json()["error"]["message"]
    assert (await api.post("/api/v1/shutdowns", json={"services": ["db"], "force": True})).status_code == 422
    assert (await api.post("/api/v1/shutdowns", json={"services": "db"})).status_code == 422

    async with running_worker(temporal_env.client, settings, db):
        r = await api.post("/api/v1/shutdowns", json={"services": ["db"], "reason": "maintenance"})
        assert r.status_code == 202, r.text
        accepted = r.json()
        assert accepted["workflow_id"] == f"down/{accepted['run_id']}"
        body = await wait_done(api, accepted["run_id"])
    assert body["status"] == "COMPLETED", body
    state = body["state"]
    assert state["layers"] == [["web"], ["app", "sidecar"], ["db"]]
    comps = state["components"]
    assert set(comps) == {"db", "app", "web", "sidecar"}  # `other` depends on nothing here: untouched
    assert comps["db"]["requested"] and not comps["web"]["requested"]
    assert all(c["status"] == "stopped" for c in comps.values()), comps

    def at(name: str, key: str) -> datetime:
        return datetime.fromisoformat(comps[name][key])

    assert at("web", "finished_at") <= at("app", "started_at")  # dependants stopped first
    assert at("app", "finished_at") <= at("db", "started_at") and at("sidecar", "finished_at") <= at("db", "started_at")
    # the processes are gone (the stubborn one by SIGKILL of its group, child included); `other` still runs
    for port in (p_db, p_app, p_web):
        assert not processes_with(f"--port {port} ")
    assert not processes_with(f"--mark={MARK}-sidecar") and not processes_with(f"sidecar-child-{MARK}")
    assert processes_with(f"--port {p_other} ")
    rows = {s["id"]: s for s in (await api.get("/api/v1/services?limit=50")).json()["items"]}
    assert rows["db"]["state"] == rows["app"]["state"] == rows["web"]["state"] == "stopped"
    assert rows["db"]["desired"] == "stopped" and rows["other"].get("desired") != "stopped"  # stays stopped

    # progress reached the event stream (outbox), in order, ending at 100 %
    from windflow.persistence.models import OutboxRow

    async def final_events():
        async with db.read() as session:
            rows = (
                await session.execute(
                    select(OutboxRow).where(OutboxRow.event_type == "SHUTDOWN_UPDATE").order_by(OutboxRow.id)
                )
            ).scalars()
            found = [r.payload.get("data", r.payload) for r in rows]
        return found if found and found[-1]["status"] == "COMPLETED" else None

    events = await eventually(final_events, timeout=10)  # the final record lands just after the status says so
    assert events[-1]["progress"] == 100
    stopped = [e["component"] for e in events if e.get("component_status") == "stopped"]
    assert stopped.index("web") < stopped.index("app") < stopped.index("db")

    # the audit trail and the history
    history = (await api.get("/api/v1/shutdowns")).json()["items"]
    assert history[0]["run_id"] == accepted["run_id"] and history[0]["status"] == "COMPLETED"
    audit = (await api.get("/api/v1/audit", params={"action": "shutdown.start"})).json()["items"]
    assert audit and audit[0]["target"] == accepted["workflow_id"]


async def test_cancel_leaves_what_is_not_stopped_running(temporal_env, settings, db, api, ports):
    p_db = ports()
    slow = stubborn("slowpoke", grace="60s")  # ignores SIGTERM: its stop waits out the grace
    for spec in (standin("base", p_db), ServiceSpec.model_validate({**slow.model_dump(), "depends_on": ["base"]})):
        await create(api, spec)
        await start_service(settings, spec)
    async with running_worker(temporal_env.client, settings, db):
        r = await api.post("/api/v1/shutdowns", json={})
        run_id = r.json()["run_id"]

        async def stopping():
            body = (await api.get(f"/api/v1/shutdowns/{run_id}")).json()
            comps = (body.get("state") or {}).get("components") or {}
            return body if comps.get("slowpoke", {}).get("status") == "stopping" else None

        live = await eventually(stopping, timeout=30, interval=0.2)
        assert live["live"] is True and live["state"]["components"]["base"]["status"] == "pending"
        assert (await api.post(f"/api/v1/shutdowns/{run_id}/cancel")).status_code == 202
        body = await wait_done(api, run_id)
        assert body["status"] == "CANCELLED"
        assert body["state"]["components"]["base"]["status"] == "skipped"
        assert processes_with(f"--port {p_db} ")  # not reached: still running
        again = await api.post(f"/api/v1/shutdowns/{run_id}/cancel")
        assert again.status_code == 409


async def test_cli_down_watch(temporal_env, settings, db, api, app_resources, ports, tmp_path):
    from windflow.api.app import create_app

    p = ports()
    spec = standin("solo", p)
    await create(api, spec)
    await start_service(settings, spec)
    async with (
        running_worker(temporal_env.client, settings, db),
        LiveServer(create_app(settings, resources=app_resources)) as live,
    ):
        result = await invoke(
            tmp_path,
            "down",
            "solo",
            "--watch",
            "-o",
            "json",
            "--api",
            live.http_url,
            WINDFLOW_TOKEN=mint_token(settings),
        )
    assert result.exit_code == 0, result.output
    assert '"status": "COMPLETED"' in result.output
    await asyncio.sleep(0)
    assert not processes_with(f"--port {p} ")


async def test_cli_down_of_everything_asks_first(temporal_env, settings, api, app_resources, tmp_path):
    """`windflow down` without services stops the whole system: it asks (declined: nothing starts), --yes skips."""
    from typer.testing import CliRunner

    from tests.test_cli import cli_env
    from windflow.api.app import create_app
    from windflow.cli.main import app as cli

    await create(api, standin("lonely", 1))  # registered, not started (no worker runs the shutdowns here)

    async def runs() -> list[dict]:
        return (await api.get("/api/v1/shutdowns")).json()["items"]

    before = len(await runs())
    async with LiveServer(create_app(settings, resources=app_resources)) as live:
        env = cli_env(tmp_path, WINDFLOW_TOKEN=mint_token(settings), WINDFLOW_API_URL=live.http_url)

        def down(*args: str, answer: str | None = None):
            return CliRunner().invoke(cli, ["down", *args], env=env, input=answer)

        declined = await asyncio.to_thread(down, answer="n\n")
        assert declined.exit_code == 1 and "Stop every service of the system?" in declined.output, declined.output
        assert "Aborted" in declined.output
        no_answer = await asyncio.to_thread(down)  # nobody to answer: not a yes
        assert no_answer.exit_code == 1, no_answer.output
        assert len(await runs()) == before
        accepted = await asyncio.to_thread(down, "--yes")
        assert accepted.exit_code == 0 and "Stop every" not in accepted.output, accepted.output
        confirmed = await asyncio.to_thread(down, answer="y\n")
        assert confirmed.exit_code == 0 and "started" in confirmed.output, confirmed.output
        named = await asyncio.to_thread(down, "lonely")  # services named: no question
        assert named.exit_code == 0 and "Stop every" not in named.output, named.output
    started = await runs()
    assert len(started) == before + 3
    await terminate_quietly(temporal_env.client, *(r["workflow_id"] for r in started))
