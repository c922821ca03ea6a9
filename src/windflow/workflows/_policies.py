"""Timeouts and retry policies of every activity call, in one place."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutType
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from windflow.domain.models import ServiceSpec
from windflow.temporal import names

NON_RETRYABLE = [
    "ConfigInvalid",
    "ConfigNotStored",
    "DependencyCycle",
    "NotFound",
    "DriverFailed",
    "HealthCheckFailed",
    "ProcessExited",
]

#: store writes and reads: retried until the database is back (a run must not die of a DB blip)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    non_retryable_error_types=NON_RETRYABLE,
)
STORE_TIMEOUT = timedelta(seconds=30)

#: driver calls (start/stop/restart): a few quick retries of transient failures, never of a refusal
CONTROL_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=10),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)
CONTROL_TIMEOUT = timedelta(seconds=120)
CONTROL_HEARTBEAT = timedelta(seconds=10)

#: waiting for health: retried only when the worker died (heartbeat timeout), not on a verdict
WAIT_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=5),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)
WAIT_HEARTBEAT = timedelta(seconds=5)

#: one probe
PROBE_TIMEOUT = timedelta(seconds=60)


def error_text(exc: BaseException) -> str:
    """The innermost useful message of an activity failure."""
    cause: BaseException = exc
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return str(cause)


# --------------------------------------------------------------------------- host-affine services

#: how long a driver or probe activity of a host-bound service may wait for that host's worker to pick it up
#: (a live worker takes milliseconds; a restarting one a few seconds); then the call fails as HostUnavailable
HOST_START_TIMEOUT = timedelta(seconds=30)


#: the task queue only the worker started with ``--host HOST`` polls (one spelling: ``temporal.names``)
host_queue = names.host_queue


def driver_queue(spec: ServiceSpec) -> str | None:
    """Where a service's driver and probe activities run: its host's queue, or ``None`` (the workflow's queue)."""
    if spec.host is None:
        return None
    return host_queue(workflow.info().task_queue, spec.host)


async def execute_on_host(spec: ServiceSpec, activity: Any, arg: Any, **options: Any) -> Any:
    """``workflow.execute_activity_method`` for a driver or probe activity of ``spec``, routed to its host.

    A service without ``host`` runs exactly as before (same commands, so histories replay). A host-bound one
    runs on ``driver_queue(spec)`` and fails with a ``HostUnavailable`` cause, "no worker polls host queue
    …", when no worker picks the task up within ``HOST_START_TIMEOUT``.
    """
    queue = driver_queue(spec)
    if queue is None:
        return await workflow.execute_activity_method(activity, arg, **options)
    try:
        return await workflow.execute_activity_method(
            activity, arg, task_queue=queue, schedule_to_start_timeout=HOST_START_TIMEOUT, **options
        )
    except ActivityError as exc:
        cause = exc.cause
        if isinstance(cause, TemporalTimeoutError) and cause.type == TimeoutType.SCHEDULE_TO_START:
            unavailable = ApplicationError(
                f"no worker polls host queue {queue}: start `windflow worker --host {spec.host}` on host {spec.host!r}",
                type="HostUnavailable",
                non_retryable=True,
            )
            unavailable.__cause__ = cause
            exc.__cause__ = unavailable
        raise
