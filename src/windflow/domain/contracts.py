"""One input and one result model per workflow, activity, signal, update and query.

Fields may be added (with defaults) without breaking histories in flight. No ``default_factory`` that
reads a clock or randomness: workflows pass ``workflow.now()`` / ``workflow.uuid4()`` explicitly.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from windflow.domain.models import ServiceSpec
from windflow.domain.notifications import DeliveryResult, Notification
from windflow.domain.results import DriverResult, ProbeResult

# --------------------------------------------------------------------------- initialization


class InitStatus(StrEnum):
    PENDING = "PENDING"
    VALIDATING = "VALIDATING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLING = "CANCELLING"
    CANCELLED = "CANCELLED"


TERMINAL_INIT = {InitStatus.SUCCEEDED, InitStatus.FAILED, InitStatus.CANCELLED}


class ComponentStatus(StrEnum):
    PENDING = "PENDING"
    STARTING = "STARTING"
    WAITING_HEALTHY = "WAITING_HEALTHY"
    HEALTHY = "HEALTHY"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    STOPPED = "STOPPED"
    RUNNING = "RUNNING"  # a job whose run is in progress
    COMPLETED = "COMPLETED"  # a job that exited with a success code (or was skipped by `run: once`)


class InitOptions(BaseModel):
    components: list[str] = Field(default_factory=list, description="Empty = all; dependencies are pulled in")
    validate_only: bool = Field(False, description="Validate configs and the graph, start nothing")
    parallelism: int | None = Field(
        None, ge=1, le=1000, description="Components starting at once (default: all, up to 100 at a time)"
    )
    component_timeout: float = Field(120.0, gt=0, le=86400, description="Seconds for one component to be healthy")
    overall_timeout: float = Field(3600.0, gt=0, le=7 * 86400, description="Seconds for the whole run")
    on_failure: Literal["stop", "continue"] = Field(
        "stop", description="stop: start nothing new after a failure; continue: go on with independent components"
    )
    on_cancel: Literal["rollback", "leave_running"] = "rollback"
    retry_window: float = Field(
        900.0, ge=0, le=7 * 86400, description="After a failure, keep the run open this long for retry_component"
    )


class InitInput(BaseModel):
    run_id: str
    options: InitOptions = Field(default_factory=InitOptions)
    actor: str = "system"
    wait_for: str | None = Field(None, description="Queued: start once this workflow id has closed")


class AwaitWorkflowInput(BaseModel):
    workflow_id: str
    poll: float = 1.0


class AwaitWorkflowResult(BaseModel):
    workflow_id: str
    status: str


class ComponentState(BaseModel):
    name: str
    status: ComponentStatus = ComponentStatus.PENDING
    layer: int = 0
    depends_on: list[str] = Field(default_factory=list)
    conditions: dict[str, str] = Field(default_factory=dict, description="Each dependency's condition, by id")
    kind: str = Field("service", description="service or job")
    attempts: int = 0
    last_error: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    healthy_at: datetime | None = None
    finished_at: datetime | None = None
    started_by_run: bool = Field(False, description="This run started it (so a rollback stops it)")
    exit_code: int | None = Field(None, description="A job: the exit code of its last attempt")
    duration: float | None = Field(None, description="A job: seconds its last attempt ran")
    log_tail: list[str] = Field(default_factory=list, description="A job: the last lines of its output")


class InitState(BaseModel):
    """What the `status` query returns, the store keeps and the events carry."""

    run_id: str
    workflow_id: str
    status: InitStatus = InitStatus.PENDING
    progress: int = 0
    actor: str = "system"
    options: InitOptions = Field(default_factory=InitOptions)
    plan: list[list[str]] = Field(default_factory=list)
    components: dict[str, ComponentState] = Field(default_factory=dict)
    problems: list[dict[str, Any]] = Field(default_factory=list)
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    awaiting_retry_until: datetime | None = None


class RetryComponentInput(BaseModel):
    component: str


class RetryComponentResult(BaseModel):
    accepted: bool
    message: str = ""


# --------------------------------------------------------------------------- activities


class ValidateSystemInput(BaseModel):
    components: list[str] = Field(default_factory=list)


class ValidateSystemResult(BaseModel):
    valid: bool
    problems: list[dict[str, Any]] = Field(default_factory=list)
    specs: list[ServiceSpec] = Field(default_factory=list)
    plan: list[list[str]] = Field(default_factory=list)


class ServiceActionInput(BaseModel):
    spec: ServiceSpec
    source: str = Field("initialization", description="Who asks: initialization, recovery, user, rollout")
    run_id: str | None = None
    grace: float | None = None
    actor: str | None = Field(None, description="The user behind the act (recorded as who set the desired state)")


class ServiceActionResult(BaseModel):
    result: DriverResult


class WaitHealthyInput(BaseModel):
    spec: ServiceSpec
    timeout: float = Field(120.0, gt=0)
    source: str = "initialization"
    run_id: str | None = None
    require_running: bool = Field(True, description="Fail at once when the driver sees the process gone")


class WaitHealthyResult(BaseModel):
    healthy: bool
    elapsed: float
    checks: int
    last: ProbeResult | None = None
    message: str = ""


class RunJobInput(BaseModel):
    service_id: str
    run_id: str | None = None
    attempt: int = 1
    source: str = "initialization"


class RunJobResult(BaseModel):
    succeeded: bool
    skipped: bool = Field(False, description="`run: once` and this version already succeeded: nothing was run")
    version: int = 0
    exit_code: int | None = None
    duration: float = 0.0
    pid: int | None = None
    message: str = ""
    log_tail: list[str] = Field(default_factory=list)


class CheckHealthInput(BaseModel):
    spec: ServiceSpec
    record: bool = True


class RecordInitInput(BaseModel):
    state: InitState
    final: bool = False
    events: list[dict[str, Any]] = Field(default_factory=list, description="INITIALIZATION_UPDATE data items")
    event_ids: list[str] = Field(default_factory=list)
    timestamp: datetime


# --------------------------------------------------------------------------- supervision and recovery


#: service states (the store's column) of a service windflow has brought up and should keep up; a service that
#: was never started, is being started by an initialization, failed to start, or was stopped is not supervised
#: by a sweep or a config change (an initialization hands its healthy components to supervisors itself)
SUPERVISABLE_STATES = frozenset(
    {"healthy", "unhealthy", "recovering", "backing_off", "blocked", "gave_up", "not_ready"}
)


class SupervisionState(StrEnum):
    STARTING = "starting"
    WATCHING = "watching"
    RECOVERING = "recovering"
    BACKING_OFF = "backing_off"
    BLOCKED = "blocked"
    WAITING_BUDGET = "waiting_budget"
    WAITING_DECISION = "waiting_decision"
    GAVE_UP = "gave_up"
    PAUSED = "paused"


class WatchInput(BaseModel):
    spec: ServiceSpec
    since: datetime | None = Field(None, description="When the current process started (for start_period)")
    record_every: float = Field(15.0, gt=0, description="Seconds between batched writes of probe results")


class WatchResult(BaseModel):
    verdict: Literal["exited", "unhealthy", "not_running"]
    message: str = ""
    exit_code: int | None = None
    signal: int | None = None
    detected_at: datetime
    healthy_for: float = Field(0.0, description="Seconds the service had been healthy before this verdict")
    probes: list[ProbeResult] = Field(default_factory=list, description="The failing probes (evidence)")


def _dependency_ids(value: Any) -> Any:
    """A spec's ``depends_on`` map given as is: its ids."""
    return list(value) if isinstance(value, dict) else value


class DependencyCheckInput(BaseModel):
    service_id: str
    depends_on: list[str] = Field(default_factory=list)

    @field_validator("depends_on", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _dependency_ids(value)


class DependencyCheckResult(BaseModel):
    unhealthy: list[str] = Field(default_factory=list)
    messages: dict[str, str] = Field(default_factory=dict)


class WaitDependenciesInput(BaseModel):
    service_id: str
    depends_on: list[str]
    poll: float = 0.5

    @field_validator("depends_on", mode="before")
    @classmethod
    def _ids(cls, value: Any) -> Any:
        return _dependency_ids(value)


class RecoverStepInput(BaseModel):
    spec: ServiceSpec
    reason: str
    confirm: bool = Field(False, description="Re-probe first: a blip must not restart a healthy service")
    requested_at: datetime = Field(description="workflow.now() when asked; makes the restart idempotent")
    holder: str = Field(description="Unique per attempt: the restart-budget lease holder")
    timeout: float = 60.0
    source: str = "recovery"
    workflow_id: str = ""
    attempt: int = 1
    max_attempts: int = 1
    recovery_started_at: datetime | None = Field(None, description="When this recovery began (its duration)")
    attempts_here: int = Field(1, description="Attempts of this recovery, this one included")


class RecoverStepResult(BaseModel):
    outcome: Literal["recovered", "healthy", "failed", "budget", "skipped"]
    message: str = ""
    retry_after: float = 0.0
    pid: int | None = None
    restarted: bool = False
    elapsed: float = 0.0
    probes: list[ProbeResult] = Field(default_factory=list)


class SupervisorStatus(BaseModel):
    """What the supervisor's `status` query returns (and the store and events carry)."""

    service_id: str
    workflow_id: str
    state: SupervisionState = SupervisionState.STARTING
    paused_reason: str | None = None
    last_verdict: WatchResult | None = None
    attempt: int = 0
    max_attempts: int = 0
    next_attempt_at: datetime | None = None
    blocked_on: list[str] = Field(default_factory=list)
    restarts: list[datetime] = Field(default_factory=list, description="Restart times in the current window")
    restarts_total: int = 0
    recoveries_total: int = 0
    last_error: str | None = None
    last_recovery_seconds: float | None = None
    healthy_since: datetime | None = None
    message: str = ""
    since: datetime | None = None


class SupervisorInput(BaseModel):
    service_id: str
    heartbeat_timeout: float = Field(
        10.0,
        ge=2,
        description="Seconds before the watch of a worker that went silent is retried elsewhere (30, the "
        "previous default, is read as the current default)",
    )
    carried: SupervisorStatus | None = Field(None, description="State carried over by continue-as-new")
    paused: bool = False
    paused_reason: str | None = None


class PauseInput(BaseModel):
    reason: str = "paused by an operator"
    actor: str = "system"


class RecoverNowInput(BaseModel):
    reason: str = "manual"
    actor: str = "system"
    source: str = "api"
    confirm: bool = Field(False, description="Probe first: a healthy service is not restarted")


class RecoverNowResult(BaseModel):
    attached: bool = Field(description="True when a recovery was already running and this request joined it")
    state: SupervisionState
    message: str = ""


class DecisionInput(BaseModel):
    decision: Literal["approve", "keep_stopped"]
    actor: str = "system"


class RecoveryInput(BaseModel):
    service_id: str
    reason: str = "manual"
    actor: str = "system"
    source: str = "api"
    confirm: bool = Field(False, description="Probe first: a healthy service is not restarted (alert hooks)")
    verdict: WatchResult | None = Field(
        None,
        description="What the watcher observed (exit code and signal, or "
        "the failed probes), when a watcher started this recovery",
    )


class RecoveryTarget(BaseModel):
    """What a recovery starts from: the applied spec, whether it may restart at all, and the attempt count
    carried from the last recovery (it resets once the service was healthy for ``reset_after``)."""

    spec: ServiceSpec | None = None
    desired: str | None = None
    state: str | None = Field(None, description="The service's status when the recovery began")
    held_by: str | None = Field(None, description="The operator path holding the service (no restart meanwhile)")
    attempt: int = Field(0, description="Attempts already counted (the last recovery ended < reset_after ago)")
    healthy_since: datetime | None = None


class StartRecoveriesInput(BaseModel):
    service_ids: list[str] = Field(default_factory=list)
    reason: str = "sweep"
    actor: str = "system"
    source: str = "sweep"
    task_queue: str = ""


class WatcherInput(BaseModel):
    """``Watcher`` (id ``watch/{queue}``): the queue whose services it watches (the shared queue, or a host's)."""

    queue: str
    host: str | None = Field(None, description="The host of a host queue (None: the shared queue's services)")
    heartbeat_timeout: float = Field(5.0, ge=1, description="Seconds before a silent watch is retried elsewhere")
    max_run: float = Field(
        6 * 3600.0,
        gt=0,
        description="Seconds one watch activity runs before the workflow continues as new (keeps its history short)",
    )


class WatchQueueInput(BaseModel):
    queue: str
    host: str | None = None
    workflow_task_queue: str = Field("", description="Where recoveries the watch starts run (the shared queue)")
    max_run: float = 6 * 3600.0
    reload_every: float = Field(0.5, gt=0, description="Seconds between reads of the registry's change stamp")
    record_every: float = Field(15.0, gt=0, description="Seconds between batched writes of probe results")


class WatchQueueResult(BaseModel):
    watched: int = 0
    recoveries_started: int = 0
    message: str = ""


class WatchersInput(BaseModel):
    task_queue: str = ""
    hosts: list[str | None] | None = Field(None, description="Queues to ensure (None: every host with services)")
    actor: str = "system"
    end_supervisors: bool = Field(True, description="Also end the supervise/* workflows of the previous version")


class WatchersResult(BaseModel):
    started: list[str] = Field(default_factory=list)
    already_running: list[str] = Field(default_factory=list)
    terminated_supervisors: list[str] = Field(default_factory=list)


class AlertsIgnoredInput(BaseModel):
    """The alerts that started or joined ``run_id`` of ``workflow_id`` turned out to need nothing."""

    workflow_id: str
    run_id: str
    reason: str
    wait: float = Field(10.0, description="Seconds to wait for the hook's alert log rows to appear")


class RecoveryResult(BaseModel):
    service_id: str
    outcome: Literal["recovered", "healthy", "gave_up", "delegated", "failed", "skipped"]
    attempts: int = 0
    message: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RecordSupervisionInput(BaseModel):
    status: SupervisorStatus
    service_state: str | None = Field(None, description="New value of the service's state column")
    events: list[dict[str, Any]] = Field(default_factory=list, description="(event_type, data) items")
    event_ids: list[str] = Field(default_factory=list)
    recovery: dict[str, Any] | None = Field(None, description="A recovery run summary to upsert")
    timestamp: datetime


class SweepInput(BaseModel):
    actor: str = "schedule"


class SweepResult(BaseModel):
    watchers_started: list[str] = Field(default_factory=list, description="Queues whose watcher the sweep started")
    supervisors_started: list[str] = Field(default_factory=list, description="Runs of the previous version only")
    recoveries_started: list[str] = Field(default_factory=list)
    supervisors_stopped: list[str] = Field(default_factory=list)
    retried: list[str] = Field(default_factory=list, description="Given-up services tried again (new version)")
    checked: int = 0
    message: str = ""


class SweepPlan(BaseModel):
    """What the sweep reconciles: services desired running (and monitored), and the given-up ones among them
    whose applied version changed since they gave up."""

    supervise: list[str] = Field(default_factory=list)
    retry: list[str] = Field(default_factory=list)
    recover: list[str] = Field(
        default_factory=list, description="Desired running, neither healthy nor in a recovery: each gets one"
    )
    hosts: list[str] = Field(default_factory=list, description="Hosts whose queues have such services ('' = shared)")


class AwaitSupervisorInput(BaseModel):
    service_id: str
    reason: str = "manual"
    actor: str = "system"
    source: str = "api"
    poll: float = 0.5
    confirm: bool = False


class AwaitSupervisorResult(BaseModel):
    supervised: bool
    attached: bool = False
    state: str = ""
    attempt: int = 0
    message: str = ""
    restarted: bool = Field(True, description="The supervisor restarted the service while this was followed")


class ControlInput(BaseModel):
    service_id: str
    action: Literal["start", "stop", "restart"]
    actor: str = "system"
    timeout: float = Field(120.0, gt=0)


class ControlResult(BaseModel):
    service_id: str
    action: str
    ok: bool
    message: str = ""
    pid: int | None = None
    supervision: str = Field("", description="paused, resumed, started or none")


class ScaleInput(BaseModel):
    """``ServiceScale``: bring a replicated service's replicas to the count its config now says."""

    service_id: str
    previous: int = Field(ge=0, description="Replicas before the change")
    target: int = Field(ge=1, description="Replicas the API saved (the run waits until it reads that count)")
    actor: str = "system"
    timeout: float = Field(120.0, gt=0, description="Longest wait for a new replica to be ready")


class ScalePlan(BaseModel):
    spec: ServiceSpec | None = Field(None, description="The service (None: deleted meanwhile)")
    existing: list[int] = Field(default_factory=list, description="Indices of the replicas the registry has")


class ScaleResult(BaseModel):
    service_id: str
    replicas: int
    started: list[str] = Field(default_factory=list)
    stopped: list[str] = Field(default_factory=list)
    ok: bool = True
    message: str = ""


class SupervisorsInput(BaseModel):
    service_ids: list[str] = Field(default_factory=list)
    task_queue: str = ""
    actor: str = "system"
    resume: list[str] = Field(
        default_factory=list,
        description="Services whose desired state was just set to "
        "running: a paused (or given-up) supervisor of theirs resumes",
    )


class SupervisorsResult(BaseModel):
    started: list[str] = Field(default_factory=list)
    already_running: list[str] = Field(default_factory=list)
    resumed: list[str] = Field(default_factory=list)
    stopped: list[str] = Field(default_factory=list)


class SupervisorControlInput(BaseModel):
    service_id: str
    reason: str = ""
    actor: str = "system"
    task_queue: str = ""
    hold_for: float = Field(
        3600.0,
        gt=0,
        description="Seconds the hold lasts unless released first (a run that "
        "died without releasing it does not block recoveries forever)",
    )


# --------------------------------------------------------------------------- notifications


class NotifyInput(BaseModel):
    notification: Notification
    channels: list[str] | None = Field(None, description="Only these channels (by name); None = every channel")


class NotifyResult(BaseModel):
    results: list[DeliveryResult] = Field(default_factory=list)

    @property
    def delivered(self) -> list[str]:
        return [r.channel for r in self.results if r.delivered]
