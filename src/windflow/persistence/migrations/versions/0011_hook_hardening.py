"""hook_hardening: signature verification, forced hooks, replay windows; the alert log's dedup key and run id

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("hooks") as batch:
        batch.add_column(sa.Column("auth", sa.String(length=32), nullable=False, server_default="token"))
        batch.add_column(sa.Column("signing_secret", sa.Text(), nullable=True))
        batch.add_column(sa.Column("force", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("dedupe_window", sa.Float(), nullable=False, server_default="300"))
    with op.batch_alter_table("alert_log") as batch:
        batch.add_column(sa.Column("dedupe_key", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("run_id", sa.String(length=64), nullable=True))
    op.create_index("ix_alert_log_hook_dedupe", "alert_log", ["hook_id", "dedupe_key", "received_at"], unique=False)
    op.create_index("ix_alert_log_workflow_run", "alert_log", ["workflow_id", "run_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_alert_log_workflow_run", table_name="alert_log")
    op.drop_index("ix_alert_log_hook_dedupe", table_name="alert_log")
    with op.batch_alter_table("alert_log") as batch:
        batch.drop_column("run_id")
        batch.drop_column("dedupe_key")
    with op.batch_alter_table("hooks") as batch:
        batch.drop_column("dedupe_window")
        batch.drop_column("force")
        batch.drop_column("signing_secret")
        batch.drop_column("auth")
