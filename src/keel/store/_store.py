"""The Store: the only place in keel that speaks SQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, and_, func, select, update
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from keel import _json
from keel._policy import Policy
from keel._prediction import Prediction, Usage
from keel._record import Item, new_id
from keel.errors import StoreError
from keel.stages.admit import Known
from keel.stages.predict import Checkpoint
from keel.store import _schema as t
from keel.store._audit import GENESIS, chain_hash, event_hash
from keel.store._delivery import BreakerBook, SinkLedger
from keel.store._engine import insert_ignore, make_engine, resolve_url
from keel.store._migrate import upgrade

_CHUNK = 500  # keys per IN (...) query
__all__ = ["BreakerBook", "SinkLedger", "Store"]
_EVENT_COLS = ("record_id", "workflow", "seq", "kind", "at", "actor", "model_version",
               "latency_ms", "cost_usd", "detail", "prev_hash", "hash")


def _chunks(seq: Sequence[Any], n: int = _CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


class Store:
    """Records, predictions, decisions, events and review tasks in one database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        self._placeholder = "?" if engine.dialect.paramstyle == "qmark" else "%s"
        self._sql: dict[tuple[str, tuple[str, ...], bool], str] = {}
        self._write_lock = threading.RLock()

    def _insert_many(self, conn: Connection, table: Any, rows: list[dict[str, Any]],
                     ignore: bool = False) -> None:
        """Bulk INSERT through the driver's executemany: the hot path skips SQL compilation.

        Every row must have the same keys. ``ignore`` skips rows whose key exists.
        """
        if not rows:
            return
        cols = tuple(rows[0])
        conn.exec_driver_sql(self._insert_sql(table.name, cols, ignore),
                             [tuple(r[c] for c in cols) for r in rows])

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
    def open(cls, url: str | None = None, *, migrate: bool = True) -> Store:
        resolved = resolve_url(url)
        engine = make_engine(resolved)
        store = cls(engine)
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

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A write transaction. Writers in this process take turns on a lock, so threads never
        wait on SQLite's sleeping busy handler (other processes still do)."""
        try:
            with self._write_lock, self.engine.begin() as conn:
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
        r, d = t.records, t.decisions
        out: dict[str, Known] = {}
        with self.engine.connect() as conn:
            for part in _chunks(keys):
                q = (select(r.c.key, r.c.id, d.c.disposition)
                     .select_from(r.outerjoin(d, d.c.record_id == r.c.id))
                     .where(r.c.workflow == workflow, r.c.key.in_(part)))
                for key, rid, disp in conn.execute(q):
                    out[key] = Known(rid, disp)
        return out

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
                    item.predicted_by = row["model_version"]
                    item.step_name = row["step"]
                    item.from_fallback = row["step"] != "primary"
                    item.checkpointed = True

    def write_admitted(self, workflow: str, run_id: str, items: list[Item]) -> None:
        """Insert new records (and their first events) before any model sees them."""
        now = time.time()
        rows = [{"id": i.record_id, "workflow": workflow, "key": i.key,
                 "input": _json.dumps(i.raw), "source": i.source, "run_id": run_id,
                 "created_at": now} for i in items if i.is_new]
        with self.tx() as conn:
            self._insert_many(conn, t.records, rows)
            self._events(conn, workflow, items)
        for i in items:
            i.is_new = False

    def write_checkpoints(self, rows: list[Checkpoint], workflow: str) -> None:
        """Predictions under (record, step), first write wins, with the events that led there."""
        now = time.time()
        data = [{"record_id": c.record_id, "step": c.step, "model_version": c.model_version,
                 "output": _json.dumps(c.prediction.output), "confidence": c.prediction.confidence,
                 "input_tokens": c.prediction.usage.input_tokens,
                 "output_tokens": c.prediction.usage.output_tokens,
                 "cost_usd": c.prediction.usage.cost_usd, "latency_ms": c.latency_ms,
                 "metadata": _json.dumps(c.prediction.metadata) if c.prediction.metadata else None,
                 "created_at": now} for c in rows]
        with self.tx() as conn:
            self._insert_many(conn, t.predictions, data, ignore=True)
            self._events(conn, workflow, [c.item for c in rows])

    def write_outcomes(self, workflow: str, items: list[Item], policy: Policy,
                       replace: bool = False) -> None:
        """Decisions, quarantine entries, review tasks and the remaining events, one transaction."""
        now = time.time()
        done = [i for i in items if i.disposition is not None]
        decisions = [_decision_row(workflow, i, policy.version, now) for i in done]
        quarantined = [{"record_id": i.record_id, "workflow": workflow, "source": i.source,
                        "violations": _json.dumps([v.as_dict() for v in i.violations]),
                        "status": "open", "created_at": now}
                       for i in done if i.disposition == "quarantined"]
        tasks = [_task_row(workflow, i, policy, now) for i in done if i.review is not None or i.audit]
        with self.tx() as conn:
            if replace and done:
                ids = [i.record_id for i in done]
                for part in _chunks(ids):
                    conn.execute(t.decisions.delete().where(t.decisions.c.record_id.in_(part)))
                    conn.execute(t.quarantine.delete().where(t.quarantine.c.record_id.in_(part)))
            self._insert_many(conn, t.decisions, decisions)
            self._insert_many(conn, t.quarantine, quarantined)
            self._insert_many(conn, t.review_tasks, tasks)
            self._events(conn, workflow, items)

    def _events(self, conn: Connection, workflow: str, items: Iterable[Item]) -> None:
        rows: list[tuple[Any, ...]] = []
        for item in items:
            prev = item.last_hash or GENESIS
            rid = item.record_id
            for ev in item.events[item.written_events:]:
                item.seq += 1
                detail = _json.dumps(ev.detail) if ev.detail is not None else None
                h = chain_hash(prev, rid, item.seq, ev.kind, ev.at, ev.actor, ev.model_version,
                               ev.latency_ms, ev.cost_usd, detail)
                rows.append((rid, workflow, item.seq, ev.kind, ev.at, ev.actor, ev.model_version,
                             ev.latency_ms, ev.cost_usd, detail, prev, h))
                prev = h
            item.last_hash = prev
            item.written_events = len(item.events)
        if rows:
            conn.exec_driver_sql(self._insert_sql("events", _EVENT_COLS), rows)

    def append_event(self, conn: Connection, workflow: str, record_id: str, kind: str, *,
                     actor: str | None = None, detail: dict[str, Any] | None = None,
                     model_version: str | None = None, latency_ms: float | None = None,
                     cost_usd: float | None = None) -> None:
        """Append one event to a record's chain (reviews, deliveries, alerts)."""
        e = t.events
        head = conn.execute(select(e.c.seq, e.c.hash).where(e.c.record_id == record_id)
                            .order_by(e.c.seq.desc()).limit(1)).first()
        seq, prev = (head[0], head[1]) if head else (0, GENESIS)
        row = {"record_id": record_id, "workflow": workflow, "seq": seq + 1, "kind": kind,
               "at": time.time(), "actor": actor, "model_version": model_version,
               "latency_ms": latency_ms, "cost_usd": cost_usd,
               "detail": _json.dumps(detail) if detail is not None else None, "prev_hash": prev}
        row["hash"] = event_hash(prev, row)
        conn.execute(e.insert().values(**row))

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


def _decision_row(workflow: str, i: Item, policy_version: str, now: float) -> dict[str, Any]:
    pred = i.prediction
    return {"record_id": i.record_id, "workflow": workflow, "disposition": i.disposition,
            "reason": i.reason, "output": _json.dumps(i.output) if i.output is not None else None,
            "confidence": pred.confidence if pred is not None else None,
            "model_version": i.predicted_by, "decided_by": i.predicted_by if i.output else None,
            "policy_version": policy_version, "audit": i.audit, "attempts": i.attempts,
            "latency_ms": i.latency_ms, "cost_usd": i.cost_usd, "decided_at": now}


def _task_row(workflow: str, i: Item, pol: Policy, now: float) -> dict[str, Any]:
    reason = i.review.reason if i.review else "audit_sample"
    detail = i.review.detail if i.review else "random audit of an automatic decision"
    return {"id": new_id(), "record_id": i.record_id, "workflow": workflow,
            "reason": reason, "detail": detail, "priority": pol.review_priority.get(reason, 50),
            "status": "open", "queue": "default", "created_at": now,
            "due_at": now + pol.review_sla_s.get(reason, 86400.0)}
