"""Sink ledger (what each sink received) and circuit-breaker state, in the store."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, and_, or_, select, update

from keel import _json
from keel.resilience import BreakerState
from keel.store import _schema as t
from keel.store._engine import insert_ignore

_CHUNK = 500


def upsert(engine: Engine, table: Any, keys: Sequence[str], rows: list[dict[str, Any]]) -> Any:
    """INSERT ... ON CONFLICT (keys) DO UPDATE every other column, on either database."""
    from sqlalchemy.dialects import postgresql, sqlite  # start-up: only when writing

    ins = (postgresql.insert(table) if engine.dialect.name == "postgresql"
           else sqlite.insert(table))
    cols = {c: ins.excluded[c] for c in rows[0] if c not in keys}
    return ins.on_conflict_do_update(index_elements=list(keys), set_=cols)


def owe(conn: Any, engine: Engine, outbox: Sequence[tuple[str, str]], now: float) -> None:
    """The outbox: each (sink, record) becomes ``pending`` in the transaction that decides the
    record, so a crash before the sink has it leaves it owed, never forgotten."""
    rows = [{"sink": sink, "record_id": rid, "status": "pending", "attempts": 0,
             "last_error": None, "updated_at": now} for sink, rid in outbox]
    for i in range(0, len(rows), _CHUNK):
        part = rows[i:i + _CHUNK]
        conn.execute(upsert(engine, t.deliveries, ("sink", "record_id"), part), part)


class SinkLedger:
    """Which records each sink has received, and where a file sink's committed bytes end.

    A delivery row is ``pending`` (owed: written with the decision, the outbox), ``delivered``,
    or ``dead`` (failed N times; ``keel deliveries retry`` sends it again). A decided record
    with no row (decided before the sink was used) is owed too.
    """

    def __init__(self, store: Any) -> None:
        self.store = store

    def offset(self, sink: str, kind: str) -> int:
        with self.store.tx() as conn:
            row = conn.execute(select(t.sinks.c.offset_bytes).where(t.sinks.c.name == sink)).first()
            if row is None:
                conn.execute(t.sinks.insert().values(name=sink, kind=kind, offset_bytes=0,
                                                     updated_at=time.time()))
                return 0
            return int(row[0])

    def commit(self, sink: str, offset: int | None, record_ids: list[str],
               dead: dict[str, tuple[int, str]] | None = None,
               attempts: dict[str, int] | None = None) -> None:
        """Record a write: the sink's new offset, delivered records, dead-lettered ones."""
        now = time.time()
        dead = dead or {}
        attempts = attempts or {}
        rows = [{"sink": sink, "record_id": rid, "status": "delivered",
                 "attempts": attempts.get(rid, 1), "last_error": None, "updated_at": now}
                for rid in record_ids if rid not in dead]
        rows += [{"sink": sink, "record_id": rid, "status": "dead", "attempts": n,
                  "last_error": err[:2000], "updated_at": now} for rid, (n, err) in dead.items()]
        engine = self.store.engine
        with self.store.tx() as conn:
            if offset is not None:
                conn.execute(update(t.sinks).where(t.sinks.c.name == sink)
                             .values(offset_bytes=offset, updated_at=now))
            for i in range(0, len(rows), _CHUNK):
                part = rows[i:i + _CHUNK]
                conn.execute(upsert(engine, t.deliveries, ("sink", "record_id"), part), part)

    def undelivered(self, sink: str, record_ids: list[str]) -> list[dict[str, Any]]:
        """Decision lines for records that are decided but not yet delivered to ``sink``."""
        dl = t.deliveries
        owed = or_(dl.c.record_id.is_(None), dl.c.status == "pending")
        out: list[dict[str, Any]] = []
        for i in range(0, len(record_ids), _CHUNK):
            out += self._lines(sink, owed, t.records.c.id.in_(record_ids[i:i + _CHUNK]))
        return out

    def owed(self, sink: str,
             statuses: Sequence[str] = ("dead", "pending")) -> list[dict[str, Any]]:
        """Decision lines of every delivery to ``sink`` in one of ``statuses``."""
        return self._lines(sink, t.deliveries.c.status.in_(list(statuses)))

    def _lines(self, sink: str, *where: Any) -> list[dict[str, Any]]:
        r, d, dl = t.records, t.decisions, t.deliveries
        q = (select(r.c.key, r.c.id, d.c.disposition, d.c.reason, d.c.confidence,
                    d.c.model_version, d.c.output)
             .select_from(r.join(d, d.c.record_id == r.c.id)
                          .outerjoin(dl, and_(dl.c.record_id == r.c.id, dl.c.sink == sink)))
             .where(*where).order_by(d.c.decided_at))
        out = []
        with self.store.engine.connect() as conn:
            for row in conn.execute(q).mappings():
                line = dict(row)
                line["record_id"] = line.pop("id")
                line["output"] = _json.loads(line["output"])
                out.append(line)
        return out

    def listing(self, *, failed_only: bool = False, sink: str | None = None,
                limit: int = 1000) -> list[dict[str, Any]]:
        r, dl = t.records, t.deliveries
        q = (select(dl.c.sink, dl.c.record_id, r.c.key, r.c.workflow, dl.c.status,
                    dl.c.attempts, dl.c.last_error, dl.c.updated_at)
             .select_from(dl.outerjoin(r, r.c.id == dl.c.record_id))
             .order_by(dl.c.updated_at.desc()).limit(limit))
        if failed_only:
            q = q.where(dl.c.status.in_(["dead", "pending"]))
        if sink:
            q = q.where(dl.c.sink == sink)
        with self.store.engine.connect() as conn:
            return [dict(x) for x in conn.execute(q).mappings()]

    def counts(self) -> dict[str, dict[str, int]]:
        from sqlalchemy import func

        dl = t.deliveries
        out: dict[str, dict[str, int]] = {}
        with self.store.engine.connect() as conn:
            q = select(dl.c.sink, dl.c.status, func.count()).group_by(dl.c.sink, dl.c.status)
            for sink, status, n in conn.execute(q):
                out.setdefault(sink, {})[status] = int(n)
        return out

    def sinks(self) -> list[str]:
        with self.store.engine.connect() as conn:
            return [r[0] for r in conn.execute(select(t.sinks.c.name).order_by(t.sinks.c.name))]

    def register(self, sink: str, kind: str) -> None:
        with self.store.tx() as conn:
            conn.execute(insert_ignore(self.store.engine, t.sinks).values(
                name=sink, kind=kind, offset_bytes=0, updated_at=time.time()))


class BreakerBook:
    """Circuit-breaker state per workflow and model version, shared by every process using
    the store (one workflow's outage of a shared model never trips another's breaker)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def load(self, workflow: str, versions: Sequence[str]) -> dict[str, BreakerState]:
        b = t.breakers
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(b).where(b.c.workflow == workflow,
                                                b.c.model_version.in_(list(versions)))).mappings()
            return {r["model_version"]: BreakerState(r["workflow"], r["model_version"],
                                                     r["state"], r["failures"], r["opened_at"],
                                                     r["updated_at"]) for r in rows}

    def save(self, states: Sequence[BreakerState]) -> None:
        if not states:
            return
        rows = [{"workflow": s.workflow, "model_version": s.model_version, "state": s.state,
                 "failures": s.failures, "opened_at": s.opened_at, "updated_at": s.updated_at}
                for s in states]
        with self.store.tx() as conn:
            conn.execute(upsert(self.store.engine, t.breakers, ("workflow", "model_version"),
                                rows), rows)

    def for_workflow(self, workflow: str) -> list[dict[str, Any]]:
        b, mv = t.breakers, t.model_versions
        q = (select(b.c.model_version, mv.c.name, b.c.state, b.c.failures, b.c.opened_at,
                    b.c.updated_at)
             .select_from(b.join(mv, (mv.c.version == b.c.model_version)
                                 & (mv.c.workflow == b.c.workflow)))
             .where(b.c.workflow == workflow).order_by(mv.c.name))
        with self.store.engine.connect() as conn:
            return [dict(x) for x in conn.execute(q).mappings()]
