"""serve: index decisions by time for the live dashboard

Revision ID: 0002_serve
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002_serve"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.create_index("ix_decisions_workflow_decided_at", ["workflow", "decided_at"],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch_op:
        batch_op.drop_index("ix_decisions_workflow_decided_at")
