"""Event envelope ``{event_id, event_type, timestamp, data}`` and one typed model per event's data."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class EventType(StrEnum):
    INITIALIZATION_UPDATE = "INITIALIZATION_UPDATE"
    SERVICE_STATUS_UPDATE = "SERVICE_STATUS_UPDATE"
    HEALTH_CHECK = "HEALTH_CHECK"
    METRICS_UPDATE = "METRICS_UPDATE"
    RECOVERY_UPDATE = "RECOVERY_UPDATE"
    CONFIG_CHANGED = "CONFIG_CHANGED"
    ROLLOUT_UPDATE = "ROLLOUT_UPDATE"
    SHUTDOWN_UPDATE = "SHUTDOWN_UPDATE"
    AUDIT = "AUDIT"


class Event(BaseModel):
    """The envelope every consumer sees (bus, WebSocket, webhooks)."""

    event_id: str = Field(description="Unique id; consumers de-duplicate on it")
    event_type: EventType
    timestamp: datetime
    data: dict[str, Any]

    @property
    def service_id(self) -> str | None:
        value = self.data.get("service_id")
        return value if isinstance(value, str) else None


class InitializationUpdate(BaseModel):
    run_id: str
    workflow_id: str
    status: str
    progress: int = Field(ge=0, le=100)
    component: str | None = None
    component_status: str | None = None
    message: str = ""


class ShutdownUpdate(BaseModel):
    """Progress of a system shutdown (``down/{run_id}``): the run, and the service that just moved, if any."""

    run_id: str
    workflow_id: str
    status: str
    progress: int = Field(ge=0, le=100)
    component: str | None = None
    component_status: str | None = None
    message: str = ""


class ServiceStatusUpdate(BaseModel):
    service_id: str
    state: str
    previous_state: str | None = None
    pid: int | None = None
    message: str = ""
    source: str = Field("", description="What changed it: initialization, supervisor, recovery, user")
    reason: str = Field("", description="Why the status changed (the verdict, the dependency waited for, ...)")
    since: datetime | None = Field(None, description="When the service entered this status")
    recovered: bool = Field(False, description="True on the healthy status a recovery ends with")
    recovery_seconds: float | None = Field(None, description="How long that recovery took")
    attempts: int | None = Field(None, description="Restart attempts of the recovery so far")


class HealthCheck(BaseModel):
    service_id: str
    healthy: bool
    latency_ms: float
    message: str = ""
    checked_at: datetime
    verdict: str | None = None


class MetricsUpdate(BaseModel):
    service_id: str
    health: str
    latency_ms: float | None = None
    restarts: int = 0
    availability_1h: float | None = None
    availability_24h: float | None = None


class RecoveryUpdate(BaseModel):
    service_id: str
    workflow_id: str
    status: str
    attempt: int = 0
    max_attempts: int = 0
    next_attempt_at: datetime | None = None
    message: str = ""


class ConfigChanged(BaseModel):
    service_id: str
    version: int
    author: str
    comment: str = ""
    change: str = Field("update", description="create, update, revert, delete, rollback")


class RolloutUpdate(BaseModel):
    service_id: str
    workflow_id: str
    status: str
    version: int | None = None
    message: str = ""
    rollout_id: str | None = None
    phase: str | None = None


class AuditEvent(BaseModel):
    actor: str
    action: str
    target: str = ""
    outcome: str = "success"
    request_id: str | None = None


EVENT_DATA_MODELS: dict[EventType, type[BaseModel]] = {
    EventType.INITIALIZATION_UPDATE: InitializationUpdate,
    EventType.SERVICE_STATUS_UPDATE: ServiceStatusUpdate,
    EventType.HEALTH_CHECK: HealthCheck,
    EventType.METRICS_UPDATE: MetricsUpdate,
    EventType.RECOVERY_UPDATE: RecoveryUpdate,
    EventType.CONFIG_CHANGED: ConfigChanged,
    EventType.ROLLOUT_UPDATE: RolloutUpdate,
    EventType.SHUTDOWN_UPDATE: ShutdownUpdate,
    EventType.AUDIT: AuditEvent,
}


def make_event(event_type: EventType, data: BaseModel, *, event_id: str, timestamp: datetime) -> Event:
    """Build an envelope. ``event_id``/``timestamp`` are explicit so workflows can pass deterministic ones."""
    expected = EVENT_DATA_MODELS[event_type]
    if not isinstance(data, expected):
        raise TypeError(f"{event_type} carries {expected.__name__}, not {type(data).__name__}")
    return Event(event_id=event_id, event_type=event_type, timestamp=timestamp, data=data.model_dump(mode="json"))
