"""audit segments: one hash-chained row per record per transaction; failed attempts per decision

Revision ID: 0003_segments
Revises: 0002_review, 0002_serve

The audit trail kept one row per event, each hashed and chained. Writing four of them per
record cost more than deciding it, so a record's events written in one transaction now share
one row (a segment: the events as a JSON array), chained to the record's previous segment.
Existing events are carried over one per segment, in order, and their chains rebuilt: verify
the trail (`keel audit verify`) before upgrading a store whose history must stay provable.

The model error rate (an alert signal) was counted from events; it now comes from the
decisions, which count each record's failed model calls.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from keel import _json
from keel._record import Event
from keel.store._audit import GENESIS, segment_hash

revision = "0003_segments"
down_revision = ("0002_review", "0002_serve")
branch_labels = None
depends_on = None

_OLD = ("record_id", "workflow", "seq", "kind", "at", "actor", "model_version", "latency_ms",
        "cost_usd", "detail")


def _segments(rows: sa.CursorResult) -> list[dict[str, object]]:  # type: ignore[type-arg]
    out: list[dict[str, object]] = []
    last, prev, seq = None, GENESIS, 0
    for row in rows:
        rid, workflow, _seq, kind, at, actor, mv, lat, cost, detail = row
        if rid != last:
            last, prev, seq = rid, GENESIS, 0
        seq += 1
        text = _json.dumps([Event(kind, at, _json.loads(detail), actor, mv, lat, cost).entry()])
        h = segment_hash(prev, rid, seq, workflow, at, text)
        out.append({"record_id": rid, "seq": seq, "workflow": workflow, "at": at,
                    "entries": text, "prev_hash": prev, "hash": h})
        prev = h
    return out


def upgrade() -> None:
    op.add_column("decisions", sa.Column("failed_attempts", sa.Integer(), nullable=False,
                                         server_default="0"))
    op.drop_index("ix_events_workflow_at", table_name="events")
    op.rename_table("events", "events_v1")
    segments = op.create_table(
        "events",
        sa.Column("record_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("entries", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "seq", name="pk_events"),
        sqlite_with_rowid=False,
    )
    cols = ", ".join(f'"{c}"' for c in _OLD)
    old = op.get_bind().execute(sa.text(f"SELECT {cols} FROM events_v1 ORDER BY record_id, seq"))
    rows = _segments(old)
    if rows:
        op.bulk_insert(segments, rows)
    op.drop_table("events_v1")


def downgrade() -> None:  # pragma: no cover - the trail is append-only; no way back
    raise NotImplementedError("audit segments cannot be split back into event rows")
