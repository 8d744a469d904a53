"""ledger: row digests on every segment, and a keyed global ledger of blocks sealing them

Revision ID: 0004_ledger
Revises: 0003_segments

Each segment now commits to the digests of the record's rows written with it (its input, the
model's answers, the decision), and each write transaction seals its segments into one block of
a global ledger whose hashes are keyed (HMAC) with a key kept outside the database.

A store from before this revision is sealed as it stands: every record gets one `sealed`
segment committing to its rows as they are now, and one ledger block seals every segment.
Verify the trail (`keel audit verify`) before upgrading a store whose history must stay
provable: the upgrade vouches for what it finds.

Circuit breakers are now kept per workflow and model version: the table is made anew, so every
breaker starts closed after the upgrade.
"""

from __future__ import annotations

import time

import sqlalchemy as sa
from alembic import op

from keel import _json
from keel._record import Event
from keel.store._audit import GENESIS, AuditKey, segment_hash
from keel.store._ledger import DECISION_COLS, current_digests, seal

#: the decision columns at this revision (later ones are nullable and left out of digests)
_DECISION_COLS_0004 = DECISION_COLS[:DECISION_COLS.index("release_id")]

revision = "0004_ledger"
down_revision = "0003_segments"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch:
        batch.add_column(sa.Column("digests", sa.Text(), nullable=True))
        batch.add_column(sa.Column("block", sa.Integer(), nullable=True))
        batch.create_index("ix_events_block", ["block"], unique=False)
    op.create_table(
        "ledger",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("key_id", sa.String(length=32), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
    )
    head = op.create_table(
        "ledger_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    op.drop_table("breakers")
    op.create_table(
        "breakers",
        sa.Column("workflow", sa.String(length=200), nullable=False),
        sa.Column("model_version", sa.String(length=200), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("opened_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("workflow", "model_version"),
    )
    _seal_existing(op.get_bind())


def _seal_existing(conn: sa.Connection) -> None:
    """One `sealed` segment per existing record, then one block over every segment."""
    heads = conn.execute(sa.text(
        "SELECT e.record_id, e.seq, e.hash, e.workflow FROM events e JOIN "
        "(SELECT record_id, MAX(seq) AS seq FROM events GROUP BY record_id) m "
        "ON m.record_id = e.record_id AND m.seq = e.seq")).all()
    if not heads:
        return
    now = time.time()
    text = _json.dumps([Event("sealed", now, {"by": "migration 0004_ledger"}).entry()])
    for start in range(0, len(heads), 500):
        part = heads[start:start + 500]
        digests = current_digests(conn, [h[0] for h in part], _DECISION_COLS_0004)
        rows = []
        for rid, seq, prev, workflow in part:
            found = digests.text(rid) or None
            h = segment_hash(prev, rid, seq + 1, workflow, now, text, found)
            rows.append({"record_id": rid, "seq": seq + 1, "workflow": workflow, "at": now,
                         "entries": text, "prev_hash": prev, "hash": h, "digests": found})
        conn.execute(sa.text(
            "INSERT INTO events (record_id, seq, workflow, at, entries, prev_hash, hash, digests) "
            "VALUES (:record_id, :seq, :workflow, :at, :entries, :prev_hash, :hash, :digests)"),
            rows)
    key = AuditKey.resolve(create=True)
    assert key is not None
    every = [tuple(r) for r in conn.execute(sa.text(
        "SELECT record_id, seq, workflow, at, entries, prev_hash, hash FROM events"))]
    block = seal(conn, key, every)
    conn.execute(sa.text("UPDATE events SET block = :b"), {"b": block})


def downgrade() -> None:  # pragma: no cover - the trail is append-only; no way back
    raise NotImplementedError("the ledger cannot be removed from an audit trail")
