"""replicas: a replicated service's replicas are rows of their own (id ``SERVICE/K``) that name their service

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.add_column(sa.Column("replica_of", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("replica_index", sa.Integer(), nullable=True))
        batch.create_index("ix_services_replica_of", ["replica_of"])


def downgrade() -> None:
    with op.batch_alter_table("services") as batch:
        batch.drop_index("ix_services_replica_of")
        batch.drop_column("replica_index")
        batch.drop_column("replica_of")
