"""Prometheus metrics: windflow's own, in a dedicated registry, plus the Temporal SDK's runtime metrics.

Where they are served
    * the API: ``GET /metrics`` (public, aggregate figures only) — windflow's registry. The store-derived
      gauges (``windflow_services``, ``windflow_outbox_lag``) are computed from the database at each scrape.
    * ``windflow worker`` with ``WINDFLOW_WORKER_METRICS_PORT=P`` (default 9464, 0 = off): the Temporal SDK's
      metrics (``temporal_*``, from the SDK core) on port ``P``, windflow's registry on port ``P + 1``. The
      worker does not report the store-derived gauges (scrape them from the API: one source, no doubles).

Counters and histograms are incremented where things happen (probes, recovery steps, initialization
summaries, the outbox relay); in a process that runs both (``windflow up``) they share this registry.
This module is import-safe: it creates metric objects, no I/O.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from temporalio.runtime import Runtime

    from windflow.persistence.db import Database

log = logging.getLogger("windflow.metrics")

REGISTRY = CollectorRegistry(auto_describe=True)

_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
_PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

RESTARTS = Counter("windflow_restarts", "Restarts windflow performed, per service", ["service"], registry=REGISTRY)
RECOVERY_DURATION = Histogram(
    "windflow_recovery_duration_seconds", "Time from the start of a recovery attempt until the service is healthy",
    buckets=_DURATION_BUCKETS, registry=REGISTRY,
)
INITIALIZATION_DURATION = Histogram(
    "windflow_initialization_duration_seconds", "Duration of finished system initializations, by outcome",
    ["status"], buckets=_DURATION_BUCKETS, registry=REGISTRY,
)
PROBE_LATENCY = Histogram(
    "windflow_probe_latency_seconds", "Health probe latency, by probe kind", ["kind"],
    buckets=_PROBE_BUCKETS, registry=REGISTRY,
)
EVENTS_PUBLISHED = Counter("windflow_events_published", "Events the outbox relay published to the bus",
                           registry=REGISTRY)
WEBHOOK_DELIVERIES = Counter(
    "windflow_webhook_deliveries", "Outgoing webhook delivery attempts, by outcome (delivered, retrying, failed)",
    ["outcome"], registry=REGISTRY,
)


def observe_probe(kind: str, latency_ms: float) -> None:
    """Record one probe (never raises: metrics must not break a probe)."""
    try:
        PROBE_LATENCY.labels(kind=kind).observe(max(0.0, latency_ms) / 1000.0)
    except Exception:  # pragma: no cover - defensive
        log.debug("probe metric failed", exc_info=True)


class StoreCollector(Collector):
    """Gauges read from the store: set by :meth:`refresh` (async, before a scrape), reported by ``collect``.

    Nothing is reported before the first refresh, so a process that never refreshes (the worker) does not
    export stale zeros next to the API's figures."""

    def __init__(self) -> None:
        self.services: dict[str, int] | None = None
        self.outbox_lag: int | None = None
        self.refreshed_at: float | None = None

    async def refresh(self, db: Database) -> None:
        from sqlalchemy import func, select

        from windflow.persistence.models import ServiceRow
        from windflow.persistence.repositories import OutboxRepository

        async with db.read() as session:
            rows = (await session.execute(select(ServiceRow.state, func.count()).group_by(ServiceRow.state))).all()
            lag = await OutboxRepository().lag(session=session)
        self.services = {str(state): int(count) for state, count in rows}
        self.outbox_lag = lag
        self.refreshed_at = time.time()

    def collect(self) -> Iterable[Any]:
        if self.services is not None:
            gauge = GaugeMetricFamily("windflow_services", "Registered services by health state", labels=["state"])
            for state, count in sorted(self.services.items()):
                gauge.add_metric([state], count)
            yield gauge
        if self.outbox_lag is not None:
            yield GaugeMetricFamily("windflow_outbox_lag", "Events committed to the outbox, not yet published",
                                    value=self.outbox_lag)

    def describe(self) -> Iterable[Any]:
        return []


STORE = StoreCollector()
REGISTRY.register(STORE)


class MetricsEndpoint:
    """The API's ``GET /metrics`` (an ASGI app): refresh the store gauges, then serve the registry.

    Added as a plain route, not a mount (a mount answers ``/metrics`` with a redirect to ``/metrics/``)."""

    def __init__(self) -> None:
        from prometheus_client import make_asgi_app

        self._inner = make_asgi_app(registry=REGISTRY)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        resources = getattr(getattr(scope.get("app"), "state", None), "resources", None)
        if resources is not None:
            try:
                await STORE.refresh(resources.db)
            except Exception as exc:  # the store is down: serve the rest, keep the last figures
                log.warning("metrics: store gauges not refreshed: %s", exc)
        await self._inner(scope, receive, send)


def sdk_runtime(host: str, port: int) -> Runtime:
    """A Temporal runtime whose core exports the SDK's metrics in Prometheus format on ``host:port``."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{port}")))


def serve_windflow_metrics(host: str, port: int) -> Any:
    """windflow's registry on its own HTTP port (a daemon thread); returns the server."""
    server, _thread = start_http_server(port, addr=host, registry=REGISTRY)
    return server
