"""Replicas (``replicas: N`` on a process service): N processes ``svc/0 … svc/N-1`` with ``{replica}`` substituted,
each watched and recovered on its own, an aggregate status, scaling up in order and down from the highest index,
dependants gated on ``min_ready``. Real processes, a real worker, the real dev server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import uuid
from pathlib import Path

import pytest
from sqlalchemy import select
from temporalio.worker import Replayer

from tests.auth_helpers import assert_envelope
from tests.conftest import mint_token
from tests.helpers import STANDIN, create, eventually, healthy, kill_marked, processes_with, running_worker, standin
from tests.live_server import LiveServer
from tests.test_cli import invoke
from windflow.api.app import create_app
from windflow.domain.contracts import InitInput, InitOptions, InitStatus, ScaleResult
from windflow.domain.models import ServiceSpec
from windflow.persistence.models import OutboxRow
from windflow.settings import Settings
from windflow.workflows.initialization import SystemInitialization
from windflow.workflows.scale import ServiceScale

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture
def settings(temporal_settings: Settings) -> Settings:
    return temporal_settings


def port_range(n: int) -> int:
    """A base port B with B … B+n-1 free now."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        free = True
        for p in range(base, base + n):
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", p))
                except OSError:
                    free = False
                    break
        if free:
            return base
    raise RuntimeError("no free port range")


@pytest.fixture
def base_port():
    bases: list[tuple[int, int]] = []

    def make(n: int) -> int:
        base = port_range(n)
        bases.append((base, n))
        return base

    yield make
    for base, n in bases:
        for p in range(base, base + n):
            kill_marked(f"--port {p} ")


def replicated(name: str, base: int, replicas: int, *, boot: float = 0.2, deps=(), **extra) -> dict:
    """A stand-in service whose replica K listens on base+K (``{replica+base}`` in its command and probe)."""
    return {
        "id": name,
        "driver": "process",
        "replicas": replicas,
        "depends_on": list(deps),
        "config": {
            "command": [
                sys.executable,
                str(STANDIN),
                "--name",
                name,
                "--port",
                f"{{replica+{base}}}",
                "--boot",
                str(boot),
                "--protocol",
                "http",
            ],
            "env": {"REPLICA": "{replica}"},
            "stop_grace": "2s",
        },
        "health": {
            "kind": "http",
            "url": f"http://127.0.0.1:{{replica+{base}}}/health",
            "interval": "0.2s",
            "timeout": "1s",
            "failure_threshold": 2,
        },
        "restart": {"backoff": "0s", "jitter": 0, "max_attempts": 5},
        **extra,
    }


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def run_init(client, task_queue: str):
    run_id = uuid.uuid4().hex[:12]
    handle = await client.start_workflow(
        SystemInitialization.run,
        InitInput(run_id=run_id, options=InitOptions(retry_window=0)),
        id=f"init/{run_id}",
        task_queue=task_queue,
    )
    return await asyncio.wait_for(handle.result(), timeout=90)


async def end_supervisors(client, *ids: str) -> None:
    for service_id in ids:
        with contextlib.suppress(Exception):
            await client.get_workflow_handle(f"supervise/{service_id}").terminate("test over")


async def test_validation_errors_are_enveloped_and_export_round_trips(api):
    base = {"id": "web", "driver": "process", "config": {"command": ["srv", "--port", "{replica+9000}"]}}
    cases = [
        (
            {**base, "driver": "command", "config": {"start": {"run": "srv"}, "stop": {"run": "x"}}, "replicas": 2},
            "only for the `process` driver",
        ),
        ({**base, "replicas": 0}, "replicas"),
        ({**base, "replicas": 101}, "replicas"),
        ({**base, "replicas": 2, "health": {"kind": "tcp", "port": 9000}}, "every replica would be probed at 9000"),
        (
            {**base, "replicas": 2, "health": {"kind": "http", "url": "http://127.0.0.1:9000/health"}},
            "every replica would be probed",
        ),
        ({**base}, "only in a service with `replicas`"),
        ({**base, "replicas": 2, "min_ready": 3}, "min_ready"),
        ({**base, "id": "web/0"}, "reserved for replicas"),
        ({**base, "replicas": 2, "kind": "job"}, "replicas"),
    ]
    for body, text in cases:
        err = assert_envelope(await api.post("/api/v1/services", json=body), 422)
        assert text in err["message"] + str(err["details"]), (body, err)
    assert (await api.get("/api/v1/services")).json()["items"] == []  # nothing half-saved

    ok = {**base, "replicas": 3, "min_ready": 2, "health": {"kind": "tcp", "port": "{replica+9000}"}}
    assert (await api.post("/api/v1/services", json=ok)).status_code == 201
    plain = {"id": "solo", "driver": "process", "config": {"command": ["srv"]}}
    assert (await api.post("/api/v1/services", json=plain)).status_code == 201
    listed = {s["id"]: s for s in (await api.get("/api/v1/services")).json()["items"]}
    assert set(listed) == {"web", "solo"}  # replicas are not services of the list
    assert listed["web"]["replicas"] == 3 and listed["web"]["min_ready"] == 2 and listed["web"]["ready"] == 0
    replicas = (await api.get("/api/v1/services/web/replicas")).json()
    assert [(r["id"], r["replica_of"], r["replica_index"]) for r in replicas] == [
        ("web/0", "web", 0),
        ("web/1", "web", 1),
        ("web/2", "web", 2),
    ]
    assert replicas[1]["config"]["command"] == ["srv", "--port", "9001"]
    assert replicas[1]["health"]["port"] == 9001
    one = (await api.get("/api/v1/services/web/replicas/1")).json()
    assert one["id"] == "web/1"
    assert_envelope(await api.get("/api/v1/services/web/replicas/5"), 404)
    assert_envelope(await api.get("/api/v1/services/solo/replicas/0"), 404)

    # scaling a service without replicas, or out of bounds, is refused in the envelope
    assert_envelope(await api.patch("/api/v1/services/solo", json={"replicas": 3}), 422)
    for bad in ({"replicas": 0}, {"replicas": 101}, {"replicas": "3"}, {}):
        assert_envelope(await api.patch("/api/v1/services/web", json=bad), 422)
    err = assert_envelope(await api.patch("/api/v1/services/web", json={"replicas": 1}), 422)
    assert "min_ready" in err["message"] + str(err["details"])  # fewer replicas than must be ready
    # a replicated service cannot silently turn into one process (or back)
    content = (await api.get("/api/v1/services/web/config")).json()
    body = {
        "content": {k: v for k, v in content["content"].items() if k not in ("replicas", "min_ready")},
        "expected_version": content["version"],
    }
    body["content"]["config"] = {**body["content"]["config"], "command": ["srv"]}
    body["content"]["health"] = None
    assert_envelope(await api.put("/api/v1/services/web/config", json=body), 422)

    exported = (await api.get("/api/v1/system")).text
    assert "replicas: 3" in exported and "min_ready: 2" in exported and "{replica+9000}" in exported
    r = await api.put("/api/v1/system", content=exported, headers={"Content-Type": "application/yaml"})
    assert r.status_code in (200, 201), r.text
    again = (await api.get("/api/v1/system")).text
    assert again == exported


async def test_scale_1_3_1_recovers_a_replica_alone_and_aggregates(
    temporal_env, settings, db, api, app_resources, base_port, tmp_path
):
    client = temporal_env.client
    base = base_port(3)
    front_port = base_port(1)
    await create(api, ServiceSpec.model_validate(replicated("web", base, 1)))
    await create(api, standin("front", front_port, deps=["web"]))
    try:
        async with running_worker(client, settings, db):
            result = await run_init(client, settings.task_queue)
            assert result.status == InitStatus.SUCCEEDED, result.message
            assert result.components["front"].started_at >= result.components["web"].healthy_at
            assert listening(base) and not listening(base + 1)
            web = (await api.get("/api/v1/services/web")).json()
            assert (web["state"], web["ready"], web["replicas"]) == ("healthy", 1, 1)
            assert [(u["id"], u["state"]) for u in web["replica_list"]] == [("web/0", "healthy")]
            pid0 = web["replica_list"][0]["pid"]
            assert pid0 and processes_with(f"--port {base} ") == [pid0]
            assert open(f"/proc/{pid0}/environ", "rb").read().count(b"REPLICA=0\0") == 1

            # 1 → 3 with the CLI: new replicas in order, each ready before the next, ports from {replica}
            async with LiveServer(create_app(settings, resources=app_resources)) as live:
                env = {"WINDFLOW_TOKEN": mint_token(settings), "WINDFLOW_API_URL": live.http_url}
                out = await invoke(tmp_path, "scale", "web", "3", "--wait", "-o", "json", **env)
                assert out.exit_code == 0, out.output
                assert json.loads(out.stdout)["ready"] == 3
                scaled = await client.get_workflow_handle("scale/web", result_type=ScaleResult).result()
                assert scaled.ok and scaled.started == ["web/1", "web/2"], scaled
                listed = await invoke(tmp_path, "services", **env)
                assert "web ×3" in listed.output and "3/3 healthy" in listed.output, listed.output
                logs = await invoke(tmp_path, "logs", "web", "--replica", "2", "-n", "20", **env)
                assert logs.exit_code == 0 and f"{base + 2}" in logs.output, logs.output
                unnamed = await invoke(tmp_path, "logs", "web", **env)
                assert unnamed.exit_code != 0 and "replica=0…2" in unnamed.output, unnamed.output
            assert all(listening(base + k) for k in range(3))
            web = (await api.get("/api/v1/services/web")).json()
            units = {u["id"]: u for u in web["replica_list"]}
            assert list(units) == ["web/0", "web/1", "web/2"]
            assert units["web/0"]["pid"] == pid0  # untouched by the scale
            assert units["web/1"]["state_changed_at"] <= units["web/2"]["state_changed_at"]
            await eventually(lambda: _ready(api, "web", 3), timeout=20)

            # a replica killed is recovered on its own; the others keep their pids
            pids = {k: v["pid"] for k, v in units.items()}
            killed_at = (await api.get("/api/v1/services/web")).json()["state_changed_at"]
            os.kill(pids["web/1"], signal.SIGKILL)

            async def back():
                body = (await api.get("/api/v1/services/web")).json()
                now = {u["id"]: u for u in body["replica_list"]}
                fresh = now["web/1"]["pid"] not in (None, pids["web/1"]) and now["web/1"]["state"] == "healthy"
                return body if fresh and body["state"] == "healthy" and body["ready"] == 3 else None

            body = await eventually(back, timeout=60, interval=0.2)
            now = {u["id"]: u for u in body["replica_list"]}
            assert now["web/0"]["pid"] == pids["web/0"] and now["web/2"]["pid"] == pids["web/2"]
            assert now["web/1"]["restarts_total"] >= 1 and now["web/0"]["restarts_total"] == 0
            assert await healthy(base + 1)
            # meanwhile the service said so: fewer than 3 of 3 ready, not healthy
            events = await _events(db, "web")
            after = [e for e in events if e["since"] is None or e["since"] >= killed_at]
            assert any(e["state"] != "healthy" and "2/3" in (e.get("message") or "") for e in after), after

            # 3 → 1: the highest index first; ports closed, processes gone, rows removed
            r = await api.patch("/api/v1/services/web", json={"replicas": 1})
            assert r.status_code == 202, r.text
            down = client.get_workflow_handle("scale/web", result_type=ScaleResult)
            scaled = await down.result()
            assert scaled.ok and scaled.stopped == ["web/2", "web/1"], scaled
            history = await down.fetch_history()  # the scale-down replays on today's code (tests/test_replay.py)
            assert (
                await Replayer(workflows=[ServiceScale], data_converter=client.data_converter).replay_workflow(history)
            ).replay_failure is None
            if os.environ.get("WINDFLOW_RECORD_HISTORIES"):
                (Path(__file__).parent / "histories" / "scale_down.json").write_text(history.to_json())
            assert not listening(base + 1) and not listening(base + 2)
            assert not processes_with(f"--port {base + 1} ") and not processes_with(f"--port {base + 2} ")
            assert processes_with(f"--port {base} ") == [pid0]
            web = (await api.get("/api/v1/services/web")).json()
            assert [u["id"] for u in web["replica_list"]] == ["web/0"]
            assert (web["state"], web["ready"], web["replicas"]) == ("healthy", 1, 1)
            assert [r["id"] for r in (await api.get("/api/v1/services/web/replicas")).json()] == ["web/0"]
            assert (await api.get("/api/v1/services/front")).json()["state"] == "healthy"
    finally:
        await end_supervisors(client, "web/0", "web/1", "web/2", "front")


async def _ready(api, name: str, n: int) -> bool:
    body = (await api.get(f"/api/v1/services/{name}")).json()
    return body["state"] == "healthy" and body["ready"] == n


async def _events(db, service_id: str) -> list[dict]:
    async with db.read() as session:
        rows = (
            await session.execute(
                select(OutboxRow).where(OutboxRow.event_type == "SERVICE_STATUS_UPDATE").order_by(OutboxRow.id)
            )
        ).scalars()
        found = [r.payload.get("data", r.payload) for r in rows]
    return [e for e in found if e["service_id"] == service_id]


async def test_dependants_gate_on_min_ready(temporal_env, settings, db, api, base_port):
    """min_ready 1 of 2: the dependant starts once one replica is ready, while the other still boots."""
    client = temporal_env.client
    base = base_port(2)
    front_port = base_port(1)
    spec = replicated("pool", base, 2, min_ready=1, monitored=False)  # no supervision: the gate alone
    # replica 1 takes far longer to come up than replica 0: its boot time comes from {replica} as well
    boot = spec["config"]["command"].index("--boot")
    del spec["config"]["command"][boot : boot + 2]
    spec["config"]["env"]["STANDIN_BOOT"] = "{replica*60}"
    await create(api, ServiceSpec.model_validate(spec))
    await create(api, standin("front", front_port, deps=["pool"]))
    try:
        async with running_worker(client, settings, db):
            result = await run_init(client, settings.task_queue)
            assert result.status == InitStatus.SUCCEEDED, result.message
            assert await healthy(front_port) and await healthy(base) and not listening(base + 1)
            pool = (await api.get("/api/v1/services/pool")).json()
            assert pool["ready"] == 1 and pool["state"] == "healthy", pool  # 1 of min_ready 1
            assert {u["id"]: u["state"] for u in pool["replica_list"]} == {"pool/0": "healthy", "pool/1": "starting"}
            assert pool["state_detail"]["message"] == "1/2 healthy"
    finally:
        await end_supervisors(client, "pool/0", "pool/1", "front")
