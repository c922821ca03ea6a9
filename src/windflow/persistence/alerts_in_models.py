"""Tables of incoming alert webhooks: the registered hooks and the log of every alert they received.

Imported at the bottom of :mod:`windflow.persistence.models` so ``Base.metadata`` (and Alembic) see them.
Hook tokens are never stored: only their SHA-256 (they are high-entropy random strings).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, Index, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from windflow.persistence.models import Base, BigId, JSONDoc, UTCDateTime, utcnow
from windflow.persistence.sealing import SealedText


class HookRow(Base):
    """A registered incoming webhook (``alertmanager`` or ``generic``) and how it maps alerts to services."""

    __tablename__ = "hooks"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    config: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_prefix: Mapped[str] = mapped_column(String(24))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    token_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: token | signature | token+signature: what a delivery must carry (bearer token, Standard Webhooks HMAC)
    auth: Mapped[str] = mapped_column(String(32), default="token", server_default="token")
    #: the Standard Webhooks signing secret (``whsec_...``) when ``auth`` asks for a signature
    signing_secret: Mapped[str | None] = mapped_column(SealedText, nullable=True)  # sealed with the codec keys
    #: act without confirming: a firing alert restarts even a service whose probe passes
    force: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: seconds during which a repeat of the same alert is recorded, not acted on
    dedupe_window: Mapped[float] = mapped_column(Float, default=300.0, server_default="300")


class AlertLogRow(Base):
    """One alert received through a hook, and what windflow did with it."""

    __tablename__ = "alert_log"
    __table_args__ = (
        Index("ix_alert_log_hook_received", "hook_id", "received_at"),
        Index("ix_alert_log_service_received", "service_id", "received_at"),
        Index("ix_alert_log_hook_dedupe", "hook_id", "dedupe_key", "received_at"),
        Index("ix_alert_log_workflow_run", "workflow_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    hook_id: Mapped[str] = mapped_column(String(32))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    fingerprint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    service_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    status: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    workflow_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    #: what makes a repeat of this alert the same alert (see ``windflow.domain.alerts_in.dedupe_key``)
    dedupe_key: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: the run of ``workflow_id`` this alert started or joined
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
