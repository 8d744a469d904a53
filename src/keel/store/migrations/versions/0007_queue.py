"""queue: records submitted for workers to decide, with leases; the workers themselves

Revision ID: 0007_queue
Revises: 0006_gates
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_queue"
down_revision = "0006_gates"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "queue",
        sa.Column("record_id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("enqueued_at", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("record_id"),
    )
    op.create_index("ix_queue_claim", "queue", ["workflow", "status", "priority", "enqueued_at"])
    op.create_table(
        "workers",
        sa.Column("id", sa.String(length=100), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("heartbeat_at", sa.Float(), nullable=False),
        sa.Column("decided", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:  # pragma: no cover
    raise NotImplementedError("the queue is part of the history; no way back")
