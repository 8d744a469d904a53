"""The Store: the only place in keel that speaks SQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from keel import _json
from keel._prediction import Prediction, Usage
from keel._record import Checkpoint, Event, Item, Known, new_id
from keel.errors import NotFoundError, StoreError
from keel.store import _schema as t
from keel.store._audit import GENESIS, AuditKey, segment_hash
from keel.store._engine import insert_ignore, make_engine, resolve_url
from keel.store._ledger import (
    DECISION_COLS,
    PREDICTION_COLS,
    RECORD_COLS,
    RowDigests,
    decision_digest,
    seal,
)
from keel.store._migrate import current_heads, upgrade
from keel.store.delivery import BreakerBook, SinkLedger, owe
from keel.workflow import Policy

_CHUNK = 500  # keys per IN (...) query
__all__ = ["BreakerBook", "SinkLedger", "Store"]
_SEGMENT_COLS = ("record_id", "seq", "workflow", "at", "entries", "prev_hash", "hash", "digests",
                 "block")


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


#: From this many rows, PostgreSQL inserts go through COPY (fewer round trips and less parsing)
_COPY_FROM = 16

class Store:
    """Records, predictions, decisions, events and review tasks in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._sql: dict[tuple[Any, ...], str] = {}
        self._write_lock = threading.RLock()
        self._immediate = self.dialect == "sqlite"
        self._audit_key: AuditKey | None = None

    @property
    def audit_key(self) -> AuditKey:
        """The key that seals ledger blocks (resolved, and created if need be, on first write)."""
        if self._audit_key is None:
            key = AuditKey.resolve(create=True)
            assert key is not None
            self._audit_key = key
        return self._audit_key

    def _insert_segments(self, conn: Connection, rows: list[tuple[Any, ...]]) -> None:
        """A transaction's segments, sealed into the next ledger block (in the same transaction)."""
        if rows:
            block = seal(conn, self.audit_key, rows)
            self._insert_rows(conn, "events", _SEGMENT_COLS, [(*r, block) for r in rows])

    def _insert_rows(self, conn: Connection, table: str, cols: tuple[str, ...],
                     rows: list[tuple[Any, ...]], ignore: bool = False) -> None:
        """Bulk INSERT of value tuples (in ``cols`` order) through the driver's executemany: the
        hot path skips SQL compilation and dict building. ``ignore`` skips rows whose key exists.
        """
        if not rows:
            return
        if self.dialect == "postgresql" and not ignore and len(rows) >= _COPY_FROM:
            self._copy_rows(conn, table, cols, rows)
            return
        conn.exec_driver_sql(self._insert_sql(table, cols, ignore), rows)

    @staticmethod
    def _copy_rows(conn: Connection, table: str, cols: tuple[str, ...],
                   rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL's COPY FROM STDIN, in the same transaction: one round trip for a batch
        instead of a statement per row (psycopg adapts each value as executemany would)."""
        names = ", ".join(f'"{c}"' for c in cols)
        raw = conn.connection.driver_connection
        assert raw is not None  # a connection in a transaction is checked out
        with raw.cursor() as cur, cur.copy(f'COPY "{table}" ({names}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(row)

    def _insert_sql(self, table: str, cols: tuple[str, ...], ignore: bool = False) -> str:
        sql = self._sql.get((table, cols, ignore))
        if sql is None:
            names = ", ".join(f'"{c}"' for c in cols)
            marks = ", ".join([self._placeholder] * len(cols))
            tail = " ON CONFLICT DO NOTHING" if ignore else ""
            sql = self._sql[(table, cols, ignore)] = (
                f'INSERT INTO "{table}" ({names}) VALUES ({marks}){tail}')
        return sql

    @classmethod
    def open(cls, url: str | None = None, *, migrate: bool = True,
             must_exist: bool = False) -> Store:
        """Open (and migrate) the store at ``url``. ``must_exist``: a store that is not there
        is an error (checking a store must never create an empty one that checks out)."""
        resolved = resolve_url(url, create=not must_exist)
        engine = make_engine(resolved, create=not must_exist)
        store = cls(engine)
        if must_exist:
            store._check_exists(resolved)
        if migrate:
            try:
                with engine.begin() as conn:
                    upgrade(conn)
            except OperationalError as exc:
                raise StoreError(
                    f"cannot open the store at {engine.url.render_as_string(hide_password=True)}: "
                    f"{exc.orig}; check the --db URL / KEEL_DB and that the database is running"
                ) from exc
        return store

    def close(self) -> None:
        self.engine.dispose()

    def _check_exists(self, url: str) -> None:
        shown = self.engine.url.render_as_string(hide_password=True)
        if self.dialect == "sqlite":
            path = url.split("///", 1)[-1]
            if path != ":memory:" and not Path(path).is_file():
                self.close()
                raise NotFoundError(f"there is no store at {path}; pass the right --db (or "
                                    "KEEL_DB), or run `keel run` or `keel demo` to create one")
        try:
            with self.engine.connect() as conn:
                found = current_heads(conn)
        except OperationalError as exc:
            self.close()
            raise StoreError(f"cannot open the store at {shown}: {exc.orig}; check the --db URL "
                             "/ KEEL_DB and that the database is running") from exc
        if not found:
            self.close()
            raise NotFoundError(f"the database at {shown} holds no keel store; pass the right "
                                "--db (or KEEL_DB)")

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction. Writers in this process take turns on a lock, so threads never
        wait on SQLite's sleeping busy handler (other processes still do). On SQLite it takes
        the write lock at BEGIN: a transaction that reads before it writes would otherwise
        fail at once ("database is locked") when another process (a writer process, a
        second keel) commits in between, instead of waiting its turn."""
        try:
            with self._write_lock, self.engine.begin() as conn:
                if self._immediate:
                    conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
        except SQLAlchemyError as exc:
            raise StoreError(f"store write failed: {exc}") from exc

    # -- workflows, model versions, runs ------------------------------------------------------
    def save_workflow(self, name: str, version: str, source_path: str | None,
                      spec: dict[str, Any]) -> None:
        row = {"name": name, "version": version, "source_path": source_path,
               "spec": _json.dumps(spec), "updated_at": time.time()}
        with self.tx() as conn:
            done = conn.execute(update(t.workflows).where(t.workflows.c.name == name).values(**row))
            if done.rowcount == 0:
                conn.execute(t.workflows.insert().values(**row))

    def register_model(self, workflow: str, info: dict[str, Any], alias: str | None = None) -> None:
        row = {"version": info["version"], "workflow": workflow, "name": info.get("name", ""),
               "kind": info.get("kind", "model"), "artifact_hash": info.get("artifact_hash"),
               "training_data_hash": info.get("training_data_hash"),
               "metrics": _json.dumps(info.get("metrics") or {}), "alias": alias,
               "created_at": time.time()}
        with self.tx() as conn:
            conn.execute(insert_ignore(self.engine, t.model_versions).values(**row))

    def start_run(self, run_id: str, workflow: str, kind: str, source: str) -> None:
        with self.tx() as conn:
            conn.execute(t.runs.insert().values(id=run_id, workflow=workflow, kind=kind,
                                                source=source, started_at=time.time()))

    def finish_run(self, run_id: str, summary: dict[str, Any]) -> None:
        with self.tx() as conn:
            conn.execute(update(t.runs).where(t.runs.c.id == run_id).values(
                finished_at=time.time(), summary=_json.dumps(summary)))

    # -- the hot path -------------------------------------------------------------------------
    def lookup(self, workflow: str, keys: list[str]) -> dict[str, Known]:
        """Which of ``keys`` the store holds (record id, disposition). Plain SQL: on the hot
        path, compiling 500 bound parameters cost three times what the query does."""
        out: dict[str, Known] = {}
        with self.engine.connect() as conn:
            if self.dialect == "postgresql" and keys:  # one array parameter, not 2,000 marks
                found = conn.exec_driver_sql(_LOOKUP_EACH, (keys, workflow))
                out.update((key, Known(rid, disp, text)) for key, rid, disp, text in found)
                return out
            for part in _chunks(keys):
                for key, rid, disp, text in conn.exec_driver_sql(self._lookup_sql(len(part)),
                                                                 (workflow, *part)):
                    out[key] = Known(rid, disp, text)
        return out

    def _lookup_sql(self, n: int) -> str:
        sql = self._sql.get(("lookup", n))
        if sql is None:
            marks = ", ".join([self._placeholder] * n)
            sql = (f"SELECT r.key, r.id, d.disposition, r.input FROM records r "
                   f"LEFT OUTER JOIN decisions d ON d.record_id = r.id "
                   f"WHERE r.workflow = {self._placeholder} AND r.key IN ({marks})")
            self._sql[("lookup", n)] = sql
        return sql

    def resume_state(self, items: list[Item]) -> None:
        """For records seen before: restore their event chain head and checkpointed answer."""
        old = {i.record_id: i for i in items if not i.is_new}
        if not old:
            return
        e, p = t.events, t.predictions
        with self.engine.connect() as conn:
            for part in _chunks(list(old)):
                q = (select(e.c.record_id, func.max(e.c.seq)).where(e.c.record_id.in_(part))
                     .group_by(e.c.record_id))
                heads = dict(conn.execute(q).all())
                if heads:
                    q2 = select(e.c.record_id, e.c.seq, e.c.hash).where(e.c.record_id.in_(list(heads)))
                    for rid, seq, h in conn.execute(q2):
                        if heads[rid] == seq:
                            old[rid].seq, old[rid].last_hash = seq, h
                q3 = select(p).where(p.c.record_id.in_(part)).order_by(p.c.created_at)
                for row in conn.execute(q3).mappings():
                    item = old[row["record_id"]]
                    item.prediction = _prediction(row)
                    if item.answers is None:
                        item.answers = {}
                    item.answers[row["step"]] = (item.prediction, row["model_version"])
                    item.predicted_by = row["model_version"]
                    item.step_name = row["step"]
                    item.from_fallback = row["step"] != "primary"
                    item.checkpointed = True

    def write_checkpoints(self, workflow: str, run_id: str, rows: list[Checkpoint],
                          lease: str | None = None) -> None:
        """Commit model answers before anything acts on them: under (record, step), first write
        wins, with their records and the events that led there. ``lease``: a worker's id,
        which must still hold these records' leases."""
        items = list({id(c.item): c.item for c in rows}.values())
        now = time.time()
        records = _record_rows(workflow, run_id, items, now)
        answers = [_prediction_row(c, now) for c in rows]
        digests = RowDigests().add_records(records).add_answers(answers)
        segments = segment_rows(workflow, items, digests)
        with self.tx() as conn:
            if lease is not None:
                from keel.store.queue import hold  # the queue module imports this one

                hold(conn, lease, [i.record_id for i in items])
            self._insert_rows(conn, "records", _RECORD_COLS, records)
            self._insert_rows(conn, "predictions", _PREDICTION_COLS, answers, ignore=True)
            self._insert_segments(conn, segments)
        for i in items:
            i.is_new = False

    def write_pending(self, workflow: str, run_id: str, items: list[Item],
                      priority: int = 0) -> None:
        """Submitted records: stored with their trail so far (received, validated) and queued
        for a worker, in one transaction (`keel submit`)."""
        now = time.time()
        records = _record_rows(workflow, run_id, items, now)
        segments = segment_rows(workflow, items, RowDigests().add_records(records))
        with self.tx() as conn:
            self._insert_rows(conn, "records", _RECORD_COLS, records)
            self._insert_segments(conn, segments)
            # the caller left out records already queued: nothing here can conflict
            self._insert_rows(conn, "queue", _QUEUE_COLS, [
                (i.record_id, workflow, priority, now, "pending", None, None, 0) for i in items])
        for i in items:
            i.is_new = False

    def write_rows(self, rows: BatchRows) -> None:
        """Commit a batch's rows (:func:`batch_rows`) in one transaction. Building them is left
        to the caller's thread, so a writer thread does little but wait on the database."""
        with self.tx() as conn:
            if rows.lease is not None:
                from keel.store.queue import settle  # the queue module imports this one

                settle(conn, *rows.lease)
            for part in _chunks(rows.replaced):
                conn.execute(t.decisions.delete().where(t.decisions.c.record_id.in_(part)))
                conn.execute(t.quarantine.delete().where(t.quarantine.c.record_id.in_(part)))
            self._insert_rows(conn, "records", _RECORD_COLS, rows.records)
            self._insert_rows(conn, "predictions", _PREDICTION_COLS, rows.answers, ignore=True)
            self._insert_rows(conn, "decisions", _DECISION_COLS, rows.decisions)
            self._insert_rows(conn, "quarantine", _QUARANTINE_COLS, rows.quarantined)
            self._insert_rows(conn, "review_tasks", _TASK_COLS, rows.tasks)
            self._insert_segments(conn, rows.segments)
            if rows.outbox:
                owe(conn, self.engine, rows.outbox, time.time())
            self._insert_rows(conn, "shadow_answers", _SHADOW_COLS, rows.shadow, ignore=True)

    def append_event(self, conn: Connection, workflow: str, record_id: str, kind: str, *,
                     actor: str | None = None, detail: dict[str, Any] | None = None,
                     model_version: str | None = None, latency_ms: float | None = None,
                     cost_usd: float | None = None) -> None:
        """Append one event, as a segment of its own, to a record's chain (reviews, alerts),
        committing to the record's decision row as this transaction leaves it."""
        e = t.events
        head = conn.execute(select(e.c.seq, e.c.hash).where(e.c.record_id == record_id)
                            .order_by(e.c.seq.desc()).limit(1)).first()
        seq, prev = (head[0] + 1, head[1]) if head else (1, GENESIS)
        at = time.time()
        text = _json.dumps([Event(kind, at, detail, actor, model_version, latency_ms, cost_usd).entry()])
        digests = decision_digest(conn, record_id).text(record_id) or None
        h = segment_hash(prev, record_id, seq, workflow, at, text, digests)
        self._insert_segments(conn, [(record_id, seq, workflow, at, text, prev, h, digests)])

    # -- replay ---------------------------------------------------------------------------------
    def replayable(self, workflow: str, disposition: str) -> list[tuple[str, str, str, str]]:
        """(record_id, key, input json, source) of records whose decision is ``disposition``."""
        r, d = t.records, t.decisions
        q = (select(r.c.id, r.c.key, r.c.input, r.c.source)
             .select_from(r.join(d, d.c.record_id == r.c.id))
             .where(and_(r.c.workflow == workflow, d.c.disposition == disposition))
             .order_by(r.c.created_at))
        with self.engine.connect() as conn:
            return [(x[0], x[1], x[2], x[3]) for x in conn.execute(q)]

    def mark_replayed(self, record_ids: list[str]) -> None:
        with self.tx() as conn:
            for part in _chunks(record_ids):
                conn.execute(update(t.quarantine).where(t.quarantine.c.record_id.in_(part))
                             .values(status="replayed", replayed_at=time.time()))


def _prediction(row: Any) -> Prediction:
    return Prediction(output=_json.loads(row["output"]), confidence=row["confidence"],
                      usage=Usage(row["input_tokens"], row["output_tokens"], row["cost_usd"]),
                      metadata=_json.loads(row["metadata"]) or {})


@dataclass(slots=True)
class BatchRows:
    """A batch's rows, ready to insert (built by :func:`batch_rows` off the writer thread)."""

    records: list[tuple[Any, ...]]
    answers: list[tuple[Any, ...]]
    decisions: list[tuple[Any, ...]]
    quarantined: list[tuple[Any, ...]]
    tasks: list[tuple[Any, ...]]
    segments: list[tuple[Any, ...]]
    replaced: list[str]  # record ids whose earlier decision this batch replaces (replay)
    #: the outbox: (sink, record_id) owed to each sink, committed with the decisions
    outbox: list[tuple[str, str]] = field(default_factory=list)
    #: a shadow release's answers for these records (kept, never acted on)
    shadow: list[tuple[Any, ...]] = field(default_factory=list)
    #: a worker's batch: (the worker, the record ids it leased); committed only while it
    #: still holds every lease
    lease: tuple[str, list[str]] | None = None


def merge_rows(parts: Sequence[BatchRows]) -> BatchRows:
    """One batch's rows from the rows of its parts (records decided by different releases)."""
    merged = BatchRows([], [], [], [], [], [], [])
    for part in parts:
        for name in BatchRows.__dataclass_fields__:
            if name != "lease":
                getattr(merged, name).extend(getattr(part, name))
        merged.lease = merged.lease or part.lease
    return merged


def batch_rows(workflow: str, run_id: str, items: list[Item], policy: Policy,
               replace: bool = False, sinks: Sequence[str] = ()) -> BatchRows:
    """Everything a batch stores: new records, answers not checkpointed yet, decisions,
    quarantine entries, review tasks and each record's new events (a segment). The items are
    marked stored (their chain heads advance): write the rows, or give up the run."""
    now = time.time()
    done = [i for i in items if i.disposition is not None]
    pv = policy.version
    records = _record_rows(workflow, run_id, items, now)
    answers = [_prediction_row(c, now) for i in items for c in i.unsaved]
    decisions = [_decision_row(workflow, i, pv, now) for i in done]
    digests = RowDigests().add_records(records).add_answers(answers).add_decisions(decisions)
    rows = BatchRows(
        records=records, answers=answers, decisions=decisions,
        quarantined=[(i.record_id, workflow, i.source,
                      _json.dumps([v.as_dict() for v in i.violations]), "open", now)
                     for i in done if i.disposition == "quarantined"],
        tasks=[_task_row(workflow, i, policy, now) for i in done
               if i.review is not None or i.audit or i.release_check],
        segments=segment_rows(workflow, items, digests),
        replaced=[i.record_id for i in done] if replace else [],
        outbox=[(sink, i.record_id) for sink in sinks for i in done])
    for i in items:
        i.is_new = False
        i.unsaved = []
    return rows


def segment_rows(workflow: str, items: Iterable[Item],
                 digests: RowDigests) -> list[tuple[Any, ...]]:
    """Each record's events not stored yet, as one segment chained to its last one and
    committing to the digests of the record's rows written with it."""
    rows: list[tuple[Any, ...]] = []
    dumps = _json.dumps
    for item in items:
        new = item.events[item.written_events:]
        if not new:
            continue
        text = dumps([ev.entry() for ev in new])
        item.seq += 1
        prev = item.last_hash or GENESIS
        at = new[0].at
        rows_digest = digests.text(item.record_id) or None
        h = segment_hash(prev, item.record_id, item.seq, workflow, at, text, rows_digest)
        rows.append((item.record_id, item.seq, workflow, at, text, prev, h, rows_digest))
        item.last_hash = h
        item.written_events = len(item.events)
    return rows


_RECORD_COLS = RECORD_COLS
#: PostgreSQL: the keys as one array, each looked up through the (workflow, key) index. A
#: plain ``key = ANY(...)`` or a join is planned as a scan of every record of the workflow
#: once the table is large or its statistics are stale (mid-load): a million-row submit
#: spent most of its time there. The LATERAL subquery with LIMIT 1 is planned per key.
_LOOKUP_EACH = ("SELECT k.key, r.id, d.disposition, r.input FROM unnest(%s::text[]) AS k(key) "
                "CROSS JOIN LATERAL (SELECT id, input FROM records "
                "WHERE workflow = %s AND key = k.key LIMIT 1) r "
                "LEFT OUTER JOIN decisions d ON d.record_id = r.id")
_PREDICTION_COLS = PREDICTION_COLS
_DECISION_COLS = DECISION_COLS
_QUARANTINE_COLS = ("record_id", "workflow", "source", "violations", "status", "created_at")
_QUEUE_COLS = ("record_id", "workflow", "priority", "enqueued_at", "status", "owner",
               "lease_until", "attempts")
_SHADOW_COLS = ("record_id", "release_id", "workflow", "output", "confidence", "error", "step",
                "agrees", "latency_ms", "cost_usd", "created_at")
_TASK_COLS = ("id", "record_id", "workflow", "reason", "detail", "priority", "status", "queue",
              "created_at", "due_at")


def _record_rows(workflow: str, run_id: str, items: Iterable[Item],
                 now: float) -> list[tuple[Any, ...]]:
    dumps = _json.dumps
    return [(i.record_id, workflow, i.key, dumps(i.raw), i.source, run_id, now)
            for i in items if i.is_new]


def _prediction_row(c: Checkpoint, now: float) -> tuple[Any, ...]:
    p = c.prediction
    u = p.usage
    return (c.record_id, c.step, c.model_version, _json.dumps(p.output), p.confidence,
            u.input_tokens, u.output_tokens, u.cost_usd, c.latency_ms,
            _json.dumps(p.metadata) if p.metadata else None, now)


def _decision_row(workflow: str, i: Item, policy_version: str, now: float) -> tuple[Any, ...]:
    pred = i.prediction
    return (i.record_id, workflow, i.disposition, i.reason,
            _json.dumps(i.output) if i.output is not None else None,
            pred.confidence if pred is not None else None, i.predicted_by,
            i.predicted_by if i.output else None, policy_version, i.audit, i.attempts,
            i.failed_attempts, i.latency_ms, i.cost_usd, now, i.release_id)


def _task_row(workflow: str, i: Item, pol: Policy, now: float) -> tuple[Any, ...]:
    if i.review:
        reason, detail = i.review.reason, i.review.detail
    elif i.audit:
        reason, detail = "audit_sample", "random audit of an automatic decision"
    else:
        reason = "release_check"
        detail = "a release under trial answered this record differently; which answer is right?"
    return (new_id(), i.record_id, workflow, reason, detail, pol.review_priority.get(reason, 50),
            "open", "default", now, now + pol.review_sla_s.get(reason, 86400.0))
