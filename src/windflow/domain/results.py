"""What drivers and probes report. Plain pydantic models: they cross the Temporal boundary."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class ProbeResult(BaseModel):
    healthy: bool
    latency_ms: float = Field(ge=0)
    message: str = ""
    checked_at: datetime


class RunStatus(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    UNKNOWN = "unknown"


class ServiceStatus(BaseModel):
    """What a driver sees of a service right now."""

    status: RunStatus
    pid: int | None = None
    started_at: datetime | None = None
    message: str = ""


class DriverResult(BaseModel):
    """Outcome of start / stop / restart. ``changed`` is False when the call found the wanted state already."""

    ok: bool
    action: str
    changed: bool = True
    pid: int | None = None
    started_at: datetime | None = None
    message: str = ""
    output: str = Field("", description="Captured output (command driver), truncated")
    exit_code: int | None = None


class ExitInfo(BaseModel):
    """A process exit seen by a driver."""

    pid: int
    exit_code: int | None = Field(None, description="None when the process was not our child (re-adopted)")
    signal: int | None = None
    exited_at: datetime
    message: str = ""
