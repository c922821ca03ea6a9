"""The worker's composition root: registers workflows and activities on the task queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker, WorkflowRunner

from windflow.activities.notifications import NotificationActivities
from windflow.activities.records import RecordActivities
from windflow.activities.rollout import RolloutActivities
from windflow.activities.runs import TemporalActivities
from windflow.activities.services import ServiceActivities
from windflow.activities.supervision import SupervisionActivities
from windflow.drivers import build_driver_registry
from windflow.persistence.budget import RestartBudget
from windflow.persistence.db import Database
from windflow.probes import build_probe_registry
from windflow.schedules import ensure_sweep_schedule
from windflow.settings import Settings
from windflow.tracing import traced_drivers, traced_probes
from windflow.workflows import search_attributes as sa
from windflow.workflows._policies import host_queue
from windflow.workflows.control import RecoverySweep, ServiceControl
from windflow.workflows.initialization import SystemInitialization
from windflow.workflows.rollout import ConfigRollout
from windflow.workflows.supervision import ServiceRecovery, ServiceSupervisor

log = logging.getLogger("windflow.worker")

WORKFLOWS: list[type] = [SystemInitialization, ServiceSupervisor, ServiceRecovery, ServiceControl, RecoverySweep,
                         ConfigRollout]


@dataclass
class WorkerParts:
    """What a worker is made of, so tests and `windflow up` can reach the pieces."""

    worker: Worker
    services: ServiceActivities
    records: RecordActivities
    supervision: SupervisionActivities
    #: with ``settings.worker_host``: the worker of this host's own queue (driver and probe activities of the
    #: services bound to this host, see ``workflows._policies.driver_queue``); run it beside ``worker``
    host_worker: Worker | None = None


def activities_of(*objects: Any) -> list[Callable[..., Any]]:
    """Every ``@activity.defn`` method of the given activity classes."""
    out: list[Callable[..., Any]] = []
    for obj in objects:
        for name in dir(type(obj)):
            member = getattr(type(obj), name)
            if callable(member) and hasattr(member, "__temporal_activity_definition"):
                out.append(getattr(obj, name))
    return out


def build_worker(
    *,
    client: Client,
    settings: Settings,
    db: Database,
    task_queue: str | None = None,
    on_commit: Callable[[], None] | None = None,
    workflow_runner: WorkflowRunner | None = None,
    extra_workflows: Sequence[type] = (),
    max_concurrent_activities: int = 2000,
    graceful_shutdown: timedelta = timedelta(0),
) -> WorkerParts:
    data_dir = settings.ensure_data_dir()
    drivers = traced_drivers(build_driver_registry(data_dir=data_dir))
    probes = traced_probes(build_probe_registry())
    services = ServiceActivities(db=db, drivers=drivers, probes=probes, probe_history=settings.probe_history,
                                 on_commit=on_commit)
    records = RecordActivities(db=db, on_commit=on_commit)
    runs = TemporalActivities(client=client)
    budget = RestartBudget(db, max_in_flight=settings.restart_max_in_flight,
                           max_per_window=settings.restart_max_per_window, window=settings.restart_window,
                           lease=300.0)
    supervision = SupervisionActivities(db=db, drivers=drivers, probes=probes, budget=budget,
                                        probe_history=settings.probe_history, on_commit=on_commit)
    notifications = NotificationActivities(db=db, settings_channels=list(settings.notification_channels))
    rollout = RolloutActivities(db=db, drivers=drivers, probes=probes, on_commit=on_commit)
    kwargs: dict[str, Any] = {}
    if workflow_runner is not None:
        kwargs["workflow_runner"] = workflow_runner
    worker = Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=activities_of(services, records, runs, supervision, notifications, rollout),
        max_concurrent_activities=max_concurrent_activities,
        # on SIGTERM, let short activities finish; long watches are cancelled and resume on another worker
        graceful_shutdown_timeout=graceful_shutdown,
        **kwargs,
    )
    host_worker = None
    if settings.worker_host:  # a second poller, on the queue only this host's worker polls (no workflows)
        host_worker = Worker(
            client,
            task_queue=host_queue(task_queue or settings.task_queue, settings.worker_host),
            activities=activities_of(services, supervision, rollout),
            max_concurrent_activities=max_concurrent_activities,
            graceful_shutdown_timeout=graceful_shutdown,
        )
    return WorkerParts(worker=worker, services=services, records=records, supervision=supervision,
                       host_worker=host_worker)


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register windflow's search attributes in the namespace if missing; returns the ones added.

    Where the namespace does not let a worker manage them (Temporal Cloud: they are added in the namespace's
    settings), a warning names them and the worker goes on."""
    denied = (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED)
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace))
    except RPCError as exc:
        if exc.status not in denied:
            raise
        log.warning("cannot list the namespace's search attributes (%s); make sure %s exist", exc.message,
                    ", ".join(k.name for k in sa.ALL_KEYS))
        return []
    have = set(existing.custom_attributes)
    missing = {k.name: IndexedValueType.ValueType(k.indexed_value_type.value) for k in sa.ALL_KEYS
               if k.name not in have}
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as exc:  # another worker starting at the same moment registered them first
            if exc.status in denied:
                log.warning("cannot add search attributes %s (%s): add them in the namespace's settings",
                            ", ".join(sorted(missing)), exc.message)
                return []
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(missing)


async def run_worker(settings: Settings) -> None:
    """`windflow worker`: run until SIGINT/SIGTERM, then finish in-flight tasks and exit."""
    from windflow.persistence.migrate import upgrade
    from windflow.settings import Mode
    from windflow.temporal_client import connect

    db = Database.from_url(settings.sqlalchemy_url)
    if settings.mode == Mode.EMBEDDED:
        await upgrade(db.engine)
    from windflow.metrics import parse_port_spec, serve_metrics, temporal_runtime

    ports = parse_port_spec(settings.worker_metrics_port)
    # one Temporal runtime for the process: the SDK core's logs through Python logging (JSON when asked),
    # its metrics (when wanted) appended to windflow's on the one worker endpoint
    kwargs: dict[str, Any] = {"runtime": temporal_runtime(metrics=ports is not None)}
    metrics_server = None
    if ports is not None:
        token = settings.metrics_token.get_secret_value() if settings.metrics_token else None
        metrics_server = serve_metrics(settings.worker_metrics_host, ports, token=token)
        log.info("metrics on http://%s:%d/metrics", settings.worker_metrics_host, metrics_server.server_port,
                 extra={"metrics_port": metrics_server.server_port})
    client = await connect(settings, identity=None, **kwargs)
    added = await ensure_search_attributes(client, settings.temporal_namespace)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    parts = build_worker(client=client, settings=settings, db=db, graceful_shutdown=timedelta(seconds=10))
    await ensure_sweep_schedule(client, task_queue=settings.task_queue,
                                every=timedelta(seconds=settings.sweep_interval))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    from windflow.heap import freeze_startup_heap

    freeze_startup_heap()  # windflow.heap: no full collection walking the start-up heap while tasks wait
    log.info("worker polling %s on %s", settings.task_queue, settings.temporal_address)
    if parts.host_worker is not None:
        log.info("host %s: also polling %s", settings.worker_host, parts.host_worker.task_queue)
    async with parts.worker, parts.host_worker or contextlib.nullcontext():
        await stop.wait()
    if metrics_server is not None:
        metrics_server.shutdown()
    await db.dispose()
