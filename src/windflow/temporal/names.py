"""Workflow ids, workflow types, message names and the activity names called by string: the only place
that spells them.

Workflow ids are business keys, readable in the Temporal UI and stable, so that a repeated start lands on the
running workflow (``recover/{service}``) or is refused (``rollout/{service}``):

=========================  =====================================  ===================================
id                         workflow type                          started by
=========================  =====================================  ===================================
``init/{run_id}``          ``SystemInitialization``               API, ``windflow up``
``down/{run_id}``          ``SystemShutdown``                     API, ``windflow up --stop-services``
``rollout/{service}``      ``ConfigRollout``                      API
``control/{service}/{n}``  ``ServiceControl``                     API (an operator's start/stop/restart)
``scale/{service}``        ``ServiceScale``                       API (``PATCH /services/{id}``, ``windflow scale``)
``recover/{service}``      ``ServiceRecovery``                    API, alerts, watchers, the sweep
``watch/{queue}``          ``Watcher``                            the sweep, ``windflow worker``
``sweep/{schedule}``       ``RecoverySweep``                      the Temporal Schedule ``SWEEP_SCHEDULE_ID``
=========================  =====================================  ===================================

Workflows use these constants in their decorators (``@workflow.defn(name=SYSTEM_INITIALIZATION)``), so a name
and its callers cannot drift apart. This module imports nothing: workflows import it in their sandbox.
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------------- workflow types

SYSTEM_INITIALIZATION = "SystemInitialization"
SYSTEM_SHUTDOWN = "SystemShutdown"
CONFIG_ROLLOUT = "ConfigRollout"
SERVICE_CONTROL = "ServiceControl"
SERVICE_SCALE = "ServiceScale"
SERVICE_RECOVERY = "ServiceRecovery"
SERVICE_SUPERVISOR = "ServiceSupervisor"
RECOVERY_SWEEP = "RecoverySweep"
WATCHER = "Watcher"

# ---------------------------------------------------------------------------------- queries, signals, updates

#: every long-running workflow answers this query with its state model
STATUS = "status"
#: SystemInitialization: retry one failed component in the same run
RETRY_COMPONENT = "retry_component"
#: ServiceRecovery / ServiceSupervisor: an operator's answer to an escalation (``on_give_up: ask``)
DECIDE = "decide"
#: ServiceSupervisor (until per-queue watchers replace it)
PAUSE = "pause"
RESUME = "resume"
POLICY_CHANGED = "policy_changed"
STOP_SUPERVISION = "stop_supervision"
DEPENDENCY_RECOVERED = "dependency_recovered"
RECOVER_NOW = "recover_now"

# ------------------------------------------------------------------------------ activities called by name

#: registered by the worker only when notification channels are configured, so workflows call it by name
NOTIFY = "notify"

# --------------------------------------------------------------------------------------------- workflow ids

INIT_PREFIX = "init/"
DOWN_PREFIX = "down/"
ROLLOUT_PREFIX = "rollout/"
CONTROL_PREFIX = "control/"
SCALE_PREFIX = "scale/"
RECOVER_PREFIX = "recover/"
WATCH_PREFIX = "watch/"
SUPERVISE_PREFIX = "supervise/"
SWEEP_PREFIX = "sweep/"

#: the Temporal Schedule that runs the recovery sweep
SWEEP_SCHEDULE_ID = "windflow-recovery-sweep"


def init_id(run_id: str) -> str:
    """``init/{run_id}``: one system initialization."""
    return f"{INIT_PREFIX}{run_id}"


def down_id(run_id: str) -> str:
    """``down/{run_id}``: one system shutdown."""
    return f"{DOWN_PREFIX}{run_id}"


def rollout_id(service_id: str) -> str:
    """``rollout/{service}``: the config rollout of a service (one at a time)."""
    return f"{ROLLOUT_PREFIX}{service_id}"


def control_id(service_id: str, nonce: str) -> str:
    """``control/{service}/{nonce}``: one operator action on a service (start, stop, restart)."""
    return f"{CONTROL_PREFIX}{service_id}/{nonce}"


def scale_id(service_id: str) -> str:
    """``scale/{service}``: bringing a replicated service to its replica count (one at a time)."""
    return f"{SCALE_PREFIX}{service_id}"


def recover_id(service_id: str) -> str:
    """``recover/{service}``: the recovery of a service (one at a time: a second start joins it)."""
    return f"{RECOVER_PREFIX}{service_id}"


def watch_id(queue: str) -> str:
    """``watch/{queue}``: the watcher of every service of one task queue."""
    return f"{WATCH_PREFIX}{queue}"


def host_queue(task_queue: str, host: str) -> str:
    """The task queue only the worker started with ``--host HOST`` polls (besides the shared one)."""
    return f"{task_queue}.host.{host}"


def watcher_queue(task_queue: str, host: str | None) -> str:
    """The queue a watcher watches: the shared one (``host=None``) or a host's."""
    return host_queue(task_queue, host) if host else task_queue


def supervise_id(service_id: str) -> str:
    """``supervise/{service}``: the per-service supervisor (until per-queue watchers replace it)."""
    return f"{SUPERVISE_PREFIX}{service_id}"


def sweep_id(schedule_id: str = SWEEP_SCHEDULE_ID) -> str:
    """``sweep/{schedule}``: the runs a sweep schedule starts (the server appends the start time)."""
    return f"{SWEEP_PREFIX}{schedule_id}"


def service_of(workflow_id: str) -> str | None:
    """The service a per-service workflow id names (``recover/db`` → ``db``), or None for other ids."""
    for prefix in (RECOVER_PREFIX, SUPERVISE_PREFIX, ROLLOUT_PREFIX, SCALE_PREFIX):
        if workflow_id.startswith(prefix):
            return workflow_id[len(prefix) :]
    if workflow_id.startswith(CONTROL_PREFIX):
        return workflow_id[len(CONTROL_PREFIX) :].rpartition("/")[0] or None
    return None
