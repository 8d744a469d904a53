"""releases: versioned bundles that decide records, aliases, history, rollouts, eval runs

Revision ID: 0005_releases
Revises: 0004_ledger

Every decision now names the release that made it (``decisions.release_id``; null for
decisions made before releases existed).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_releases"
down_revision = "0004_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions", schema=None) as batch:
        batch.add_column(sa.Column("release_id", sa.String(length=64), nullable=True))
    op.create_table(
        "releases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("spec", sa.Text(), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("artifact", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("workflow", "name", name="uq_releases_workflow_name"),
    )
    op.create_table(
        "release_artifacts",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("sha256"),
    )
    op.create_table(
        "release_aliases",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("alias", sa.String(length=50), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("since", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("workflow", "alias", name="pk_release_aliases"),
    )
    op.create_table(
        "release_events",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=True),
        sa.Column("alias", sa.String(length=50), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_release_events_workflow_at", "release_events", ["workflow", "at"])
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("challenger", sa.String(length=64), nullable=False),
        sa.Column("champion", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("steps", sa.Text(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("settings", sa.Text(), nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("step_started_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rollouts_workflow_status", "rollouts", ["workflow", "status"])
    op.create_table(
        "eval_runs",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("against_id", sa.String(length=64), nullable=True),
        sa.Column("data_hash", sa.String(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("metrics", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_eval_runs_workflow_release", "eval_runs", ["workflow", "release_id"])
    op.create_table(
        "shadow_answers",
        sa.Column("record_id", sa.String(length=32), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("step", sa.String(length=100), nullable=True),
        sa.Column("agrees", sa.Boolean(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "release_id", name="pk_shadow_answers"),
    )
    op.create_index("ix_shadow_answers_release", "shadow_answers", ["release_id"])


def downgrade() -> None:  # pragma: no cover
    raise NotImplementedError("releases are part of the history; no way back")
