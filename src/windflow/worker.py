"""The worker's composition root: registers workflows and activities on the task queue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
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
from windflow.activities.shutdown import ShutdownActivities
from windflow.activities.supervision import SupervisionActivities
from windflow.activities.watch import WatchActivities
from windflow.drivers import build_driver_registry
from windflow.outbound import OutboundPolicy
from windflow.persistence import sealing
from windflow.persistence.budget import RestartBudget
from windflow.persistence.db import Database
from windflow.probes import build_probe_registry
from windflow.run_health import watch_runs
from windflow.schedules import ensure_sweep_schedule
from windflow.settings import Settings
from windflow.temporal import search_attributes as sa
from windflow.tracing import traced_drivers, traced_probes
from windflow.workflows._policies import host_queue
from windflow.workflows.control import RecoverySweep, ServiceControl
from windflow.workflows.initialization import SystemInitialization
from windflow.workflows.rollout import ConfigRollout
from windflow.workflows.scale import ServiceScale
from windflow.workflows.shutdown import SystemShutdown
from windflow.workflows.supervision import ServiceRecovery
from windflow.workflows.watch import Watcher

log = logging.getLogger("windflow.worker")

#: how long a workflow task waits on the queue of the worker that ran the workflow last (its cache) before any
#: worker may take it: a worker that died must not hold its workflows' next steps for long
STICKY_TIMEOUT = timedelta(seconds=2)
#: the failure type of an activity attempt of a dead worker that a starting worker ended (see below)
WORKER_LOST = "WorkerLost"
_IDENTITY = re.compile(r"^(\d+)@(\S+)")

WORKFLOWS: list[type] = [
    SystemInitialization,
    Watcher,
    ServiceRecovery,
    ServiceControl,
    RecoverySweep,
    ConfigRollout,
    SystemShutdown,
    ServiceScale,
]


@dataclass
class WorkerParts:
    """What a worker is made of, so tests and `windflow up` can reach the pieces."""

    worker: Worker
    services: ServiceActivities
    records: RecordActivities
    supervision: SupervisionActivities
    watch: WatchActivities
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
    sealing.configure_from(settings)  # sealed store values (channel configs, rollout proposals) open with the keys
    outbound = OutboundPolicy.for_services(settings)
    drivers = traced_drivers(build_driver_registry(data_dir=data_dir, outbound=outbound))
    probes = traced_probes(build_probe_registry(outbound=outbound))
    services = ServiceActivities(
        db=db, drivers=drivers, probes=probes, probe_history=settings.probe_history, on_commit=on_commit
    )
    records = RecordActivities(db=db, on_commit=on_commit)
    runs = TemporalActivities(client=client, db=db)
    budget = RestartBudget(
        db,
        max_in_flight=settings.restart_max_in_flight,
        max_per_window=settings.restart_max_per_window,
        window=settings.restart_window,
        lease=300.0,
    )
    supervision = SupervisionActivities(
        db=db, drivers=drivers, probes=probes, budget=budget, probe_history=settings.probe_history, on_commit=on_commit
    )
    watch = WatchActivities(
        db=db, drivers=drivers, probes=probes, client=client, probe_history=settings.probe_history, on_commit=on_commit
    )
    notifications = NotificationActivities(
        db=db, settings_channels=list(settings.notification_channels), outbound=OutboundPolicy.for_notify(settings)
    )
    rollout = RolloutActivities(db=db, drivers=drivers, probes=probes, on_commit=on_commit)
    shutdown = ShutdownActivities(db=db, on_commit=on_commit)
    kwargs: dict[str, Any] = {}
    if workflow_runner is not None:
        kwargs["workflow_runner"] = workflow_runner
    worker = Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[*WORKFLOWS, *extra_workflows],
        activities=activities_of(services, records, runs, supervision, watch, notifications, rollout, shutdown),
        max_concurrent_activities=max_concurrent_activities,
        # on SIGTERM, let short activities finish; long watches are cancelled and resume on another worker
        graceful_shutdown_timeout=graceful_shutdown,
        sticky_queue_schedule_to_start_timeout=STICKY_TIMEOUT,
        **kwargs,
    )
    host_worker = None
    if settings.worker_host:  # a second poller, on the queue only this host's worker polls (no workflows)
        host_worker = Worker(
            client,
            task_queue=host_queue(task_queue or settings.task_queue, settings.worker_host),
            activities=activities_of(services, supervision, watch, rollout),
            max_concurrent_activities=max_concurrent_activities,
            graceful_shutdown_timeout=graceful_shutdown,
        )
    return WorkerParts(
        worker=worker, services=services, records=records, supervision=supervision, watch=watch, host_worker=host_worker
    )


async def ensure_search_attributes(client: Client, namespace: str) -> list[str]:
    """Register windflow's search attributes in the namespace if missing; returns the ones added.

    Where the namespace does not let a worker manage them (Temporal Cloud: they are added in the namespace's
    settings), a warning names them and the worker goes on."""
    denied = (RPCStatusCode.PERMISSION_DENIED, RPCStatusCode.UNIMPLEMENTED, RPCStatusCode.UNAUTHENTICATED)
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
    except RPCError as exc:
        if exc.status not in denied:
            raise
        log.warning(
            "cannot list the namespace's search attributes (%s); make sure %s exist",
            exc.message,
            ", ".join(k.name for k in sa.ALL_KEYS),
        )
        return []
    have = set(existing.custom_attributes)
    missing = {
        k.name: IndexedValueType.ValueType(k.indexed_value_type.value) for k in sa.ALL_KEYS if k.name not in have
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as exc:  # another worker starting at the same moment registered them first
            if exc.status in denied:
                log.warning(
                    "cannot add search attributes %s (%s): add them in the namespace's settings",
                    ", ".join(sorted(missing)),
                    exc.message,
                )
                return []
            if exc.status != RPCStatusCode.ALREADY_EXISTS:
                raise
    return sorted(missing)


def _log_shipper(settings: Settings) -> Any:
    """With Redis: ship this host's service logs so the API on any host can tail and follow them."""
    if not (settings.redis_url and settings.logs_ship):
        return None
    from windflow.events.redis_streams import connect as redis_connect
    from windflow.service_logs import LogShipper

    log.info("shipping service logs to Redis (%s*)", settings.logs_prefix)
    return LogShipper(
        redis_connect(settings.redis_url),
        settings.resolved_data_dir / "logs",
        prefix=settings.logs_prefix,
        maxlen=settings.logs_maxlen,
    )


def worker_identity(suffix: str = "") -> str:
    """``pid@host`` (the SDK's default form), so that another worker on this host can tell when this one died."""
    return f"{os.getpid()}@{socket.gethostname()}" + (f" {suffix}" if suffix else "")


def _dead_local_worker(identity: str, host: str) -> bool:
    """Whether ``identity`` names a worker process of this host that no longer runs (a zombie counts as gone)."""
    match = _IDENTITY.match(identity or "")
    if match is None or match.group(2) != host:
        return False  # another host's worker (or an identity without a pid): its heartbeat timeout decides
    pid = int(match.group(1))
    if pid == os.getpid():
        return False
    from windflow.drivers.process import read_proc_stat

    stat = read_proc_stat(pid)
    return stat is None or stat.exited


async def reclaim_abandoned_activities(client: Client, task_queue: str, *, concurrency: int = 16) -> int:
    """End, as failed and so retried at once, the running activity attempts of dead workers of this host.

    Without this, a worker killed with SIGKILL keeps its activities (the services' watches above all) until their
    heartbeat timeout: meanwhile a crash goes unseen. A worker that starts knows its own host's dead workers by
    their identity (``pid@host``); it fails their started attempts with ``WorkerLost``, which every retry policy
    retries, carrying the last heartbeat details, so the next attempt runs here now. Activities are idempotent,
    as for any retry. Workers of other hosts are left to their heartbeat timeout. Returns how many were ended."""
    from temporalio.api.common.v1 import WorkflowExecution
    from temporalio.api.enums.v1 import PendingActivityState
    from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
    from temporalio.api.workflowservice.v1 import (
        DescribeWorkflowExecutionRequest,
        RespondActivityTaskFailedByIdRequest,
    )

    host = socket.gethostname()
    me = worker_identity()
    gate = asyncio.Semaphore(concurrency)
    ended = 0

    async def reclaim(workflow_id: str, run_id: str) -> None:
        nonlocal ended
        async with gate:
            desc = await client.workflow_service.describe_workflow_execution(
                DescribeWorkflowExecutionRequest(
                    namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id)
                )
            )
            for pending in desc.pending_activities:
                if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
                    continue
                if not _dead_local_worker(pending.last_worker_identity, host):
                    continue
                failure = Failure(
                    message=f"worker {pending.last_worker_identity} is gone; retried by {me}",
                    application_failure_info=ApplicationFailureInfo(type=WORKER_LOST),
                )
                try:
                    await client.workflow_service.respond_activity_task_failed_by_id(
                        RespondActivityTaskFailedByIdRequest(
                            namespace=client.namespace,
                            workflow_id=workflow_id,
                            run_id=run_id,
                            activity_id=pending.activity_id,
                            failure=failure,
                            identity=me,
                            last_heartbeat_details=pending.heartbeat_details,
                        )
                    )
                except RPCError as exc:  # it completed or timed out meanwhile
                    if exc.status != RPCStatusCode.NOT_FOUND:
                        raise
                    continue
                ended += 1
                log.info(
                    "activity %s (%s) of %s: its worker %s is gone, retried now",
                    pending.activity_id,
                    pending.activity_type.name,
                    workflow_id,
                    pending.last_worker_identity,
                )

    jobs = [
        asyncio.ensure_future(reclaim(wf.id, wf.run_id))
        async for wf in client.list_workflows(f"TaskQueue = '{task_queue}' AND ExecutionStatus = 'Running'")
    ]
    for outcome in await asyncio.gather(*jobs, return_exceptions=True):
        if isinstance(outcome, BaseException):
            log.warning("could not reclaim the activities of a dead worker: %s", outcome)
    return ended


async def reclaim_in_background(client: Client, task_queue: str) -> None:
    """``reclaim_abandoned_activities`` for a worker that has just started polling; failures only logged."""
    try:
        ended = await reclaim_abandoned_activities(client, task_queue)
    except Exception as exc:  # Temporal away: the heartbeat timeouts still apply
        log.warning("could not look for activities of dead workers: %s", exc)
        return
    if ended:
        log.info("took over %d activit%s of dead workers of this host", ended, "y" if ended == 1 else "ies")


async def take_over_watching(
    client: Client, task_queue: str, host: str | None, watch: WatchActivities | None = None
) -> None:
    """A worker that starts makes sure its queues are watched (``watch/{queue}``: the shared one, and its host's),
    and ends the ``supervise/*`` workflows a previous version left (the watcher takes their services over);
    failures only logged (the sweep makes sure of it again). First, services of its queues whose process is gone
    are ``unknown`` until observed (no stale ``healthy`` after a reboot)."""
    from windflow.temporal.watchers import end_supervisors, ensure_watcher

    if watch is not None:
        try:
            gone = await watch.forget_unobserved(host)
            if gone:
                log.info("not running since windflow was last up: %s", ", ".join(gone))
        except Exception as exc:  # noqa: BLE001 - the store away: the watcher finds out anyway
            log.warning("could not check the services' processes: %s", exc)
    try:
        await ensure_watcher(client, task_queue=task_queue)
        if host:
            await ensure_watcher(client, task_queue=task_queue, host=host)
        await end_supervisors(client)
    except Exception as exc:  # noqa: BLE001 - Temporal away: the sweep starts them later
        log.warning("could not make sure the watchers run: %s", exc)


async def run_worker(settings: Settings) -> None:
    """`windflow worker`: run until SIGINT/SIGTERM, then finish in-flight tasks and exit."""
    from windflow.persistence.migrate import upgrade
    from windflow.settings import Mode
    from windflow.temporal.client import connect

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
        log.info(
            "metrics on http://%s:%d/metrics",
            settings.worker_metrics_host,
            metrics_server.server_port,
            extra={"metrics_port": metrics_server.server_port},
        )
    client = await connect(settings, identity=worker_identity(), **kwargs)
    added = await ensure_search_attributes(client, settings.temporal_namespace)
    if added:
        log.info("registered search attributes: %s", ", ".join(added))
    parts = build_worker(client=client, settings=settings, db=db, graceful_shutdown=timedelta(seconds=10))
    await ensure_sweep_schedule(
        client, task_queue=settings.task_queue, every=timedelta(seconds=settings.sweep_interval)
    )
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
    shipper = _log_shipper(settings)
    ship_task = asyncio.create_task(shipper.run(), name="log-shipper") if shipper is not None else None
    try:
        async with parts.worker, parts.host_worker or contextlib.nullcontext():
            reclaiming = asyncio.create_task(reclaim_in_background(client, settings.task_queue))
            taking_over = asyncio.create_task(
                take_over_watching(client, settings.task_queue, settings.worker_host, parts.watch)
            )
            watchdog = asyncio.create_task(watch_runs(client, db))
            try:
                await stop.wait()
            finally:  # also when the worker's own task is cancelled: no background task outlives it
                reclaiming.cancel()
                taking_over.cancel()
                watchdog.cancel()
    finally:
        if ship_task is not None:
            ship_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ship_task
            await shipper.redis.aclose()
    if metrics_server is not None:
        metrics_server.shutdown()
    await db.dispose()
