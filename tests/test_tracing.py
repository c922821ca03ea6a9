"""One trace from the API request to the driver: HTTP → StartWorkflow → workflow run → activities → driver, probe.

A real dev server, the real app (FastAPI instrumented as `create_app` does it) and an in-process worker whose
client comes from `windflow.temporal.client.connect`, as in `windflow worker`. Spans go to an in-memory
exporter on the process's tracer provider.
"""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.helpers import initialize_through_api
from windflow import tracing
from windflow.settings import Settings

pytestmark = pytest.mark.asyncio(loop_scope="session")


class _Capture(SpanProcessor):
    """Hands finished spans to the exporter while this module runs (a process has one tracer provider)."""

    def __init__(self, exporter: InMemorySpanExporter) -> None:
        self.exporter = exporter
        self.active = True

    def on_end(self, span: ReadableSpan) -> None:
        if self.active:
            self.exporter.export([span])


@pytest.fixture(scope="module")
def spans():
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        trace.set_tracer_provider(TracerProvider())
        provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    exporter = InMemorySpanExporter()
    capture = _Capture(exporter)
    provider.add_span_processor(capture)
    yield exporter
    capture.active = False
    exporter.clear()


@pytest.fixture
def db(sqlite_db):
    return sqlite_db


@pytest.fixture
def settings(wsettings: Settings) -> Settings:
    """The API and the worker share the session's dev server, this test's queue and its SQLite store."""
    return wsettings


async def test_one_trace_links_http_request_workflow_activities_and_driver(
    spans, temporal_env, settings, db, api, ports
):
    await initialize_through_api(api, settings, db, ports(), "trace-me-1")

    finished = list(spans.get_finished_spans())
    http = [
        s
        for s in finished
        if s.kind == trace.SpanKind.SERVER and (s.attributes or {}).get("windflow.request_id") == "trace-me-1"
    ]
    assert len(http) == 1, [s.name for s in finished]
    trace_id = http[0].context.trace_id
    mine = [s for s in finished if s.context.trace_id == trace_id]
    names = {s.name for s in mine}
    by_name = {s.name: s for s in mine}

    start = by_name["StartWorkflow:SystemInitialization"]
    assert start.parent is not None and start.parent.span_id == http[0].context.span_id
    assert "RunWorkflow:SystemInitialization" in names
    for activity in ("validate_system", "record_initialization"):
        assert f"StartActivity:{activity}" in names, names
        assert f"RunActivity:{activity}" in names, names
    activity_spans = {s.context.span_id: s.name for s in mine if s.name.startswith("RunActivity:")}
    # the driver and probe calls are children of the activity that brought the service up
    driver = by_name["driver.start"]
    assert driver.parent is not None and activity_spans.get(driver.parent.span_id) in (
        "RunActivity:bring_up",
        "RunActivity:start_service",
    )
    assert (driver.attributes or {})["windflow.service"] == "web"
    probes = [s for s in mine if s.name == "probe.http"]
    assert probes and all(
        p.parent is not None
        and activity_spans.get(p.parent.span_id) in ("RunActivity:bring_up", "RunActivity:wait_healthy")
        for p in probes
    )
    assert (probes[-1].attributes or {})["windflow.healthy"] is True


async def test_no_exporter_unless_the_otel_environment_asks(monkeypatch):
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert tracing.exporter_kinds() == []
    assert tracing.configure_tracing("windflow-test") is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317")
    assert tracing.exporter_kinds() == ["otlp"]
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.exporter_kinds() == []
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert tracing.exporter_kinds() == []
