"""Prometheus metrics: the API's /metrics and the worker's one metrics endpoint, checked by promtool."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import unavailable
from tests.helpers import (
    eventually,
    healthy,
    register,
    running_worker,
    standin,
    start_service,
    supervise,
    watching,
    worker_settings,
)
from windflow.metrics import serve_metrics, temporal_runtime
from windflow.temporal.client import connect

pytestmark = pytest.mark.asyncio(loop_scope="session")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool (Debian package prometheus; scripts/test unpacks it)")
    return found


def promtool_check_metrics(text: str) -> None:
    proc = subprocess.run([promtool(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    problems = (proc.stdout + proc.stderr).decode()
    assert proc.returncode == 0 and not problems.strip(), problems


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """``{(sample name, labels): value}`` of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(found: dict, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset(labels.items())))


async def test_metrics_after_a_real_recovery(temporal_env, tmp_path, db, task_queue, anon, ports):
    service = f"metrics-web-{uuid.uuid4().hex[:8]}"
    port = ports()
    wsettings = worker_settings(tmp_path, task_queue, temporal_env, db)
    # what `windflow worker` does with WINDFLOW_WORKER_METRICS_PORT=0: SDK metrics via the client's runtime,
    # served with windflow's registry on one endpoint, on any free port
    client = await connect(wsettings, runtime=temporal_runtime(metrics=True))
    server = serve_metrics("127.0.0.1", range(0, 1))
    windflow_port = server.server_port
    try:
        spec = standin(service, port, boot=0.2)
        await register(db, spec)
        pid = await start_service(wsettings, spec)
        await eventually(lambda: healthy(port), timeout=10)
        async with running_worker(client, wsettings, db):
            handle = await supervise(client, task_queue, service, db)
            await eventually(lambda: watching(handle), timeout=15)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching(handle, restarts=1), timeout=20)
            await handle.terminate()

            # the API's /metrics: public, no token
            async def scraped() -> dict | None:
                r = await anon.get("/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                found = samples(r.text)
                if value(found, "windflow_services", state="healthy") == 1:
                    return found, r.text
                return None

            api, api_text = await eventually(scraped, timeout=10)
            async with httpx2.AsyncClient(timeout=5) as http:
                worker_text = (await http.get(f"http://127.0.0.1:{windflow_port}/metrics")).text
    finally:
        server.shutdown()

    assert value(api, "windflow_service_restarts_total", service=service, reason="exited") == 1
    assert value(api, "windflow_recovery_duration_seconds_count") >= 1
    assert value(api, "windflow_recovery_duration_seconds_sum") > 0
    assert value(api, "windflow_probe_duration_seconds_count", service=service, probe="http") >= 1
    assert value(api, "windflow_probe_duration_seconds_bucket", service=service, probe="http", le="+Inf") >= 1
    assert value(api, "windflow_outbox_lag") is not None
    assert value(api, "windflow_services", state="healthy") == 1
    assert value(api, "windflow_service_up", service=service) == 1
    assert value(api, "windflow_service_status", service=service, status="healthy") == 1
    assert value(api, "windflow_service_status", service=service, status="gave_up") == 0
    assert value(api, "windflow_service_desired_running", service=service) == 1
    assert "windflow_events_published_total" in {name for name, _ in api}

    # the worker's one endpoint: the same counters (the store gauges are the API's alone) and the Temporal
    # SDK's own metrics (from the SDK core), counters with _total and durations in seconds
    worker = samples(worker_text)
    assert value(worker, "windflow_service_restarts_total", service=service, reason="exited") == 1
    assert value(worker, "windflow_recovery_duration_seconds_count") >= 1
    sdk_names = {family.name for family in text_string_to_metric_families(worker_text)}
    assert any(n.startswith("temporal_") for n in sdk_names), sdk_names
    assert "temporal_activity_execution_latency_seconds" in sdk_names, sdk_names
    assert "temporal_request" in sdk_names, sdk_names  # a counter: its samples are temporal_request_total
    # every series the shipped alerts and Grafana dashboard query is one these endpoints export
    from tests.test_monitoring_deploy import dashboard_and_alert_metric_names, metric_names

    # (the SDK's failure counters appear with the first failed activity or workflow, which this run has not)
    exported = metric_names(api_text) | metric_names(worker_text)
    exported |= {"temporal_activity_execution_failed", "temporal_workflow_failed"}
    assert dashboard_and_alert_metric_names() <= exported, dashboard_and_alert_metric_names() - exported
    # Prometheus' own linter finds nothing in either exposition
    promtool_check_metrics(api_text)
    promtool_check_metrics(worker_text)


async def test_metrics_route_is_public_and_aggregate(anon):
    r = await anon.get("/metrics")
    assert r.status_code == 200
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {
        "windflow_services",
        "windflow_outbox_lag",
        "windflow_service_restarts",
        "windflow_probe_duration_seconds",
        "windflow_recovery_duration_seconds",
        "windflow_initialization_duration_seconds",
        "windflow_events_published",
    } <= names
    assert (await anon.post("/metrics")).status_code == 405
