"""Timeouts and retry policies of every activity call, in one place."""

from __future__ import annotations

from datetime import timedelta

from temporalio.common import RetryPolicy

NON_RETRYABLE = [
    "ConfigInvalid",
    "DependencyCycle",
    "NotFound",
    "DriverFailed",
    "HealthCheckFailed",
    "ProcessExited",
]

#: store writes and reads: retried until the database is back (a run must not die of a DB blip)
STORE_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                          maximum_interval=timedelta(seconds=10), non_retryable_error_types=NON_RETRYABLE)
STORE_TIMEOUT = timedelta(seconds=30)

#: driver calls (start/stop/restart): a few quick retries of transient failures, never of a refusal
CONTROL_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=500), backoff_coefficient=2.0,
                            maximum_interval=timedelta(seconds=10), maximum_attempts=5,
                            non_retryable_error_types=NON_RETRYABLE)
CONTROL_TIMEOUT = timedelta(seconds=120)
CONTROL_HEARTBEAT = timedelta(seconds=10)

#: waiting for health: retried only when the worker died (heartbeat timeout), not on a verdict
WAIT_RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=2.0,
                         maximum_interval=timedelta(seconds=5), maximum_attempts=20,
                         non_retryable_error_types=NON_RETRYABLE)
WAIT_HEARTBEAT = timedelta(seconds=5)

#: one probe
PROBE_TIMEOUT = timedelta(seconds=60)
