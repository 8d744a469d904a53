"""rate_buckets: rate limits shared by every process on the store (workers on many machines)

Revision ID: 0009_limits
Revises: 0008_cost
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_limits"
down_revision = "0008_cost"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(length=300), nullable=False),
        sa.Column("level", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:  # pragma: no cover
    raise NotImplementedError("no way back")
