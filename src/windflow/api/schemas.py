"""Request and response models of the REST API (``XCreate`` / ``XPublic`` per entity)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from windflow.api.bodies import VERSION_MAX, RequestBody
from windflow.domain.models import REPLICAS_MAX, ServiceSpec, is_service_id
from windflow.domain.redaction import redact
from windflow.persistence.models import AuditRow, ConfigTemplateRow, ConfigVersionRow, ServiceRow

T = TypeVar("T")


class PageOf(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(None, description="Pass as `cursor` to get the next page; null at the end")


class ServiceCreate(ServiceSpec):
    """A new service: its full definition."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "cache",
                    "driver": "process",
                    "config": {"command": ["redis-server", "--port", "6390"]},
                    "health": {"kind": "tcp", "port": 6390},
                    "labels": {"tier": "data"},
                }
            ]
        }
    )

    @field_validator("id")
    @classmethod
    def _declared_id(cls, value: str) -> str:
        if not is_service_id(value):  # `SERVICE/K` names a replica windflow derives, never a declared service
            raise ValueError(
                "must be a service id: lower-case letters, digits, '-' and '_' ('/' is reserved for replicas)"
            )
        return value


class ServicePatch(RequestBody):
    """Change a service's desired state in place."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"replicas": 3}]})

    replicas: int = Field(
        ge=1,
        le=REPLICAS_MAX,
        strict=True,
        description="Replicas of a replicated service: new ones start in index order, the highest "
        "indices stop first (a `ServiceScale` run, `scale/{id}`)",
    )


class ScaleAccepted(BaseModel):
    service_id: str
    replicas: int
    previous: int
    workflow_id: str
    version: int = Field(description="The config version that records the new count")
    links: dict[str, str]


def conditions_of(depends_on: Any) -> dict[str, str]:
    """Each dependency's condition from a stored ``depends_on`` (a list: all ``healthy``; or a map)."""
    if isinstance(depends_on, dict):
        return {k: str((v or {}).get("condition", "healthy")) for k, v in depends_on.items()}
    return dict.fromkeys(depends_on or [], "healthy")


class JobSettings(BaseModel):
    success_exit_codes: list[int]
    timeout: str | float | None = Field(None, description="Longest run of one attempt")
    run: str = Field(description="always or once")


class JobRunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    service_id: str
    version: int
    run_id: str | None
    attempt: int
    succeeded: bool
    exit_code: int | None
    started_at: datetime
    finished_at: datetime
    duration: float = Field(description="Seconds")
    message: str
    log_tail: list[str] = Field(description="The last lines of its stderr (or stdout when stderr is empty)")


class ReplicaPublic(BaseModel):
    id: str = Field(description="`SERVICE/K`")
    index: int
    state: str
    pid: int | None = None
    desired: str | None = None
    message: str = ""
    state_changed_at: datetime | None = None
    restarts_total: int = 0

    @classmethod
    def of(cls, row: ServiceRow) -> ReplicaPublic:
        return cls(
            id=row.id,
            index=row.replica_index or 0,
            state=row.state,
            pid=row.pid,
            desired=row.desired,
            message=str((row.state_detail or {}).get("message") or ""),
            state_changed_at=row.state_changed_at,
            restarts_total=row.restarts_total or 0,
        )


class StatusChange(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    at: datetime = Field(description="When the service entered this status")
    state: str
    previous_state: str | None = None
    source: str | None = Field(None, description="What recorded it (watcher, recovery, control, initialization...)")
    message: str | None = None


class StatusHistory(BaseModel):
    """A service's status over ``[since, until)``: the bands are ``initial`` from ``since`` to the first change,
    then each change until the next (the last until ``until``)."""

    service_id: str
    since: datetime
    until: datetime
    initial: StatusChange | None = Field(
        description="The status the service had at `since` (when it began, and "
        "from what); null: its first recorded status is later"
    )
    changes: list[StatusChange] = Field(description="Changes inside the range, oldest first")
    truncated: bool = Field(description="More changes than `limit` in the range: narrow it to see the rest")
    current_state: str = Field(description="The service's status now")
    retention_days: float = Field(description="Changes older than this are pruned (each service keeps its newest)")


class ServicePublic(BaseModel):
    id: str
    description: str
    labels: dict[str, str]
    driver: str
    config: dict[str, Any]
    depends_on: list[str]
    conditions: dict[str, str] = Field(
        default_factory=dict, description="Each dependency's condition: started, healthy or completed_successfully"
    )
    kind: str = Field("service", description="service (long-running) or job (runs to completion)")
    job: JobSettings | None = Field(None, description="A job's settings (null for a service)")
    last_job_run: dict[str, Any] | None = Field(
        None, description="A job's last run: version, succeeded, exit_code, duration (s), finished_at, attempt"
    )
    health: dict[str, Any] | None
    readiness: dict[str, Any] | None = Field(None, description="Readiness probe (else `health`): gates dependants")
    liveness: dict[str, Any] | None = Field(None, description="Liveness probe (else `health`): restarts on failure")
    restart: dict[str, Any]
    monitored: bool
    restart_with_dependencies: bool
    host: str | None
    secret_keys: list[str]
    version: int = Field(description="Current config version; send it back as If-Match to change the config")
    state: str
    state_detail: dict[str, Any]
    state_changed_at: datetime | None
    desired: str | None = Field(None, description="Desired state: running | stopped (null: never brought up)")
    desired_by: str | None = Field(None, description="Who set the desired state")
    desired_at: datetime | None = None
    desired_reason: str | None = None
    applied_version: int | None = Field(None, description="The config version that runs (null: never applied)")
    pending_version: int | None = Field(
        None, description="A saved version that is not applied yet (runs only after a rollout applies it)"
    )
    pid: int | None = Field(None, description="The service's process, while it has one")
    restarts_total: int = Field(0, description="Restarts windflow's recoveries performed")
    replicas: int | None = Field(None, description="A replicated service: how many replicas it runs")
    min_ready: int | None = Field(None, description="Replicas that must be ready for it to be healthy (null: all)")
    ready: int | None = Field(None, description="A replicated service: how many replicas are ready (`3/4 healthy`)")
    replica_of: str | None = Field(None, description="A replica (id `SERVICE/K`): its service")
    replica_index: int | None = Field(None, description="A replica: its index K")
    replica_list: list[ReplicaPublic] | None = Field(
        None, description="A replicated service (one service's GET): each replica's status and process"
    )
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ServiceRow) -> ServicePublic:
        spec = row.spec
        kind = str(spec.get("kind") or "service")
        secret_keys = list(spec.get("secret_keys") or [])
        content = redact(spec, secret_keys)
        return cls(
            id=row.id,
            description=row.description,
            labels=row.labels or {},
            driver=row.driver,
            config=content.get("config") or {},
            depends_on=list(row.depends_on or []),
            conditions=conditions_of(spec.get("depends_on")),
            kind=kind,
            job=JobSettings(
                success_exit_codes=spec.get("success_exit_codes") or [0],
                timeout=spec.get("timeout"),
                run=spec.get("run") or "always",
            )
            if kind == "job"
            else None,
            last_job_run=(row.state_detail or {}).get("job") if kind == "job" else None,
            health=content.get("health"),
            readiness=content.get("readiness"),
            liveness=content.get("liveness"),
            restart=content.get("restart") or {},
            monitored=row.monitored,
            restart_with_dependencies=bool(spec.get("restart_with_dependencies", False)),
            host=row.host,
            secret_keys=secret_keys,
            version=row.current_version,
            state=row.state,
            state_detail=row.state_detail or {},
            state_changed_at=row.state_changed_at,
            desired=row.desired,
            desired_by=row.desired_by,
            desired_at=row.desired_at,
            desired_reason=row.desired_reason,
            applied_version=row.applied_version,
            pending_version=(
                row.current_version
                if row.applied_version is not None and row.applied_version != row.current_version
                else None
            ),
            pid=row.pid,
            restarts_total=row.restarts_total or 0,
            replicas=spec.get("replicas") if row.replica_of is None else None,
            min_ready=spec.get("min_ready"),
            ready=(row.state_detail or {}).get("ready", 0) if row.replicated else None,
            replica_of=row.replica_of,
            replica_index=row.replica_index,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ConfigUpdate(RequestBody):
    content: dict[str, Any] = Field(description="The service's full definition without its id")
    expected_version: int | None = Field(None, ge=1, le=VERSION_MAX, description="Or send the If-Match header")
    comment: str = Field("", max_length=2000)


class ConfigRevert(RequestBody):
    version: int = Field(ge=1, le=VERSION_MAX, description="The version whose content becomes the new current version")
    expected_version: int | None = Field(None, ge=1, le=VERSION_MAX)
    comment: str = Field("", max_length=2000)


class ConfigVersionPublic(BaseModel):
    service_id: str
    version: int
    content: dict[str, Any]
    content_hash: str
    author: str
    comment: str
    reverted_from: int | None
    status: str
    created_at: datetime

    @classmethod
    def of(cls, row: ConfigVersionRow) -> ConfigVersionPublic:
        return cls(
            service_id=row.service_id,
            version=row.version,
            content=redact(row.content, row.content.get("secret_keys") or []),
            content_hash=row.content_hash,
            author=row.author,
            comment=row.comment,
            reverted_from=row.reverted_from,
            status=row.status,
            created_at=row.created_at,
        )


class ConfigDiff(BaseModel):
    service_id: str
    from_version: int
    to_version: int
    patch: list[dict[str, Any]] = Field(description="RFC 6902 JSON Patch turning `from` into `to` (redacted)")


class ValidationReport(BaseModel):
    valid: bool
    problems: list[dict[str, Any]] = Field(default_factory=list)
    order: list[list[str]] | None = Field(None, description="Start layers, when the graph is valid")
    conditions: dict[str, dict[str, str]] | None = Field(
        None,
        description="Each edge's condition: service -> dependency -> started | healthy | "
        "completed_successfully (the validated services' edges)",
        examples=[{"api": {"database": "healthy", "migrate": "completed_successfully"}}],
    )


class TemplateParameter(BaseModel):
    name: str
    description: str = ""
    default: Any = None
    required: bool = False


class TemplatePublic(BaseModel):
    name: str
    description: str
    parameters: list[TemplateParameter]
    content: dict[str, Any]
    builtin: bool

    @classmethod
    def of(cls, row: ConfigTemplateRow) -> TemplatePublic:
        return cls(
            name=row.name,
            description=row.description,
            parameters=[TemplateParameter.model_validate(p) for p in row.parameters],
            content=row.content,
            builtin=row.builtin,
        )


class TemplateInstantiate(RequestBody):
    service_id: str = Field(pattern=r"^[a-z0-9](?:[a-z0-9_-]{0,62}[a-z0-9])?$")
    parameters: dict[str, Any] = Field(default_factory=dict)
    create: bool = Field(False, description="Also create the service in the registry")
    comment: str = ""


class ApplyResultPublic(BaseModel):
    created: list[str]
    updated: list[str]
    unchanged: list[str]
    deleted: list[str]


class AuditPublic(BaseModel):
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    request_id: str | None
    details: dict[str, Any]

    @classmethod
    def of(cls, row: AuditRow) -> AuditPublic:
        return cls(
            id=row.id,
            at=row.at,
            actor=row.actor,
            action=row.action,
            target=row.target,
            outcome=row.outcome,
            request_id=row.request_id,
            details=row.details or {},
        )
