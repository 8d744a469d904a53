"""The store's tables (SQLAlchemy Core). Times are Unix epoch seconds (``*_at`` columns).

JSON payloads are stored as text written by keel (canonical, sorted keys) so the same bytes
land on SQLite and PostgreSQL and the audit hash chain can be recomputed anywhere.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

workflows = Table(
    "workflows", metadata,
    Column("name", String(200), primary_key=True),
    Column("version", String(64), nullable=False),
    Column("source_path", Text),
    Column("spec", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

model_versions = Table(
    "model_versions", metadata,
    Column("version", String(200), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("kind", String(50), nullable=False),
    Column("artifact_hash", String(128)),
    Column("training_data_hash", String(128)),
    Column("metrics", Text),
    Column("alias", String(50)),
    Column("created_at", Float, nullable=False),
)

runs = Table(
    "runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("kind", String(20), nullable=False),  # run | replay | serve
    Column("source", Text),
    Column("started_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("summary", Text),
)

records = Table(
    "records", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("key", String(500), nullable=False),
    Column("input", Text, nullable=False),
    Column("source", Text),
    Column("run_id", String(32)),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("workflow", "key", name="uq_records_workflow_key"),
    sqlite_with_rowid=False,
)

predictions = Table(
    "predictions", metadata,
    Column("record_id", String(32), nullable=False),
    Column("step", String(100), nullable=False),
    Column("model_version", String(200), nullable=False),
    Column("output", Text),
    Column("confidence", Float, nullable=False),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("latency_ms", Float),
    Column("metadata", Text),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("record_id", "step", name="pk_predictions"),
    sqlite_with_rowid=False,
)

decisions = Table(
    "decisions", metadata,
    Column("record_id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("disposition", String(20), nullable=False),
    Column("reason", Text),
    Column("output", Text),
    Column("confidence", Float),
    Column("model_version", String(200)),
    Column("decided_by", String(200)),
    Column("policy_version", String(100)),
    Column("audit", Boolean, nullable=False, default=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("failed_attempts", Integer, nullable=False, default=0),  # migration 0003
    Column("latency_ms", Float),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("decided_at", Float, nullable=False),
    Column("release_id", String(64)),  # migration 0005: the release that decided it
    Index("ix_decisions_workflow_disposition", "workflow", "disposition"),
    Index("ix_decisions_workflow_decided_at", "workflow", "decided_at"),
    sqlite_with_rowid=False,
)

# Migration 0003: the audit trail stores one segment per record per transaction: the events
# written together (as a JSON array), hash-chained to the record's previous segment.
events = Table(
    "events", metadata,
    Column("record_id", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Column("entries", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    # Migration 0004: the digests of the record's rows this transaction wrote (part of the
    # hash), and the ledger block that seals the segment.
    Column("digests", Text),
    Column("block", Integer),
    PrimaryKeyConstraint("record_id", "seq", name="pk_events"),
    Index("ix_events_block", "block"),
    sqlite_with_rowid=False,
)

# Migration 0004: one block per write transaction, sealing its segments; HMAC-chained.
ledger = Table(
    "ledger", metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", Float, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("count", Integer, nullable=False),
    Column("digest", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("hash", String(64), nullable=False),
)

# The ledger's head, one row: writers take the next block number from it under its row lock.
ledger_head = Table(
    "ledger_head", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

review_tasks = Table(
    "review_tasks", metadata,
    Column("id", String(32), primary_key=True),
    Column("record_id", String(32), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("reason", String(50), nullable=False),
    Column("detail", Text),
    Column("priority", Integer, nullable=False, default=50),
    Column("status", String(20), nullable=False),  # open | decided | cancelled
    Column("queue", String(200), nullable=False, default="default"),
    Column("created_at", Float, nullable=False),
    Column("due_at", Float, nullable=False),
    Column("escalated_at", Float),
    Column("claimed_by", String(200)),
    Column("claimed_at", Float),  # migration 0008: when the reviewer holding it claimed it
    Column("lease_until", Float),
    Column("decided_by", String(200)),
    Column("decided_at", Float),
    Column("decision", String(20)),  # accept | correct | reject
    Column("output", Text),
    Column("note", Text),
    Column("parent_id", String(32)),  # second review of this task
    Index("ix_review_tasks_open", "workflow", "status", "priority"),
    Index("ix_review_tasks_record", "record_id"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("record_id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("source", Text),
    Column("violations", Text, nullable=False),
    Column("status", String(20), nullable=False),  # open | replayed
    Column("created_at", Float, nullable=False),
    Column("replayed_at", Float),
)

sinks = Table(
    "sinks", metadata,
    Column("name", String(500), primary_key=True),
    Column("kind", String(20), nullable=False),
    Column("offset_bytes", Integer, nullable=False, default=0),
    Column("updated_at", Float, nullable=False),
)

deliveries = Table(
    "deliveries", metadata,
    Column("sink", String(500), nullable=False),
    Column("record_id", String(32), nullable=False),
    Column("status", String(20), nullable=False),  # delivered | pending | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("updated_at", Float, nullable=False),
    PrimaryKeyConstraint("sink", "record_id", name="pk_deliveries"),
)

routing_policies = Table(
    "routing_policies", metadata,
    Column("version", String(100), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("params", Text, nullable=False),
    Column("evidence", Text),
    Column("active", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

# Migration 0004: keyed by workflow and model version (was model version alone).
breakers = Table(
    "breakers", metadata,
    Column("workflow", String(200), primary_key=True),
    Column("model_version", String(200), primary_key=True),
    Column("state", String(20), nullable=False),
    Column("failures", Integer, nullable=False, default=0),
    Column("opened_at", Float),
    Column("updated_at", Float, nullable=False),
)

api_keys = Table(
    "api_keys", metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200)),
    Column("role", String(20), nullable=False),
    Column("hash", String(128), nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("last_used_at", Float),
)

alerts = Table(
    "alerts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workflow", String(200), nullable=False),
    Column("rule", String(200), nullable=False),
    Column("state", String(20), nullable=False),  # firing | resolved
    Column("value", Float),
    Column("detail", Text),
    Column("fired_at", Float, nullable=False),
    Column("resolved_at", Float),
)

profiles = Table(
    "profiles", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("source", Text),
    Column("profile", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

# Migration 0002_review: every review and audit decision is a labelled example with lineage.
labels = Table(
    "labels", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("record_id", String(32), nullable=False),
    Column("task_id", String(32), nullable=False),
    Column("key", String(500), nullable=False),
    Column("input", Text, nullable=False),
    Column("model_output", Text),          # what the model said (None when it failed)
    Column("label", Text),                 # the accepted or corrected output; None on reject
    Column("decision", String(20), nullable=False),  # accept | correct | reject
    Column("model_correct", Boolean, nullable=False),
    Column("confidence", Float),
    Column("model_version", String(200)),
    Column("policy_version", String(100)),
    Column("reason", String(50), nullable=False),    # why the task existed
    Column("sampled", Boolean, nullable=False),      # in the uniform audit sample of traffic
    Column("reviewer", String(200), nullable=False),
    Column("decided_at", Float, nullable=False),
    Column("note", Text),
    UniqueConstraint("task_id", name="uq_labels_task"),
    Index("ix_labels_workflow_at", "workflow", "decided_at"),
)


# Migration 0005: releases (what decides a record, versioned), their aliases and history,
# rollouts (shadow and canary), evaluation runs, and the challenger's shadow answers.
releases = Table(
    "releases", metadata,
    Column("id", String(64), primary_key=True),          # content hash of the spec
    Column("workflow", String(200), nullable=False),
    Column("name", String(200), nullable=False),
    Column("spec", Text, nullable=False),                  # model, prompt, contract, policy, fallback
    Column("model_version", String(200), nullable=False),
    Column("artifact", String(64)),                        # release_artifacts.sha256 (runnable)
    Column("created_at", Float, nullable=False),
    Column("created_by", String(200)),
    Column("note", Text),                                  # why it was made
    UniqueConstraint("workflow", "name", name="uq_releases_workflow_name"),
)

release_artifacts = Table(
    "release_artifacts", metadata,
    Column("sha256", String(64), primary_key=True),
    Column("data", LargeBinary, nullable=False),           # the model, pickled
    Column("size", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
)

release_aliases = Table(
    "release_aliases", metadata,
    Column("workflow", String(200), nullable=False),
    Column("alias", String(50), nullable=False),           # champion | challenger
    Column("release_id", String(64), nullable=False),
    Column("since", Float, nullable=False),
    PrimaryKeyConstraint("workflow", "alias", name="pk_release_aliases"),
)

release_events = Table(
    "release_events", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(50), nullable=False),
    Column("release_id", String(64)),
    Column("alias", String(50)),
    Column("actor", String(200)),
    Column("reason", Text),
    Column("evidence", Text),
    Index("ix_release_events_workflow_at", "workflow", "at"),
)

rollouts = Table(
    "rollouts", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("challenger", String(64), nullable=False),
    Column("champion", String(64), nullable=False),
    Column("mode", String(20), nullable=False),            # shadow | canary
    Column("steps", Text, nullable=False),                 # canary shares, e.g. [5, 25, 50, 100]
    Column("step", Integer, nullable=False),
    Column("status", String(20), nullable=False),  # running paused promoted rolled_back aborted
    Column("settings", Text, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("step_started_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("evidence", Text),
    Index("ix_rollouts_workflow_status", "workflow", "status"),
)

eval_runs = Table(
    "eval_runs", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("release_id", String(64), nullable=False),
    Column("against_id", String(64)),
    Column("data_hash", String(64), nullable=False),
    Column("rows", Integer, nullable=False),
    Column("metrics", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Index("ix_eval_runs_workflow_release", "workflow", "release_id"),
)

shadow_answers = Table(
    "shadow_answers", metadata,
    Column("record_id", String(32), nullable=False),
    Column("release_id", String(64), nullable=False),
    Column("workflow", String(200), nullable=False),
    Column("output", Text),
    Column("confidence", Float),
    Column("error", Text),
    Column("step", String(100)),                           # which link of the chain answered
    Column("agrees", Boolean),                             # with the deciding release's answer
    Column("latency_ms", Float),
    Column("cost_usd", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
    PrimaryKeyConstraint("record_id", "release_id", name="pk_shadow_answers"),
    Index("ix_shadow_answers_release", "release_id"),
)

# Migration 0006: construction stages and their history, approvers' signatures, recovery drills.
stages = Table(
    "stages", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("stage", String(20), nullable=False),           # prototype | mvp | production
    Column("at", Float, nullable=False),
    Column("actor", String(200)),
    Column("reason", Text),
    Column("override", Boolean, nullable=False),
    Column("evidence", Text),                              # the gate report it rested on
    Index("ix_stages_workflow_at", "workflow", "at"),
)

gate_signatures = Table(
    "gate_signatures", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("kind", String(50), nullable=False),            # security_review | operational_signoff
    Column("signer", String(200), nullable=False),
    Column("key_id", String(32)),
    Column("workflow_version", String(64)),
    Column("note", Text),
    Column("at", Float, nullable=False),
    Index("ix_gate_signatures_workflow", "workflow", "kind"),
)

drills = Table(
    "drills", metadata,
    Column("id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("workflow_version", String(64)),
    Column("ok", Boolean, nullable=False),
    Column("result", Text, nullable=False),
    Column("at", Float, nullable=False),
    Index("ix_drills_workflow_at", "workflow", "at"),
)

# Migration 0007: records submitted for workers (`keel submit`, `keel worker`), and the workers.
budget_windows = Table(  # migration 0008: a budget's reservations and spend per period
    "budget_windows",
    metadata,
    Column("workflow", String(200), primary_key=True),
    Column("period", String(10), primary_key=True),        # day | month
    Column("window", String(10), primary_key=True),        # 2026-12-06 | 2026-12
    Column("spent_usd", Float, nullable=False),
    Column("reserved_usd", Float, nullable=False),
    Column("spent_tokens", BigInteger, nullable=False),
    Column("reserved_tokens", BigInteger, nullable=False),
    Column("refused", Integer, nullable=False),            # records turned away
    Column("updated_at", Float, nullable=False),
)

queue = Table(
    "queue", metadata,
    Column("record_id", String(32), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("enqueued_at", Float, nullable=False),
    Column("status", String(20), nullable=False),          # pending | leased | done
    Column("owner", String(100)),                          # the worker holding the lease
    Column("lease_until", Float),
    Column("attempts", Integer, nullable=False),           # claims so far (a poison record counts up)
    Index("ix_queue_claim", "workflow", "status", "priority", "enqueued_at"),
)

workers = Table(
    "workers", metadata,
    Column("id", String(100), primary_key=True),
    Column("workflow", String(200), nullable=False),
    Column("host", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("decided", Integer, nullable=False),
    Column("status", String(20), nullable=False),          # working | stopped
)

#: token buckets shared by every process on the store (``RateLimits(shared=True)``)
rate_buckets = Table(
    "rate_buckets", metadata,
    Column("key", String(300), primary_key=True),          # workflow / model version / limit
    Column("level", Float, nullable=False),                # units left (may go below zero)
    Column("stamp", Float, nullable=False),                # when it was last refilled
)
