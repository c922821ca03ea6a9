"""System shutdown (``SystemShutdown``, id ``down/{run_id}``): what it is asked, its live state, what it records."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from windflow.domain.models import ServiceSpec


class ShutdownStatus(StrEnum):
    PENDING = "PENDING"
    STOPPING = "STOPPING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # at least one service could not be stopped
    CANCELLED = "CANCELLED"


TERMINAL_SHUTDOWN = frozenset({ShutdownStatus.COMPLETED, ShutdownStatus.FAILED, ShutdownStatus.CANCELLED})


class StopStatus(StrEnum):
    PENDING = "pending"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    SKIPPED = "skipped"  # not reached: the shutdown was cancelled first


class ShutdownComponent(BaseModel):
    service_id: str
    layer: int = Field(description="0 is stopped first (nothing running depends on it)")
    status: StopStatus = StopStatus.PENDING
    message: str = ""
    requested: bool = Field(description="Named in the request (false: a dependant, stopped before it)")
    started_at: datetime | None = None
    finished_at: datetime | None = None


class ShutdownState(BaseModel):
    run_id: str
    workflow_id: str
    status: ShutdownStatus = ShutdownStatus.PENDING
    actor: str
    reason: str = ""
    requested: list[str] = Field(default_factory=list, description="Services named; empty = all of them")
    layers: list[list[str]] = Field(default_factory=list, description="Stop order: one list per layer")
    components: dict[str, ShutdownComponent] = Field(default_factory=dict)
    progress: int = Field(0, ge=0, le=100)
    message: str = ""
    started_at: datetime
    finished_at: datetime | None = None


class ShutdownInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run_id: str
    services: list[str] = Field(default_factory=list, description="Service ids; empty = every service")
    actor: str
    reason: str = ""


class ShutdownPlan(BaseModel):
    """Layers to stop (dependants first) and the specs of every service in them; ``unknown``: ids not found."""

    layers: list[list[str]] = Field(default_factory=list)
    specs: list[ServiceSpec] = Field(default_factory=list)
    unknown: list[str] = Field(default_factory=list)


class RecordShutdownInput(BaseModel):
    state: ShutdownState
    final: bool = False
    events: list[dict[str, Any]] = Field(default_factory=list, description="SHUTDOWN_UPDATE data items")
    event_ids: list[str] = Field(default_factory=list)
    timestamp: datetime


def shutdown_layers(graph: dict[str, list[str]], requested: list[str]) -> tuple[list[list[str]], set[str]]:
    """The stop order for ``requested`` (all when empty) plus everything that depends on them, dependants first.

    Returns the layers and the set of services in them. A service is stopped only once every service that depends
    on it (and is being stopped) has stopped: the reverse of the start order."""
    from windflow.domain.graph import dependants, layers

    chosen = set(graph) if not requested else set(requested)
    for name in list(chosen):
        chosen |= dependants(graph, name)
    sub = {name: [d for d in graph.get(name, []) if d in chosen] for name in chosen}
    return [sorted(layer) for layer in reversed(layers(sub))], chosen
