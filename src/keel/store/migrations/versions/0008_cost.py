"""cost: when a reviewer claimed a task (handling time), and budget windows (reserved, spent)

Revision ID: 0008_cost
Revises: 0007_queue
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_cost"
down_revision = "0007_queue"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("review_tasks") as batch:
        batch.add_column(sa.Column("claimed_at", sa.Float(), nullable=True))
    op.create_table(
        "budget_windows",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("period", sa.String(length=10), nullable=False),
        sa.Column("window", sa.String(length=10), nullable=False),
        sa.Column("spent_usd", sa.Float(), nullable=False),
        sa.Column("reserved_usd", sa.Float(), nullable=False),
        sa.Column("spent_tokens", sa.BigInteger(), nullable=False),
        sa.Column("reserved_tokens", sa.BigInteger(), nullable=False),
        sa.Column("refused", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("workflow", "period", "window"),
    )


def downgrade() -> None:  # pragma: no cover
    raise NotImplementedError("cost accounting is part of the history; no way back")
