"""Tables. Timestamps are timezone-aware UTC; JSON columns hold pydantic-dumped documents."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    event,
    insert,
    inspect,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column

from windflow.persistence.sealing import SealedJSON


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores aware datetimes; SQLite returns naive ones, which are UTC by construction."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONDoc = JSON().with_variant(JSONB(), "postgresql")
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class ServiceRow(Base):
    __tablename__ = "services"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSONDoc, default=dict)
    driver: Mapped[str] = mapped_column(String(32), index=True)
    monitored: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    depends_on: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    host: Mapped[str | None] = mapped_column(String(253), nullable=True)
    current_version: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    search_text: Mapped[str] = mapped_column(Text, default="")
    state: Mapped[str] = mapped_column(String(32), default="unknown", index=True)
    state_detail: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    state_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # desired state (migration 0009): only explicit acts set it (initialization, start/stop/restart, rollout)
    desired: Mapped[str | None] = mapped_column(String(16), nullable=True, index=True)  # running | stopped
    desired_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    desired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    desired_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: the config version that runs (a saved version above it is pending until a rollout applies it)
    applied_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # observed facts of the read model
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    restarts_total: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    #: the applied version when supervision gave up (the sweep tries again once another version is applied)
    gave_up_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: one replica of a replicated service (migration 0012): the service's id and this replica's index; its
    #: ``spec`` is the service's with ``{replica}`` replaced. Replicas are what runs, watched and recovered one by
    #: one; the service's own row holds the config, the desired state and the status of the whole
    replica_of: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    replica_index: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    @property
    def replicated(self) -> bool:
        """A replicated service's own row: it runs nothing itself, its replicas do."""
        return self.replica_of is None and bool((self.spec or {}).get("replicas"))


class StatusHistoryRow(Base):
    """Every change of a service's status, as the read model recorded it (migration 0012): the state timeline.

    Written by the ``services`` row's own flush (see :func:`_record_status_change`), so whatever writes the
    status, through whichever repository or session, leaves one row per change. Old rows are pruned after
    ``status_history_retention_days`` (``StatusHistoryRepository.prune``)."""

    __tablename__ = "service_status_history"
    __table_args__ = (Index("ix_service_status_history_service_at", "service_id", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(64), ForeignKey("services.id", ondelete="CASCADE"))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    state: Mapped[str] = mapped_column(String(32))
    previous_state: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)


def _history_values(target: ServiceRow, previous: str | None) -> dict[str, Any]:
    detail = target.state_detail if isinstance(target.state_detail, dict) else {}
    source, message = detail.get("source"), detail.get("message")
    return {
        "service_id": target.id,
        "at": target.state_changed_at or utcnow(),
        "state": target.state,
        "previous_state": previous,
        "source": str(source)[:64] if source else None,
        "message": str(message)[:2000] if message else None,
    }


@event.listens_for(ServiceRow, "after_insert")
def _record_first_status(_mapper: Mapper[Any], connection: Connection, target: ServiceRow) -> None:
    if target.state is not None:
        connection.execute(insert(StatusHistoryRow).values(**_history_values(target, None)))


@event.listens_for(ServiceRow, "after_update")
def _record_status_change(_mapper: Mapper[Any], connection: Connection, target: ServiceRow) -> None:
    """One history row per change of ``services.state``, in the flush (so the transaction) that changed it."""
    history = inspect(target).attrs.state.history
    if not history.has_changes():
        return
    before = history.deleted[0] if history.deleted else None
    if before == target.state:
        return
    connection.execute(insert(StatusHistoryRow).values(**_history_values(target, before)))


class ConfigVersionRow(Base):
    __tablename__ = "config_versions"
    __table_args__ = (UniqueConstraint("service_id", "version", name="uq_config_versions_service_version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(64), ForeignKey("services.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    content_hash: Mapped[str] = mapped_column(String(64))
    author: Mapped[str] = mapped_column(String(128))
    comment: Mapped[str] = mapped_column(Text, default="")
    reverted_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="unverified")  # unverified | good | bad
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ConfigTemplateRow(Base):
    __tablename__ = "config_templates"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    description: Mapped[str] = mapped_column(Text, default="")
    parameters: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    content: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditRow(Base):
    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_at", "at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    actor: Mapped[str] = mapped_column(String(128), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    target: Mapped[str] = mapped_column(String(256), default="")
    outcome: Mapped[str] = mapped_column(String(16), default="success")
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class RunSummaryRow(Base):
    """Initializations, recoveries and rollouts as they ended (outlives Temporal's retention)."""

    __tablename__ = "run_summaries"
    __table_args__ = (Index("ix_run_summaries_kind_started", "kind", "started_at"),)

    run_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    workflow_id: Mapped[str] = mapped_column(String(256), index=True)
    service_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    status: Mapped[str] = mapped_column(String(32), index=True)
    actor: Mapped[str] = mapped_column(String(128), default="system")
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    summary: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)


class ProbeResultRow(Base):
    __tablename__ = "probe_results"
    __table_args__ = (Index("ix_probe_results_service_checked", "service_id", "checked_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    service_id: Mapped[str] = mapped_column(String(64), ForeignKey("services.id", ondelete="CASCADE"))
    healthy: Mapped[bool] = mapped_column(Boolean)
    latency_ms: Mapped[float] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text, default="")
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


class OutboxRow(Base):
    """Events written in the same transaction as the state change they describe; relayed to the bus."""

    __tablename__ = "event_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)


from windflow.persistence import auth_models as _auth_models  # noqa: E402,F401  (users/roles/tokens tables)

# --------------------------------------------------------------------------- recovery: notifications, restart budget
# (migration 0003_recovery)


class NotificationChannelRow(Base):
    """Channels from the system file's ``notifications`` key (settings channels are not stored)."""

    __tablename__ = "notification_channels"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(SealedJSON)  # urls, headers, tokens: sealed at rest
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class NotificationLogRow(Base):
    """Every delivery attempt of a notification to a channel, delivered or not."""

    __tablename__ = "notification_log"
    __table_args__ = (
        Index("ix_notification_log_notification_channel", "notification_id", "channel"),
        Index("ix_notification_log_at", "at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    notification_id: Mapped[str] = mapped_column(String(200))
    channel: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    service_id: Mapped[str] = mapped_column(String(64), index=True)
    workflow_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    delivered: Mapped[bool] = mapped_column(Boolean)
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)


class RestartLeaseRow(Base):
    """One granted restart (global restart budget). In flight while not released and not expired."""

    __tablename__ = "restart_leases"
    __table_args__ = (Index("ix_restart_leases_acquired_at", "acquired_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    service_id: Mapped[str] = mapped_column(String(64))
    holder: Mapped[str] = mapped_column(String(256), index=True)
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


from windflow.persistence import alerts_in_models as _alerts_in_models  # noqa: E402,F401  (incoming alert webhooks)
from windflow.persistence import job_models as _job_models  # noqa: E402,F401  (runs of jobs)
from windflow.persistence import rollout_models as _rollout_models  # noqa: E402,F401  (config rollouts)
from windflow.persistence import webhooks_out_models as _webhooks_out_models  # noqa: E402,F401  (outgoing webhooks)
