"""Tables of outgoing webhooks: the subscriptions and the log of every delivery made to them.

Imported at the bottom of :mod:`windflow.persistence.models` so ``Base.metadata`` (and Alembic) see them.

A subscription's secret is the HMAC key every delivery is signed with, so windflow must be able to use it (unlike
incoming hook tokens, which are only compared and so are kept as a digest): it is sealed with the codec keys
(:mod:`windflow.persistence.sealing`, migration 0009 made the column wide enough). The API never returns it after
creation or rotation.

A delivery row is both the queue and the log: ``state`` is ``pending`` (due at ``next_attempt_at``), ``delivered``
or ``failed``; ``attempts`` counts the sends begun and doubles as the row's version, so a dispatcher claims a
delivery with a compare-and-set on it and no two dispatchers send the same attempt.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from windflow.persistence.models import Base, BigId, JSONDoc, UTCDateTime, utcnow
from windflow.persistence.sealing import SealedText


class WebhookSubscriptionRow(Base):
    """Where to send which events, and the secret they are signed with."""

    __tablename__ = "webhook_subscriptions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(JSONDoc, default=list)  # [] = every event type
    secret: Mapped[str] = mapped_column(SealedText)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    description: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    secret_rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class WebhookDeliveryRow(Base):
    """One event (or ping) to one subscription, with its attempts and outcome."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_due", "state", "next_attempt_at"),
        Index("ix_webhook_deliveries_subscription", "subscription_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(String(40), unique=True)
    subscription_id: Mapped[str] = mapped_column(String(32), ForeignKey("webhook_subscriptions.id", ondelete="CASCADE"))
    # "<subscription>:<event_id>" for deliveries made from the bus, so an event seen twice queues once;
    # NULL for pings and redeliveries
    dedup_key: Mapped[str | None] = mapped_column(String(128), unique=True, nullable=True)
    event_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    state: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    redelivery_of: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
