"""Per-service series, bearer auth on /metrics, metrics ports for several workers per host, and the worker's
log lines (the Temporal SDK core's included) as JSON: real `windflow worker` processes, real HTTP, promtool."""

from __future__ import annotations

import json
import re
import socket
import uuid
from datetime import timedelta

import httpx2
import pytest
from pydantic import SecretStr
from sqlalchemy import update

from tests.helpers import eventually, kill_process_group, register, standin, worker_process, worker_settings
from tests.test_metrics import promtool_check_metrics, samples, value
from windflow.metrics import parse_port_spec, serve_metrics
from windflow.persistence.models import ServiceRow
from windflow.settings import SettingsError, load_settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def set_state(db, service: str, state: str) -> None:
    async with db.write() as session:
        await session.execute(update(ServiceRow).where(ServiceRow.id == service).values(state=state))


async def test_per_service_series_from_the_store(db, anon, ports):
    """One series set per service: up, status (the current one 1, every other 0), desired running."""
    await register(db, standin("pg", ports()), standin("api", ports()), standin("batch", ports()))
    await set_state(db, "pg", "healthy")
    await set_state(db, "api", "gave_up")
    await set_state(db, "batch", "stopped")
    r = await anon.get("/metrics")
    assert r.status_code == 200
    found = samples(r.text)
    assert value(found, "windflow_service_up", service="pg") == 1
    assert value(found, "windflow_service_up", service="api") == 0
    assert value(found, "windflow_service_up", service="batch") == 0
    for service, current in (("pg", "healthy"), ("api", "gave_up"), ("batch", "stopped")):
        statuses = {
            dict(labels)["status"]: v
            for (name, labels), v in found.items()
            if name == "windflow_service_status" and dict(labels)["service"] == service
        }
        assert statuses[current] == 1
        assert sum(statuses.values()) == 1, statuses  # exactly one status at 1
        assert {"healthy", "unhealthy", "recovering", "backing_off", "blocked", "gave_up", "stopped"} <= set(statuses)
    assert value(found, "windflow_service_desired_running", service="pg") == 1
    assert value(found, "windflow_service_desired_running", service="api") == 1  # gave up, still wanted
    assert value(found, "windflow_service_desired_running", service="batch") == 0  # stopped on purpose
    assert value(found, "windflow_services", state="gave_up") == 1
    promtool_check_metrics(r.text)


async def test_bearer_token_on_the_api_metrics(settings, db):
    from windflow.api.app import build_resources, create_app

    token = "m" * 40
    secured = settings.model_copy(update={"metrics_token": SecretStr(token)})
    resources = await build_resources(secured, migrate=False)
    await resources.db.dispose()
    resources.db = db
    app = create_app(secured, resources=resources)
    try:
        async with app.router.lifespan_context(app):
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://windflow.test") as http:
                denied = await http.get("/metrics")
                wrong = await http.get("/metrics", headers={"Authorization": "Bearer " + "x" * 40})
                ok = await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    finally:
        await resources.bus.close()
    for r in (denied, wrong):
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.json()["error"]
        assert body["code"] == "unauthorized" and "WINDFLOW_METRICS_TOKEN" in body["message"] and body["timestamp"]
    assert ok.status_code == 200 and "windflow_outbox_lag" in ok.text


async def test_bearer_token_on_the_worker_metrics():
    server = serve_metrics("127.0.0.1", range(0, 1), token="w" * 40)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        async with httpx2.AsyncClient(timeout=5) as http:
            denied = await http.get(url)
            ok = await http.get(url, headers={"Authorization": "Bearer " + "w" * 40})
    finally:
        server.shutdown()
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert ok.status_code == 200 and "windflow_service_restarts" in ok.text


async def test_port_specs():
    assert parse_port_spec("9464") == range(9464, 9465)
    assert parse_port_spec(0) == range(0, 1)
    assert parse_port_spec("9464-9473") == range(9464, 9474)
    assert parse_port_spec("off") is None
    for bad in ("abc", "9464-", "9470-9464", "70000", "0-10", "-1"):
        with pytest.raises(ValueError):
            parse_port_spec(bad)
    with pytest.raises(SettingsError, match="WINDFLOW_WORKER_METRICS_PORT"):
        load_settings(worker_metrics_port="lots", _env_file=None)
    assert load_settings(worker_metrics_port="9500-9509", _env_file=None).worker_metrics_port == "9500-9509"


def free_range(size: int) -> tuple[int, int]:
    """``size`` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            first = s.getsockname()[1]
        if first + size > 65535:
            continue
        held = []
        try:
            for port in range(first, first + size):
                sock = socket.socket()
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return first, first + size - 1
        except OSError:
            continue
        finally:
            for sock in held:
                sock.close()
    raise RuntimeError("no run of free ports")


async def test_metrics_servers_share_a_range():
    """Two workers given the same range each take a free port of it; a full range is an error naming it."""
    first, last = free_range(2)
    one = serve_metrics("127.0.0.1", range(first, last + 1))
    two = serve_metrics("127.0.0.1", range(first, last + 1))
    try:
        assert {one.server_port, two.server_port} == {first, last}
        with pytest.raises(OSError, match=f"no free port in {first}-{last}"):
            serve_metrics("127.0.0.1", range(first, last + 1))
    finally:
        one.shutdown()
        two.shutdown()


def metrics_port_of(log_text: str) -> int | None:
    for line in log_text.splitlines():
        m = re.search(r"metrics on http://[^:]+:(\d+)/metrics", line)
        if m:
            return int(m.group(1))
    return None


async def test_two_workers_on_one_host_json_logs_and_promtool(tmp_path, sqlite_db, task_queue, ports):
    """Two real `windflow worker` processes with the same metrics range: both run and serve promtool-clean
    metrics; every line they log is JSON, the Temporal SDK core's retry warnings included (the Temporal server
    goes away under them)."""
    from temporalio.testing import WorkflowEnvironment

    from tests.conftest import TEMPORAL_BIN
    from windflow.temporal.client import DATA_CONVERTER
    from windflow.temporal.search_attributes import ALL_KEYS

    env = await WorkflowEnvironment.start_local(
        namespace="default",
        data_converter=DATA_CONVERTER,
        search_attributes=ALL_KEYS,
        dev_server_existing_path=TEMPORAL_BIN,
        dev_server_startup_timeout=timedelta(seconds=60),
    )
    first, last = free_range(3)
    db = sqlite_db
    wsettings = worker_settings(tmp_path, task_queue, env, db)
    await register(db, standin(f"m-{uuid.uuid4().hex[:6]}", ports(), monitored=False))
    procs = []
    try:
        for name in ("a", "b"):
            procs.append(
                worker_process(
                    wsettings,
                    tmp_path,
                    f"worker-{name}",
                    WINDFLOW_LOG_FORMAT="json",
                    WINDFLOW_WORKER_METRICS_PORT=f"{first}-{last}",
                )
            )
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]

        async def both_ports() -> list[int] | None:
            for proc in procs:
                assert proc.poll() is None, [log.read_text()[-3000:] for log in logs]
            found = [metrics_port_of(log.read_text()) for log in logs]
            return found if all(found) else None  # type: ignore[return-value]

        got = await eventually(both_ports, timeout=60, interval=0.2)
        assert len(set(got)) == 2 and all(first <= p <= last for p in got), got
        async with httpx2.AsyncClient(timeout=10) as http:
            for port in got:

                async def scraped(port: int = port) -> str | None:
                    text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                    return text if "temporal_" in text else None

                text = await eventually(scraped, timeout=30, interval=0.2)
                assert "windflow_service_restarts" in text
                promtool_check_metrics(text)

        await env.shutdown()  # the Temporal server goes away: the SDK core retries and warns
        env = None

        def core_lines() -> list[dict]:
            out = []
            for log in logs:
                for line in log.read_text().splitlines():
                    if line.strip():
                        try:
                            record = json.loads(line)
                        except ValueError:
                            raise AssertionError(f"not a JSON line in {log.name}: {line!r}") from None
                        if record.get("logger") == "temporalio.core":
                            out.append(record)
            return out

        core = await eventually(lambda: core_lines() or None, timeout=60, interval=0.5)
        assert any(r["level"] == "warning" and r.get("sdk_target") for r in core), core[:3]
        core_lines()  # every line, written until now, parses
    finally:
        for proc in procs:
            kill_process_group(proc)
        if env is not None:
            await env.shutdown()


async def test_a_worker_whose_metrics_ports_are_taken_says_so(tmp_path, sqlite_db, task_queue, temporal_env):
    """The second worker on a host with a fixed, taken port stops with one line naming the setting (exit 2)."""
    import asyncio

    first, last = free_range(2)
    held = [socket.socket(), socket.socket()]
    try:
        for sock, port in zip(held, (first, last), strict=True):
            sock.bind(("127.0.0.1", port))
            sock.listen()
        proc = worker_process(
            worker_settings(tmp_path, task_queue, temporal_env, sqlite_db),
            tmp_path,
            "worker-x",
            WINDFLOW_LOG_FORMAT="json",
            WINDFLOW_WORKER_METRICS_PORT=f"{first}-{last}",
        )
        try:
            code = await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
        finally:
            kill_process_group(proc)
    finally:
        for sock in held:
            sock.close()
    out = (tmp_path / "worker-x.log").read_text()
    assert code == 2, out
    assert f"WINDFLOW_WORKER_METRICS_PORT: no free port in {first}-{last}" in out and "Traceback" not in out, out
    from windflow.settings import Settings

    assert Settings(_env_file=None).worker_metrics_port == "9464-9473"  # the default: several workers per host
