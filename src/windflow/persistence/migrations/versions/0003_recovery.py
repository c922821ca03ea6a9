"""recovery: notification channels and delivery log, restart-budget leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSONDoc = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "notification_channels",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("config", JSONDoc, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "notification_log",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("notification_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("workflow_id", sa.String(length=256), nullable=True),
        sa.Column("delivered", sa.Boolean(), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_notification_log_notification_channel", "notification_log", ["notification_id", "channel"], unique=False
    )
    op.create_index("ix_notification_log_at", "notification_log", ["at"], unique=False)
    op.create_index(op.f("ix_notification_log_service_id"), "notification_log", ["service_id"], unique=False)
    op.create_table(
        "restart_leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("holder", sa.String(length=256), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_restart_leases_acquired_at", "restart_leases", ["acquired_at"], unique=False)
    op.create_index(op.f("ix_restart_leases_holder"), "restart_leases", ["holder"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_restart_leases_holder"), table_name="restart_leases")
    op.drop_index("ix_restart_leases_acquired_at", table_name="restart_leases")
    op.drop_table("restart_leases")
    op.drop_index(op.f("ix_notification_log_service_id"), table_name="notification_log")
    op.drop_index("ix_notification_log_at", table_name="notification_log")
    op.drop_index("ix_notification_log_notification_channel", table_name="notification_log")
    op.drop_table("notification_log")
    op.drop_table("notification_channels")
