"""status_history: every change of a service's status (the dashboard's state timeline)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "service_status_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("service_id", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("previous_state", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["service_id"], ["services.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_service_status_history_service_at", "service_status_history", ["service_id", "at"])
    op.create_index(op.f("ix_service_status_history_at"), "service_status_history", ["at"])
    # the services that exist already start their timeline with the status they have (since it last changed)
    op.execute(
        "INSERT INTO service_status_history (service_id, at, state, source) "
        "SELECT id, COALESCE(state_changed_at, updated_at), state, 'migration' FROM services"
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_service_status_history_at"), table_name="service_status_history")
    op.drop_index("ix_service_status_history_service_at", table_name="service_status_history")
    op.drop_table("service_status_history")
