"""services: desired state (running | stopped, by whom, when, why), the applied config version, and the
observed facts the status read model is built from (pid, restarts, the version a give-up happened at)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.add_column(sa.Column("desired", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("desired_by", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("desired_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("desired_reason", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("applied_version", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pid", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("restarts_total", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("gave_up_version", sa.Integer(), nullable=True))
        batch_op.create_index("ix_services_desired", ["desired"], unique=False)
    # a service windflow brought up before desired state existed keeps running: what it runs is its current version
    op.execute(
        "UPDATE services SET desired = 'running', desired_by = 'migration', applied_version = current_version "
        "WHERE state IN ('healthy', 'unhealthy', 'recovering', 'backing_off', 'blocked', 'gave_up', 'starting')"
    )
    op.execute(
        "UPDATE services SET desired = 'stopped', desired_by = 'migration', applied_version = current_version "
        "WHERE state = 'stopped'"
    )


def downgrade() -> None:
    with op.batch_alter_table("services", schema=None) as batch_op:
        batch_op.drop_index("ix_services_desired")
        for column in (
            "gave_up_version",
            "restarts_total",
            "pid",
            "applied_version",
            "desired_reason",
            "desired_at",
            "desired_by",
            "desired",
        ):
            batch_op.drop_column(column)
