"""Config rollouts: the ``ConfigRollout`` workflow's input, live state and activity contracts.

A rollout validates a proposed config, saves it as a new config version, applies it (restart, or the
driver's reload), watches health for ``verify_window`` seconds and marks the version *good*; when the
new version does not stay healthy it restores the last good version, applies and verifies that one.
Pure pydantic (safe inside workflows): no field reads a clock or randomness by default.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field

from windflow.domain.models import ServiceSpec

DEFAULT_VERIFY_WINDOW = 30.0
MAX_VERIFY_WINDOW = 3600.0
#: probes kept per verification (the evidence of a verdict)
MAX_PROBES = 100


class RolloutStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    ROLLING_BACK = "ROLLING_BACK"
    SUCCEEDED = "SUCCEEDED"
    ROLLED_BACK = "ROLLED_BACK"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_ROLLOUT = frozenset(
    {RolloutStatus.SUCCEEDED, RolloutStatus.ROLLED_BACK, RolloutStatus.FAILED, RolloutStatus.CANCELLED}
)


class RolloutPhase(StrEnum):
    PENDING = "pending"
    VALIDATING = "validating"
    PAUSING_SUPERVISION = "pausing_supervision"
    SAVING = "saving"
    APPLYING = "applying"
    VERIFYING = "verifying"
    MARKING_GOOD = "marking_good"
    RESTORING = "restoring"
    REAPPLYING = "reapplying"
    REVERIFYING = "reverifying"
    RESUMING_SUPERVISION = "resuming_supervision"
    DONE = "done"


#: rough share of the work done when a phase starts (the live progress bar)
PHASE_PROGRESS: dict[RolloutPhase, int] = {
    RolloutPhase.PENDING: 0,
    RolloutPhase.VALIDATING: 5,
    RolloutPhase.PAUSING_SUPERVISION: 10,
    RolloutPhase.SAVING: 15,
    RolloutPhase.APPLYING: 20,
    RolloutPhase.VERIFYING: 30,
    RolloutPhase.MARKING_GOOD: 90,
    RolloutPhase.RESTORING: 55,
    RolloutPhase.REAPPLYING: 60,
    RolloutPhase.REVERIFYING: 65,
    RolloutPhase.RESUMING_SUPERVISION: 95,
    RolloutPhase.DONE: 100,
}


class RolloutInput(BaseModel):
    rollout_id: str
    service_id: str
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="Not used: the proposed config is stored with the rollout (by the API, under `rollout_id`) and "
        "loaded from there; a config given here is refused unless it is exactly the stored one",
    )
    comment: str = Field("", description="Shown in the Temporal UI; the stored rollout's comment is the one saved")
    actor: str = Field("system", description="Shown in the Temporal UI; the author saved is the stored rollout's")
    verify_window: float = Field(DEFAULT_VERIFY_WINDOW, gt=0, le=MAX_VERIFY_WINDOW)
    expected_version: int | None = Field(None, description="Refuse the save if the current version is not this")


class RolloutProbe(BaseModel):
    """One observation while verifying: the process is running and the probe passed (or not)."""

    at: datetime
    healthy: bool
    running: bool
    latency_ms: float = 0.0
    message: str = ""
    verdict: str = "unknown"
    since_apply: float = Field(0.0, description="Seconds since the config was applied")


class RolloutVerification(BaseModel):
    """The verdict on one applied version, with its evidence."""

    version: int
    healthy: bool | None = Field(None, description="None while verifying")
    message: str = ""
    checks: int = 0
    failures: int = 0
    started_at: datetime
    finished_at: datetime | None = None
    probes: list[RolloutProbe] = Field(default_factory=list)


class PhaseChange(BaseModel):
    phase: RolloutPhase
    at: datetime
    message: str = ""


class RolloutState(BaseModel):
    """What the ``status`` query returns, the store keeps and the events summarize."""

    rollout_id: str
    service_id: str
    workflow_id: str
    actor: str = "system"
    comment: str = ""
    verify_window: float = DEFAULT_VERIFY_WINDOW
    status: RolloutStatus = RolloutStatus.PENDING
    phase: RolloutPhase = RolloutPhase.PENDING
    progress: int = 0
    message: str = ""
    previous_version: int | None = Field(None, description="The current version when the rollout started")
    good_version: int | None = Field(None, description="The last good version: what a rollback restores")
    new_version: int | None = None
    restored_version: int | None = Field(None, description="The version a rollback saved (a copy of good_version)")
    marked_good: int | None = Field(None, description="The version this rollout marked good")
    supervision: str = Field("none", description="none | paused | resumed")
    cancelled: bool = False
    verification: RolloutVerification | None = None
    rollback_verification: RolloutVerification | None = None
    problems: list[dict[str, Any]] = Field(default_factory=list)
    phases: list[PhaseChange] = Field(default_factory=list)
    started_at: datetime | None = None
    finished_at: datetime | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_ROLLOUT


# --------------------------------------------------------------------------- activities


class PrepareRolloutInput(BaseModel):
    service_id: str
    config: dict[str, Any] = Field(default_factory=dict, description="Refused unless empty or the stored proposal")
    rollout_id: str = Field("", description="The stored rollout whose proposal is validated")


class PrepareRolloutResult(BaseModel):
    valid: bool
    problems: list[dict[str, Any]] = Field(default_factory=list)
    spec: ServiceSpec | None = None
    current_version: int | None = None
    good_version: int | None = Field(None, description="The last version marked good, else the current one")
    good_is_implicit: bool = Field(False, description="No version was ever marked good: the current one counts")
    unchanged: bool = False


class SaveRolloutInput(BaseModel):
    rollout_id: str
    spec: ServiceSpec
    expected_version: int
    good_version: int
    mark_good_first: bool = Field(False, description="Mark good_version good first (it was so implicitly)")
    author: str
    comment: str = ""


class SaveRolloutResult(BaseModel):
    version: int
    changed: bool = True


class RestoreRolloutInput(BaseModel):
    rollout_id: str
    service_id: str
    good_version: int
    bad_version: int
    author: str


class RestoreRolloutResult(BaseModel):
    version: int
    spec: ServiceSpec


class ApplyRolloutInput(BaseModel):
    spec: ServiceSpec
    requested_at: datetime = Field(description="A process started after this was started by this very apply")
    rollout_id: str = ""


class ApplyRolloutResult(BaseModel):
    action: str = Field(description="restart | reload | none")
    pid: int | None = None
    message: str = ""


class ProbeRolloutInput(BaseModel):
    spec: ServiceSpec


class MarkVersionInput(BaseModel):
    service_id: str
    version: int
    status: str = Field(description="good | bad")


class RecordRolloutInput(BaseModel):
    state: RolloutState
    final: bool = False
    events: list[dict[str, Any]] = Field(default_factory=list, description="ROLLOUT_UPDATE data items")
    event_ids: list[str] = Field(default_factory=list)
    timestamp: datetime
