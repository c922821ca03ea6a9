"""One input and one result model per workflow, activity, signal, update and query.

Fields may be added (with defaults) without breaking histories in flight. No ``default_factory`` that
reads a clock or randomness: workflows pass ``workflow.now()`` / ``workflow.uuid4()`` explicitly.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from windflow.domain.models import ServiceSpec
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


class InitOptions(BaseModel):
    components: list[str] = Field(default_factory=list, description="Empty = all; dependencies are pulled in")
    validate_only: bool = Field(False, description="Validate configs and the graph, start nothing")
    parallelism: int | None = Field(None, ge=1, le=1000, description="Components starting at once (default: all)")
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
    attempts: int = 0
    last_error: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    healthy_at: datetime | None = None
    finished_at: datetime | None = None
    started_by_run: bool = Field(False, description="This run started it (so a rollback stops it)")


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


class CheckHealthInput(BaseModel):
    spec: ServiceSpec
    record: bool = True


class RecordInitInput(BaseModel):
    state: InitState
    final: bool = False
    events: list[dict[str, Any]] = Field(default_factory=list, description="INITIALIZATION_UPDATE data items")
    event_ids: list[str] = Field(default_factory=list)
    timestamp: datetime
