"""Prometheus metrics: windflow's own, in a dedicated registry, plus the Temporal SDK's runtime metrics.

Where they are served
    * the API: ``GET /metrics`` — windflow's registry, the per-service series computed from the store at
      each scrape, and (under ``windflow up``) the Temporal SDK's metrics of the embedded worker.
    * ``windflow worker``: one endpoint, ``/metrics`` on ``WINDFLOW_WORKER_METRICS_PORT`` (by default the
      first free port of ``9464-9473``, so several workers share a host; one port such as ``9464``; ``0`` =
      any free port; ``off`` = none),
      serving windflow's worker-side counters and the Temporal SDK's metrics (``temporal_*``, from the SDK
      core, with ``_total`` counters and durations in seconds). The worker does not report the store-derived
      gauges (scrape them from the API: one source, no doubles).
    * ``WINDFLOW_METRICS_TOKEN`` set: both endpoints want ``Authorization: Bearer <token>``.

Per-service series (from the store, API only): ``windflow_service_up{service}`` (1 = healthy),
``windflow_service_status{service,status}`` (one series per status, the current one at 1),
``windflow_service_desired_running{service}``. Counters and histograms are incremented where things
happen (probes, restarts, recovery steps, initialization summaries, the outbox relay); in a process that
runs both (``windflow up``) they share this registry.

This module is import-safe: it creates metric objects, no I/O.
"""

from __future__ import annotations

import hmac
import logging
import re
import socket
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from windflow.domain.models import ServiceState

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from windflow.persistence.db import Database

log = logging.getLogger("windflow.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

#: the ``reason`` label of ``windflow_service_restarts_total`` (a closed set: free text would explode series)
RESTART_REASONS = ("exited", "unhealthy", "manual", "alert", "rollout", "other")

SERVICE_RESTARTS = Counter(
    "windflow_service_restarts",
    "Restarts windflow performed, per service and reason (exited, unhealthy, manual, alert, rollout, other)",
    ["service", "reason"],
    registry=REGISTRY,
)
RECOVERY_DURATION = Histogram(
    "windflow_recovery_duration_seconds",
    "Time from the start of a recovery attempt until the service is healthy",
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
INITIALIZATION_DURATION = Histogram(
    "windflow_initialization_duration_seconds",
    "Duration of finished system initializations, by outcome",
    ["status"],
    buckets=_DURATION_BUCKETS,
    registry=REGISTRY,
)
PROBE_DURATION = Histogram(
    "windflow_probe_duration_seconds",
    "Health probe duration, per service and probe kind",
    ["service", "probe"],
    buckets=_PROBE_BUCKETS,
    registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter(
    "windflow_events_published", "Events the outbox relay published to the bus", registry=REGISTRY
)
WEBHOOK_DELIVERIES = Counter(
    "windflow_webhook_deliveries",
    "Outgoing webhook delivery attempts, by outcome (delivered, retrying, failed)",
    ["outcome"],
    registry=REGISTRY,
)


def restart_reason(reason: str = "", source: str = "") -> str:
    """Map a restart's free-text reason and its source onto :data:`RESTART_REASONS`."""
    src, text = source.lower(), reason.lower()
    if src in {"api", "user", "manual", "operator", "cli", "control"} or text == "manual":
        return "manual"
    if "alert" in src or "hook" in src or "alert" in text:
        return "alert"
    if "rollout" in src or "rollout" in text:
        return "rollout"
    if re.search(r"exit|died|not running|stopped|killed|crash", text):
        return "exited"
    if re.search(r"unhealthy|liveness|probe|health|hung|timeout", text):
        return "unhealthy"
    return "other"


def count_restart(service: str, reason: str = "", source: str = "") -> None:
    """One restart of ``service`` (never raises: metrics must not break a restart)."""
    try:
        SERVICE_RESTARTS.labels(service=service, reason=restart_reason(reason, source)).inc()
    except Exception:  # pragma: no cover - defensive
        log.debug("restart metric failed", exc_info=True)


def observe_probe(kind: str, latency_ms: float, service: str | None = None) -> None:
    """Record one probe (never raises: metrics must not break a probe)."""
    try:
        PROBE_DURATION.labels(service=service or "", probe=str(kind)).observe(max(0.0, latency_ms) / 1000.0)
    except Exception:  # pragma: no cover - defensive
        log.debug("probe metric failed", exc_info=True)


@dataclass(frozen=True)
class ServiceFigures:
    id: str
    state: str
    desired_running: bool


class StoreCollector(Collector):
    """Gauges read from the store: set by :meth:`refresh` (async, before a scrape), reported by ``collect``.

    Nothing is reported before the first refresh, so a process that never refreshes (the worker) does not
    export stale zeros next to the API's figures."""

    def __init__(self) -> None:
        self.services: list[ServiceFigures] | None = None
        self.outbox_lag: int | None = None
        self.refreshed_at: float | None = None

    async def refresh(self, db: Database) -> None:
        from sqlalchemy import select

        from windflow.persistence.models import ServiceRow
        from windflow.persistence.repositories import OutboxRepository

        columns: list[Any] = [ServiceRow.id, ServiceRow.state, ServiceRow.monitored, ServiceRow.desired]
        async with db.read() as session:
            rows = (await session.execute(select(*columns).order_by(ServiceRow.id))).all()
            lag = await OutboxRepository().lag(session=session)
        figures = []
        for row in rows:
            state = str(row[1])
            if row[3] is not None:  # the registry's desired state
                wants = str(row[3]) == "running"
            else:  # no explicit act yet: a monitored service under supervision should run
                wants = bool(row[2]) and state not in (ServiceState.STOPPED, ServiceState.UNKNOWN)
            figures.append(ServiceFigures(id=str(row[0]), state=state, desired_running=wants))
        self.services = figures
        self.outbox_lag = lag
        self.refreshed_at = time.time()

    def collect(self) -> Iterable[Any]:
        if self.services is not None:
            counts: dict[str, int] = {}
            up = GaugeMetricFamily("windflow_service_up", "1 when the service is healthy, else 0", labels=["service"])
            status = GaugeMetricFamily(
                "windflow_service_status",
                "The service's status: the series of the current status is 1, the others 0",
                labels=["service", "status"],
            )
            desired = GaugeMetricFamily(
                "windflow_service_desired_running",
                "1 when the service should run (desired state), 0 when it should be stopped",
                labels=["service"],
            )
            states = [s.value for s in ServiceState]
            for svc in self.services:
                counts[svc.state] = counts.get(svc.state, 0) + 1
                up.add_metric([svc.id], 1 if svc.state == ServiceState.HEALTHY else 0)
                for name in states if svc.state in states else [*states, svc.state]:
                    status.add_metric([svc.id, name], 1 if name == svc.state else 0)
                desired.add_metric([svc.id], 1 if svc.desired_running else 0)
            gauge = GaugeMetricFamily("windflow_services", "Registered services by health state", labels=["state"])
            for state, count in sorted(counts.items()):
                gauge.add_metric([state], count)
            yield gauge
            yield up
            yield status
            yield desired
        if self.outbox_lag is not None:
            yield GaugeMetricFamily(
                "windflow_outbox_lag", "Events committed to the outbox, not yet published", value=self.outbox_lag
            )

    def describe(self) -> Iterable[Any]:
        return []


STORE = StoreCollector()
REGISTRY.register(STORE)

#: where this process's Temporal runtime serves the SDK's metrics (loopback), once :func:`temporal_runtime`
#: made one with metrics; both endpoints append them to windflow's own
_sdk_metrics_url: str | None = None


def sdk_metrics_text(timeout: float = 5.0) -> bytes:
    """The Temporal SDK's exposition of this process ("" when the runtime has no metrics)."""
    if _sdk_metrics_url is None:
        return b""
    try:
        with urllib.request.urlopen(_sdk_metrics_url, timeout=timeout) as resp:  # loopback only
            body: bytes = resp.read()
    except OSError as exc:
        log.warning("metrics: the Temporal SDK's metrics could not be read: %s", exc)
        return b""
    return body if body.endswith(b"\n") or not body else body + b"\n"


def exposition() -> bytes:
    """Everything this process exports, in the Prometheus text format."""
    return generate_latest(REGISTRY) + sdk_metrics_text()


def token_ok(expected: str | None, authorization: str | None) -> bool:
    """``Authorization: Bearer <token>`` matches (always true when no token is configured)."""
    if not expected:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


class MetricsEndpoint:
    """The API's ``GET /metrics`` (an ASGI app): refresh the store gauges, then serve the exposition.

    Added as a plain route, not a mount (a mount answers ``/metrics`` with a redirect to ``/metrics/``).
    With ``token``, a request without ``Authorization: Bearer <token>`` gets ``unauthorized()``."""

    def __init__(self, *, token: str | None = None, unauthorized: Callable[[], Any] | None = None) -> None:
        self._token = token
        self._unauthorized = unauthorized

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        import anyio
        from starlette.responses import PlainTextResponse, Response

        if self._token:
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
            if not token_ok(self._token, headers.get("authorization")):
                deny = (
                    self._unauthorized()
                    if self._unauthorized is not None
                    else PlainTextResponse("unauthorized", status_code=401)
                )
                deny.headers["WWW-Authenticate"] = 'Bearer realm="metrics"'
                await deny(scope, receive, send)
                return
        resources = getattr(getattr(scope.get("app"), "state", None), "resources", None)
        if resources is not None:
            try:
                await STORE.refresh(resources.db)
            except Exception as exc:  # the store is down: serve the rest, keep the last figures
                log.warning("metrics: store gauges not refreshed: %s", exc)
        body = await anyio.to_thread.run_sync(exposition)
        await Response(body, media_type=CONTENT_TYPE_LATEST)(scope, receive, send)


# ----------------------------------------------------------------- the worker's endpoint and the SDK runtime


def parse_port_spec(spec: str | int) -> range | None:
    """``"9464"`` -> that port; ``"0"`` -> any free port; ``"9464-9473"`` -> the first free one; ``"off"``
    or ``""`` -> ``None`` (no metrics endpoint). Raises ``ValueError`` for anything else."""
    text = str(spec).strip().lower()
    if text in {"", "off", "none", "false", "no"}:
        return None
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise ValueError("must be a port (0 = any free port), a range like 9464-9473, or off")
    first, last = int(low), int(high) if sep else int(low)
    if not 0 <= first <= last <= 65535 or (sep and first == 0):
        raise ValueError("must be a port in 0-65535 or a range first-last with 1 <= first <= last <= 65535")
    return range(first, last + 1)


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_runtimes: dict[bool, Runtime] = {}


def temporal_runtime(*, metrics: bool) -> Runtime:
    """This process's Temporal runtime (made once per kind, then reused): the SDK core's log lines go through
    Python logging, as records of ``temporalio.core`` (so they are JSON under ``WINDFLOW_LOG_FORMAT=json``,
    the core's fields as fields of their own); with ``metrics``, the core also serves Prometheus metrics on
    a loopback port that :func:`exposition` reads (``_total`` counters, ``_seconds`` durations, as
    ``promtool check metrics`` wants them)."""
    if metrics in _runtimes:
        return _runtimes[metrics]
    runtime = _make_runtime(metrics=metrics)
    _runtimes[metrics] = runtime
    return runtime


def default_runtime() -> Runtime:
    """The runtime a client gets when its caller names none: the one with metrics if this process made it."""
    return _runtimes.get(True) or temporal_runtime(metrics=False)


def _make_runtime(*, metrics: bool) -> Runtime:
    global _sdk_metrics_url
    from temporalio.runtime import (
        LogForwardingConfig,
        LoggingConfig,
        PrometheusConfig,
        Runtime,
        TelemetryConfig,
        TelemetryFilter,
    )

    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(
            logger=logging.getLogger("temporalio.core"),
            append_target_to_name=False,
            prepend_target_on_message=False,
            append_log_fields_to_message=False,
        ),
    )
    if not metrics:
        return Runtime(telemetry=TelemetryConfig(logging=logging_config))
    error: Exception | None = None
    for _ in range(5):  # a port picked free may be taken before the core binds it: pick again
        port = _free_loopback_port()
        try:
            runtime = Runtime(
                telemetry=TelemetryConfig(
                    logging=logging_config,
                    metrics=PrometheusConfig(
                        bind_address=f"127.0.0.1:{port}",
                        counters_total_suffix=True,
                        unit_suffix=True,
                        durations_as_seconds=True,
                    ),
                )
            )
        except Exception as exc:  # the core could not bind
            error = exc
            continue
        _sdk_metrics_url = f"http://127.0.0.1:{port}/metrics"
        return runtime
    raise RuntimeError(f"the Temporal SDK's metrics endpoint could not bind: {error}")


class MetricsPortsTaken(OSError):
    """Every port the worker's metrics endpoint may use is taken."""


def serve_metrics(host: str, ports: range, *, token: str | None = None) -> Any:
    """The worker's ``/metrics`` (windflow's registry and the SDK's metrics) on the first free port of
    ``ports`` (``range(0, 1)``: any free port), in a daemon thread. Returns the server; ``server.server_port``
    is the port it got. Raises ``OSError`` when every port of the range is taken."""
    import threading
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client.exposition import ThreadingWSGIServer

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        if environ.get("PATH_INFO", "/") not in ("/metrics", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found; metrics are at /metrics\n"]
        if not token_ok(token, environ.get("HTTP_AUTHORIZATION")):
            start_response(
                "401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')]
            )
            return [b"unauthorized: send Authorization: Bearer <WINDFLOW_METRICS_TOKEN>\n"]
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [exposition()]

    class _Quiet(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # the stdlib's name
            pass

    last: OSError | None = None
    for port in ports:
        try:
            server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_Quiet)
        except OSError as exc:
            last = exc
            continue
        threading.Thread(target=server.serve_forever, name="windflow-metrics", daemon=True).start()
        return server
    span = str(ports.start) if len(ports) == 1 else f"{ports.start}-{ports.stop - 1}"
    raise MetricsPortsTaken(
        f"WINDFLOW_WORKER_METRICS_PORT: no free port in {span} on {host} ({last}); give a "
        "wider range, 0 (any free port) or off"
    )
