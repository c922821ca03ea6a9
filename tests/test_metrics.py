"""Prometheus metrics after a real recovery: the API's /metrics and the worker's two metrics ports."""

from __future__ import annotations

import os
import signal
import uuid

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
from tests.servers import free_port
from windflow.metrics import sdk_runtime, serve_windflow_metrics
from windflow.temporal_client import connect

pytestmark = pytest.mark.asyncio(loop_scope="session")


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
    sdk_port, windflow_port = free_port(), free_port()
    # what `windflow worker` does with WINDFLOW_WORKER_METRICS_PORT: SDK metrics via the client's runtime,
    # windflow's registry on its own port
    client = await connect(wsettings, runtime=sdk_runtime("127.0.0.1", sdk_port))
    server = serve_windflow_metrics("127.0.0.1", windflow_port)
    try:
        spec = standin(service, port, boot=0.2)
        await register(db, spec)
        pid = await start_service(wsettings, spec)
        await eventually(lambda: healthy(port), timeout=10)
        async with running_worker(client, wsettings, db):
            handle = await supervise(client, task_queue, service)
            await eventually(lambda: watching(handle), timeout=15)
            os.kill(pid, signal.SIGKILL)
            await eventually(lambda: watching(handle, restarts=1), timeout=20)
            await handle.terminate("test over")

            # the API's /metrics: public, no token
            async def scraped() -> dict | None:
                r = await anon.get("/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
                found = samples(r.text)
                return found if value(found, "windflow_services", state="healthy") == 1 else None

            api = await eventually(scraped, timeout=10)
            async with httpx2.AsyncClient(timeout=5) as http:
                worker_text = (await http.get(f"http://127.0.0.1:{windflow_port}/metrics")).text
                sdk_text = (await http.get(f"http://127.0.0.1:{sdk_port}/metrics")).text
    finally:
        server.shutdown()

    assert value(api, "windflow_restarts_total", service=service) == 1
    assert value(api, "windflow_recovery_duration_seconds_count") >= 1
    assert value(api, "windflow_recovery_duration_seconds_sum") > 0
    assert value(api, "windflow_probe_latency_seconds_count", kind="http") >= 1
    assert value(api, "windflow_probe_latency_seconds_bucket", kind="http", le="+Inf") >= 1
    assert value(api, "windflow_outbox_lag") is not None
    assert value(api, "windflow_services", state="healthy") == 1
    assert "windflow_events_published_total" in {name for name, _ in api}

    # the worker's windflow port: the same counters; the store gauges are the API's alone
    worker = samples(worker_text)
    assert value(worker, "windflow_restarts_total", service=service) == 1
    assert value(worker, "windflow_recovery_duration_seconds_count") >= 1
    # the Temporal SDK's own metrics (from the SDK core) on the other port
    sdk_names = {family.name for family in text_string_to_metric_families(sdk_text)}
    assert any(n.startswith("temporal_") for n in sdk_names), sdk_names
    assert {"temporal_activity_execution_latency", "temporal_workflow_task_execution_latency"} & sdk_names, sdk_names


async def test_metrics_route_is_public_and_aggregate(anon):
    r = await anon.get("/metrics")
    assert r.status_code == 200
    names = {f.name for f in text_string_to_metric_families(r.text)}
    assert {"windflow_services", "windflow_outbox_lag", "windflow_restarts", "windflow_probe_latency_seconds",
            "windflow_recovery_duration_seconds", "windflow_initialization_duration_seconds",
            "windflow_events_published"} <= names
    assert (await anon.post("/metrics")).status_code == 405
