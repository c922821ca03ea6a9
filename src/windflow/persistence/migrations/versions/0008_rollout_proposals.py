"""rollout_proposals: the config a rollout proposes is stored with it, not carried by the workflow input

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONDoc = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("config_rollouts") as batch:
        batch.add_column(sa.Column("proposal", JSONDoc, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("config_rollouts") as batch:
        batch.drop_column("proposal")
