"""OpenTelemetry tracing across API → Temporal client → workflow → activities → drivers and probes.

The exporter follows the standard ``OTEL_*`` environment variables:

- nothing set (the default): no SDK tracer provider is installed; every span is OpenTelemetry's no-op span,
  so instrumentation costs next to nothing;
- ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_TRACES_EXPORTER=otlp``:
  batched OTLP export, over gRPC or HTTP as ``OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`` says (``grpc`` or
  ``http/protobuf``, the default);
- ``OTEL_TRACES_EXPORTER=console``: spans printed to stdout (debugging); ``none`` or ``OTEL_SDK_DISABLED=true``:
  off, whatever else is set.

``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES`` and the exporter's own variables (headers, timeout,
certificates, ``OTEL_BSP_*``) are read by the OpenTelemetry SDK itself.

Besides spans, one small Temporal interceptor carries the API's request id (``X-Request-Id``) from the
client call that starts a workflow to every activity of that workflow, where it lands in the log context
(see :mod:`windflow.logs`), whether or not traces are exported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

import opentelemetry.trace as otel_trace
import temporalio.activity
import temporalio.client
import temporalio.converter
import temporalio.worker
import temporalio.workflow
from temporalio.api.common.v1 import Payload

from windflow.logs import REQUEST_ID

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider

    from windflow.domain.models import DriverKind, HealthSpec, ProbeKind, ServiceSpec
    from windflow.domain.results import DriverResult, ProbeResult, ServiceStatus
    from windflow.drivers.base import DriverRegistry, ServiceDriver
    from windflow.probes.base import HealthProbe, ProbeRegistry

log = logging.getLogger("windflow.tracing")

TRACER_NAME = "windflow"
#: Temporal header that carries the API request id into workflows and activities
REQUEST_ID_HEADER = "windflow-request-id"
#: API paths without spans: probes of windflow itself, metrics scrapes and the long-lived WebSocket
EXCLUDED_URLS = "/healthz,/readyz,/metrics,/api/v1/ws"

_provider: TracerProvider | None = None


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def exporter_kinds() -> list[str]:
    """Span exporters the ``OTEL_*`` environment asks for (``[]`` = tracing off)."""
    if _env("OTEL_SDK_DISABLED").lower() == "true":
        return []
    named = [k.strip().lower() for k in _env("OTEL_TRACES_EXPORTER").split(",") if k.strip()]
    if named:
        return [] if "none" in named else named
    if _env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


def _otlp_exporter() -> Any:
    protocol = (
        _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol in ("http/protobuf", "http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported protocol {protocol!r} (grpc or http/protobuf)")


def configure_tracing(service_name: str) -> TracerProvider | None:
    """Install the global tracer provider the ``OTEL_*`` environment asks for; ``None`` when tracing is off.

    Called once per process by the composition roots (``windflow api``, ``worker``, ``up``).
    ``service_name`` is the default for ``OTEL_SERVICE_NAME``.
    """
    global _provider
    kinds = exporter_kinds()
    if not kinds:
        return None
    if _provider is not None:
        return _provider
    from opentelemetry.sdk.resources import OTEL_SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    resource = Resource.create({} if _env(OTEL_SERVICE_NAME) else {"service.name": service_name})
    provider = TracerProvider(resource=resource)
    for kind in kinds:
        if kind == "otlp":
            provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
        elif kind == "console":
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {kind!r} (otlp, console or none)")
    otel_trace.set_tracer_provider(provider)
    _provider = provider
    log.info("tracing: exporting spans (%s)", ", ".join(kinds))
    return provider


def shutdown_tracing() -> None:
    """Flush buffered spans (end of process)."""
    if _provider is not None:
        _provider.shutdown()


def tracer() -> otel_trace.Tracer:
    return otel_trace.get_tracer(TRACER_NAME)


def tracing_installed() -> bool:
    """Whether a tracer provider that records spans is installed (by :func:`configure_tracing` or by the host)."""
    return not isinstance(
        otel_trace.get_tracer_provider(), (otel_trace.ProxyTracerProvider, otel_trace.NoOpTracerProvider)
    )


def instrument_app(app: FastAPI) -> None:
    """HTTP server spans for the API, when tracing is installed (the composition roots configure it before they
    build the app). Without a provider every span would be a no-op, and the middleware building them would
    still cost about half a millisecond per request."""
    if not tracing_installed():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, excluded_urls=EXCLUDED_URLS, exclude_spans=["receive", "send"])


def temporal_interceptors() -> list[Any]:
    """Interceptors of every windflow Temporal client; workers built on that client inherit them.

    Spans (client calls, workflows, activities) only when tracing is installed: the composition roots
    configure it before they connect. Without a provider every span is a no-op, and building them and their
    context headers cost about 0.7 ms of CPU per workflow start (a third of the API's own work for a start).
    The request id travels either way."""
    if not tracing_installed():
        return [RequestIdInterceptor()]
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(), RequestIdInterceptor()]


# --------------------------------------------------------------------------- request id propagation

_converter = temporalio.converter.PayloadConverter.default


def _with_request_id(headers: Mapping[str, Payload], request_id: str | None) -> Mapping[str, Payload]:
    if not request_id or REQUEST_ID_HEADER in headers:
        return headers
    return {**headers, REQUEST_ID_HEADER: _converter.to_payloads([request_id])[0]}


def _request_id_of(headers: Mapping[str, Payload]) -> str | None:
    payload = headers.get(REQUEST_ID_HEADER)
    if payload is None:
        return None
    try:
        value = _converter.from_payloads([payload])[0]
    except Exception:  # a header written by something else: ignore it rather than fail the task
        return None
    return value if isinstance(value, str) else None


class RequestIdInterceptor(temporalio.client.Interceptor, temporalio.worker.Interceptor):
    """Client: stamp the current request id on workflow starts. Worker: hand it on to activities."""

    def intercept_client(self, next: temporalio.client.OutboundInterceptor) -> temporalio.client.OutboundInterceptor:
        return _ClientOutbound(next)

    def intercept_activity(
        self, next: temporalio.worker.ActivityInboundInterceptor
    ) -> temporalio.worker.ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self,
        input: temporalio.worker.WorkflowInterceptorClassInput,  # noqa: ARG002 (the SDK's signature)
    ) -> type[temporalio.worker.WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _ClientOutbound(temporalio.client.OutboundInterceptor):
    async def start_workflow(self, input: temporalio.client.StartWorkflowInput) -> Any:
        input.headers = _with_request_id(input.headers, REQUEST_ID.get())
        return await super().start_workflow(input)


class _ActivityInbound(temporalio.worker.ActivityInboundInterceptor):
    async def execute_activity(self, input: temporalio.worker.ExecuteActivityInput) -> Any:
        request_id = _request_id_of(input.headers)
        if request_id is None:
            return await super().execute_activity(input)
        token = REQUEST_ID.set(request_id)
        try:
            return await super().execute_activity(input)
        finally:
            REQUEST_ID.reset(token)


class _WorkflowInbound(temporalio.worker.WorkflowInboundInterceptor):
    """Remembers the request id a workflow was started with; its activities and children carry it on."""

    request_id: str | None = None

    def init(self, outbound: temporalio.worker.WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound, self))

    async def execute_workflow(self, input: temporalio.worker.ExecuteWorkflowInput) -> Any:
        self.request_id = _request_id_of(input.headers)
        return await super().execute_workflow(input)


class _WorkflowOutbound(temporalio.worker.WorkflowOutboundInterceptor):
    def __init__(self, next: temporalio.worker.WorkflowOutboundInterceptor, root: _WorkflowInbound) -> None:
        super().__init__(next)
        self.root = root

    def start_activity(self, input: temporalio.worker.StartActivityInput) -> temporalio.workflow.ActivityHandle[Any]:
        input.headers = _with_request_id(input.headers, self.root.request_id)
        return super().start_activity(input)

    def start_local_activity(
        self, input: temporalio.worker.StartLocalActivityInput
    ) -> temporalio.workflow.ActivityHandle[Any]:
        input.headers = _with_request_id(input.headers, self.root.request_id)
        return super().start_local_activity(input)

    async def start_child_workflow(
        self, input: temporalio.worker.StartChildWorkflowInput
    ) -> temporalio.workflow.ChildWorkflowHandle[Any, Any]:
        input.headers = _with_request_id(input.headers, self.root.request_id)
        return await super().start_child_workflow(input)

    def continue_as_new(self, input: temporalio.worker.ContinueAsNewInput) -> NoReturn:
        input.headers = _with_request_id(input.headers, self.root.request_id)
        super().continue_as_new(input)


# --------------------------------------------------------------------------- driver and probe spans


def _name(kind: Any) -> str:
    return str(getattr(kind, "value", kind))


class TracedDriver:
    """A driver whose start, stop and restart run in spans (status and exit watching are not traced)."""

    def __init__(self, inner: ServiceDriver) -> None:
        self._inner = inner
        self.kind: DriverKind = inner.kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def _span(self, action: str, service: ServiceSpec, call: Any) -> DriverResult:
        with tracer().start_as_current_span(
            f"driver.{action}",
            attributes={
                "windflow.service": service.id,
                "windflow.driver": _name(self.kind),
                **({"windflow.host": service.host} if service.host else {}),
            },
        ) as span:
            result = await call
            span.set_attribute("windflow.changed", bool(result.changed))
            if not result.ok:
                span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, result.message[:200]))
            return result

    async def start(self, service: ServiceSpec) -> DriverResult:
        return await self._span("start", service, self._inner.start(service))

    async def stop(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        return await self._span("stop", service, self._inner.stop(service, grace=grace))

    async def restart(self, service: ServiceSpec, *, grace: float | None = None) -> DriverResult:
        return await self._span("restart", service, self._inner.restart(service, grace=grace))

    async def status(self, service: ServiceSpec) -> ServiceStatus:
        return await self._inner.status(service)

    async def wait_exit(self, service: ServiceSpec) -> Any:
        return await self._inner.wait_exit(service)


class TracedProbe:
    def __init__(self, inner: HealthProbe) -> None:
        self._inner = inner
        self.kind: ProbeKind = inner.kind

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def check(self, spec: HealthSpec) -> ProbeResult:
        kind = _name(spec.kind)
        with tracer().start_as_current_span(f"probe.{kind}", attributes={"windflow.probe": kind}) as span:
            result = await self._inner.check(spec)
            span.set_attribute("windflow.healthy", bool(result.healthy))
            if not result.healthy:
                span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, result.message[:200]))
            return result


def traced_drivers(registry: DriverRegistry) -> DriverRegistry:
    from windflow.drivers.base import DriverRegistry

    return DriverRegistry({kind: TracedDriver(registry.get(kind)) for kind in registry.kinds()})


def traced_probes(registry: ProbeRegistry) -> ProbeRegistry:
    from windflow.probes.base import ProbeRegistry

    return ProbeRegistry({kind: TracedProbe(registry.get(kind)) for kind in registry.kinds()})
