"""Read-side queries for monitoring: metric snapshots, alert signals, alert history, audit chains."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Select, and_, delete, func, select, update

from keel import _json
from keel.store import _schema as t
from keel.store._store import Store
from keel.store.queries import percentile
from keel.store.reviews import audit_accuracy, violation_evidence

ACCURACY_WINDOW_S = 7 * 86400.0


def _counts(conn: Connection, query: Select[Any]) -> dict[str, int]:
    """``{label: count}`` from a two-column grouped count."""
    return {str(k): int(v) for k, v in conn.execute(query)}


def _names(conn: Connection, workflows: Sequence[str] | None) -> list[str]:
    if workflows is not None:
        return list(workflows)
    names = {r[0] for r in conn.execute(select(t.workflows.c.name))}
    names |= {r[0] for r in conn.execute(select(t.decisions.c.workflow).distinct())}
    return sorted(names)


def snapshot(store: Store, workflows: Sequence[str] | None = None,
             now: float | None = None) -> dict[str, Any]:
    """Everything the store-side gauges show, in one connection."""
    now = time.time() if now is None else now
    d, rt = t.decisions, t.review_tasks
    out: dict[str, Any] = {"workflows": {}, "breakers": {}, "firing": []}
    with store.engine.connect() as conn:
        for wf in _names(conn, workflows):
            disp = _counts(conn, select(d.c.disposition, func.count())
                           .where(d.c.workflow == wf).group_by(d.c.disposition))
            backlog = _counts(conn, select(rt.c.reason, func.count())
                              .where(rt.c.workflow == wf, rt.c.status == "open")
                              .group_by(rt.c.reason))
            oldest, overdue = conn.execute(select(
                func.min(rt.c.created_at), func.count().filter(rt.c.due_at < now)).where(
                rt.c.workflow == wf, rt.c.status == "open")).one()
            accuracy, audits = _accuracy(conn, wf, now - ACCURACY_WINDOW_S)
            out["workflows"][wf] = {
                "dispositions": disp, "backlog": backlog,
                "oldest_age_s": None if oldest is None else max(0.0, now - float(oldest)),
                "overdue": int(overdue or 0), "accuracy": accuracy, "audits": audits,
            }
        breakers = select(t.breakers.c.workflow, t.breakers.c.model_version, t.breakers.c.state)
        out["breakers"] = {(str(wf), str(mv)): str(st) for wf, mv, st in conn.execute(breakers)}
        firing = select(t.alerts.c.workflow, t.alerts.c.rule).where(t.alerts.c.state == "firing")
        out["firing"] = [tuple(r) for r in conn.execute(firing)]
    return out


def _accuracy(conn: Connection, workflow: str, since: float) -> tuple[float | None, int]:
    """Realized accuracy of automatic decisions audited since ``since`` (one definition:
    :func:`keel.store.reviews.audit_accuracy`)."""
    acc = audit_accuracy(conn, workflow, since=since)
    return acc["accuracy"], acc["n"]


# -- alert signals: (value, sample size) over a window ending now ---------------------------------
def signal(store: Store, workflow: str, name: str, since: float, now: float) -> tuple[float | None, int]:
    """The value of signal ``name`` for ``workflow`` over ``[since, now]`` and its sample size."""
    with store.engine.connect() as conn:
        return _SIGNALS[name](conn, workflow, since, now)


def _error_rate(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    """Failed model calls over all calls, for the records decided in the window."""
    d = t.decisions
    calls, failed = conn.execute(select(func.sum(d.c.attempts), func.sum(d.c.failed_attempts))
                                 .where(d.c.workflow == wf, d.c.decided_at >= since,
                                        d.c.decided_at <= now)).one()
    n = int(calls or 0)
    return (int(failed or 0) / n if n else None), n


def _decided(conn: Connection, wf: str, since: float, now: float) -> dict[str, int]:
    d = t.decisions
    return _counts(conn, select(d.c.disposition, func.count()).where(
        d.c.workflow == wf, d.c.decided_at >= since, d.c.decided_at <= now)
        .group_by(d.c.disposition))


def _fallback_rate(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    counts = _decided(conn, wf, since, now)
    n = sum(v for k, v in counts.items() if k != "quarantined")
    return (counts.get("fallback", 0) / n if n else None), n


def _failure_rate(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    counts = _decided(conn, wf, since, now)
    n = sum(counts.values())
    return (counts.get("failed", 0) / n if n else None), n


def _p95_latency(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    d = t.decisions
    lat = [x for (x,) in conn.execute(select(d.c.latency_ms).where(
        d.c.workflow == wf, d.c.decided_at >= since, d.c.decided_at <= now,
        d.c.latency_ms.is_not(None)))]
    return percentile(lat, 95), len(lat)


def _backlog_age(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    rt = t.review_tasks
    oldest, n = conn.execute(select(func.min(rt.c.created_at), func.count()).where(
        rt.c.workflow == wf, rt.c.status == "open")).one()
    return (None if oldest is None else max(0.0, now - float(oldest))), int(n or 0)


def _realized_accuracy(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    return _accuracy(conn, wf, since)


def _cost(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    d = t.decisions
    total, n = conn.execute(select(func.coalesce(func.sum(d.c.cost_usd), 0.0), func.count()).where(
        d.c.workflow == wf, d.c.decided_at >= since, d.c.decided_at <= now)).one()
    return float(total), int(n)


def _burn_rate(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    """How fast the day's USD budget goes: spent (and reserved) / (limit x the share of the
    UTC day gone). Above 1 it runs out before the day ends. None without a day budget."""
    spec = conn.execute(select(t.workflows.c.spec).where(t.workflows.c.name == wf)).scalar()
    budgets = ((_json.loads(spec) if spec else {}).get("cost") or {}).get("budgets") or []
    limit = next((b["usd"] for b in budgets if b.get("period") == "day" and b.get("usd")), None)
    if not limit:
        return None, 0
    day = datetime.fromtimestamp(now, tz=UTC)
    bw = t.budget_windows
    used = conn.execute(select(bw.c.spent_usd + bw.c.reserved_usd).where(
        bw.c.workflow == wf, bw.c.period == "day",
        bw.c.window == day.strftime("%Y-%m-%d"))).scalar() or 0.0
    midnight = day.replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    gone = max(now - midnight, 60.0) / 86400.0
    decided = _decided(conn, wf, midnight, now)
    return float(used) / (float(limit) * gone), sum(decided.values())


def _queue_age(conn: Connection, wf: str, since: float, now: float) -> tuple[float | None, int]:
    """The age of the oldest record waiting for a worker, and how many wait. An empty queue
    is an observation too (age 0), so that a firing alert resolves once workers catch up."""
    q = t.queue
    oldest, n = conn.execute(select(func.min(q.c.enqueued_at), func.count()).where(
        q.c.workflow == wf, q.c.status == "pending")).one()
    return (0.0, 1) if oldest is None else (max(0.0, now - float(oldest)), int(n))


def _guarantee_void(conn: Connection, wf: str, since: float,
                    now: float) -> tuple[float | None, int]:
    """1 when the audits of the decisions the calibrated policy in force routed contradict its
    guarantee (the sequential test of `keel status`; all its audits count, whatever the
    window), 0 when they do not; no observation before the first audit."""
    rp = t.routing_policies
    row = conn.execute(select(rp.c.version, rp.c.params).where(
        rp.c.workflow == wf, rp.c.active.is_(True)).order_by(rp.c.created_at.desc())
        .limit(1)).first()
    if row is None:
        return None, 0
    params = _json.loads(row[1])
    acc = audit_accuracy(conn, wf, policy_version=row[0])
    target, delta = params.get("target_accuracy"), params.get("delta")
    if not acc["n"] or target is None or not delta:
        return None, 0
    evidence = violation_evidence(acc["n"] - acc["correct"], acc["n"], target)
    return (1.0 if evidence >= 1.0 / delta else 0.0), int(acc["n"])


_SIGNALS = {
    "guarantee_void": _guarantee_void,
    "error_rate": _error_rate, "fallback_rate": _fallback_rate, "failure_rate": _failure_rate,
    "p95_latency_ms": _p95_latency, "review_backlog_age_s": _backlog_age,
    "realized_accuracy": _realized_accuracy, "daily_cost_usd": _cost, "queue_age_s": _queue_age,
    "budget_burn_rate": _burn_rate,
}
STORE_SIGNALS = tuple(_SIGNALS)


# -- alert history --------------------------------------------------------------------------------
def open_alert(store: Store, workflow: str, rule: str) -> dict[str, Any] | None:
    """The pending or firing row for (workflow, rule), if any."""
    a = t.alerts
    with store.engine.connect() as conn:
        row = conn.execute(select(a).where(a.c.workflow == workflow, a.c.rule == rule,
                                           a.c.state.in_(("pending", "firing")))
                           .order_by(a.c.id.desc()).limit(1)).mappings().first()
    return _alert(row) if row else None


def _alert(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["detail"] = _json.loads(out["detail"]) if out.get("detail") else {}
    return out


def save_alert(store: Store, row: dict[str, Any]) -> int:
    """Insert (no ``id``) or update an alert row; returns its id."""
    a = t.alerts
    values = dict(row)
    values["detail"] = _json.dumps(values.get("detail") or {})
    with store.tx() as conn:
        if values.get("id") is None:
            values.pop("id", None)
            pk = conn.execute(a.insert().values(**values)).inserted_primary_key
            assert pk is not None
            return int(pk[0])
        ident = values.pop("id")
        conn.execute(update(a).where(a.c.id == ident).values(**values))
        return int(ident)


def drop_alert(store: Store, alert_id: int) -> None:
    """Forget a pending breach that did not last (it never fired, so it is not history)."""
    with store.tx() as conn:
        conn.execute(delete(t.alerts).where(and_(t.alerts.c.id == alert_id, t.alerts.c.state == "pending")))


def alert_history(store: Store, workflow: str | None = None, limit: int = 100,
                  state: str | None = None) -> list[dict[str, Any]]:
    a = t.alerts
    q = select(a).where(a.c.state != "pending").order_by(a.c.fired_at.desc(), a.c.id.desc()).limit(limit)
    if workflow:
        q = q.where(a.c.workflow == workflow)
    if state:
        q = q.where(a.c.state == state)
    with store.engine.connect() as conn:
        return [_alert(r) for r in conn.execute(q).mappings()]


def workflow_specs(store: Store) -> dict[str, dict[str, Any]]:
    with store.engine.connect() as conn:
        return {name: _json.loads(spec) for name, spec in
                conn.execute(select(t.workflows.c.name, t.workflows.c.spec))}


# -- the audit chain ------------------------------------------------------------------------------
def iter_segments(store: Store, workflow: str | None = None,
                  chunk: int = 5000) -> Iterator[dict[str, Any]]:
    """Every audit segment with its record's key and input, ordered by record then seq
    (streamed)."""
    e, r = t.events, t.records
    q = (select(e, r.c.key.label("record_key"), r.c.input.label("record_input"))
         .select_from(e.outerjoin(r, r.c.id == e.c.record_id))
         .order_by(e.c.record_id, e.c.seq))
    if workflow:
        q = q.where(e.c.workflow == workflow)
    with store.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk).execute(q)
        for row in result.mappings():
            yield dict(row)


def records_without_events(store: Store, workflow: str | None = None) -> list[tuple[str, str]]:
    """(record id, key) of decided records whose whole event chain is gone."""
    r, d, e = t.records, t.decisions, t.events
    q = (select(r.c.id, r.c.key).select_from(r.join(d, d.c.record_id == r.c.id))
         .where(~select(e.c.seq).where(e.c.record_id == r.c.id).exists()))
    if workflow:
        q = q.where(r.c.workflow == workflow)
    with store.engine.connect() as conn:
        return [(a, b) for a, b in conn.execute(q)]
