"""Read-side queries for ``keel serve``: stored answers, the dashboard, similar decisions."""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, Integer, cast, func, select

from keel import _json
from keel.store import _schema as t
from keel.store._store import Store, _chunks
from keel.store.releases import agreement_by_release, release_summary
from keel.store.reviews import audit_accuracy, exact_ci, guarantee_status

DAY_S = 86400.0


def ping(store: Store) -> None:
    """Raises when the database cannot answer (``/readyz``)."""
    with store.engine.connect() as conn:
        conn.execute(select(1)).scalar_one()


def decisions_by_record(store: Store, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The stored decision of each record (with its open review task, if any)."""
    r, d = t.records, t.decisions
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for part in _chunks(record_ids):
            q = (select(r.c.id, r.c.key, d.c.disposition, d.c.reason, d.c.output,
                        d.c.confidence, d.c.model_version, d.c.decided_by, d.c.decided_at)
                 .select_from(r.join(d, d.c.record_id == r.c.id)).where(r.c.id.in_(part)))
            for row in conn.execute(q).mappings():
                rec = dict(row)
                rec["output"] = _json.loads(rec["output"]) if rec["output"] else None
                out[rec.pop("id")] = rec
    for rid, task in open_tasks(store, list(out)).items():
        out[rid]["review_task"] = task
    return out


def open_tasks(store: Store, record_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The open review task of each record that has one (the newest when several)."""
    rt = t.review_tasks
    out: dict[str, dict[str, Any]] = {}
    with store.engine.connect() as conn:
        for part in _chunks(record_ids):
            q = (select(rt.c.id, rt.c.record_id, rt.c.reason, rt.c.detail, rt.c.priority,
                        rt.c.due_at, rt.c.created_at)
                 .where(rt.c.record_id.in_(part), rt.c.status == "open")
                 .order_by(rt.c.created_at))
            for row in conn.execute(q).mappings():
                out[row["record_id"]] = {k: v for k, v in row.items() if k != "record_id"}
    return out


def _bucket(store: Store, col: Any, size_s: float) -> ColumnElement[Any]:
    if store.dialect == "postgresql":
        return func.floor(col / size_s)
    return cast(col / size_s, Integer)  # positive times: truncation is floor


def _series(store: Store, workflow: str, since: float, bucket_s: float) -> list[dict[str, Any]]:
    d = t.decisions
    b = _bucket(store, d.c.decided_at, bucket_s).label("b")
    q = (select(b, d.c.disposition, func.count()).where(d.c.workflow == workflow,
                                                          d.c.decided_at >= since)
         .group_by(b, d.c.disposition))
    by: dict[int, dict[str, int]] = defaultdict(dict)
    with store.engine.connect() as conn:
        for bucket, disp, n in conn.execute(q):
            by[int(bucket)][disp] = int(n)
    first, last = int(since // bucket_s), int(time.time() // bucket_s)
    return [{"t": k * bucket_s, "counts": by.get(k, {})} for k in range(first, last + 1)]


def _latency(store: Store, workflow: str, since: float, sample: int) -> dict[str, float | None]:
    d = t.decisions
    q = (select(d.c.latency_ms).where(d.c.workflow == workflow, d.c.decided_at >= since,
                                      d.c.latency_ms.is_not(None))
         .order_by(d.c.decided_at.desc()).limit(sample))
    with store.engine.connect() as conn:
        lat = np.fromiter((x for (x,) in conn.execute(q)), dtype=np.float64)
    if not lat.size:
        return {"p50": None, "p95": None, "p99": None, "n": 0}
    p50, p95, p99 = np.percentile(lat, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99), "n": int(lat.size)}


def cost_per_day(store: Store, workflow: str, days: int) -> list[dict[str, Any]]:
    d = t.decisions
    today = int(time.time() // DAY_S)
    b = _bucket(store, d.c.decided_at, DAY_S).label("b")
    q = (select(b, func.sum(d.c.cost_usd), func.count())
         .where(d.c.workflow == workflow, d.c.decided_at >= (today - days + 1) * DAY_S)
         .group_by(b))
    with store.engine.connect() as conn:
        found = {int(day): (float(cost or 0.0), int(n)) for day, cost, n in conn.execute(q)}
    return [{"day": time.strftime("%Y-%m-%d", time.gmtime(k * DAY_S)),
             "cost_usd": round(found.get(k, (0.0, 0))[0], 6),
             "decisions": found.get(k, (0.0, 0))[1]}
            for k in range(today - days + 1, today + 1)]


def backlog(store: Store, workflow: str, now: float) -> dict[str, Any]:
    rt = t.review_tasks
    open_ = (rt.c.workflow == workflow) & (rt.c.status == "open")
    with store.engine.connect() as conn:
        by_reason = {k: int(v) for k, v in conn.execute(
            select(rt.c.reason, func.count()).where(open_).group_by(rt.c.reason))}
        overdue = conn.execute(select(func.count()).where(open_, rt.c.due_at < now)).scalar_one()
        oldest = conn.execute(select(func.min(rt.c.created_at)).where(open_)).scalar_one()
    return {"open": sum(by_reason.values()), "by_reason": by_reason, "sla_breaches": int(overdue),
            "oldest_age_s": round(now - oldest, 1) if oldest else None}


def _accuracy(store: Store, workflow: str) -> dict[str, Any]:
    """Audited automatic decisions (:func:`audit_accuracy`, the definition `keel status`
    uses), and how often reviewers kept the model's answer over all reviews."""
    lb = t.labels
    with store.engine.connect() as conn:
        audited = audit_accuracy(conn, workflow)
        right, n = conn.execute(select(
            func.count().filter(lb.c.model_correct.is_(True)), func.count())
            .where(lb.c.workflow == workflow, lb.c.decision != "reject")).one()
    return {"audited": audited,
            "reviewed": {"accuracy": right / n if n else None, "n": int(n),
                         "ci95": exact_ci(int(right), int(n))}}


def _recent_rate(series: list[dict[str, Any]], bucket_s: float, now: float) -> float:
    """Decisions per minute over the last five minutes (at least one bucket)."""
    span = max(300.0, bucket_s)
    recent = sum(sum(p["counts"].values()) for p in series if p["t"] + bucket_s > now - span)
    return recent / (span / 60.0)


def dashboard(store: Store, workflow: str, *, window_s: float = 3600.0, bucket_s: float = 60.0,
              days: int = 14, latency_sample: int = 20000,
              costs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything the live dashboard draws, for one workflow (``costs``: cost per day
    computed earlier, since days change slowly and the scan is the longest)."""
    now = time.time()
    since = now - window_s
    series = _series(store, workflow, since, bucket_s)
    totals: dict[str, int] = defaultdict(int)
    for point in series:
        for disp, n in point["counts"].items():
            totals[disp] += n
    decided = sum(totals.values())
    return {
        "workflow": workflow, "now": now, "window_s": window_s, "bucket_s": bucket_s,
        "series": series, "window_counts": dict(totals), "window_decided": decided,
        "throughput_per_min": decided / (window_s / 60.0),
        "recent_per_min": _recent_rate(series, bucket_s, now),
        "rates": {k: (totals.get(k, 0) / decided if decided else None)
                  for k in ("failed", "fallback", "in_review", "quarantined")},
        "latency_ms": _latency(store, workflow, since, latency_sample),
        "cost_per_day": costs if costs is not None else cost_per_day(store, workflow, days),
        "backlog": backlog(store, workflow, now),
        "accuracy": _accuracy(store, workflow),
        "guarantee": guarantee_status(store, workflow)["guarantee"],
        "out_of_distribution": _ood(store, workflow, since, decided),
        "releases": release_summary(store, workflow),
        "agreement_by_release": agreement_by_release(store, workflow, since=now - days * 86400.0,
                                                     bucket_s=86400.0 if window_s > 86400 else 3600.0),
    }


def _ood(store: Store, workflow: str, since: float, decided: int) -> dict[str, Any]:
    """Records in the window sent to a person because they looked out of distribution."""
    d = t.decisions
    with store.engine.connect() as conn:
        n = conn.execute(select(func.count()).where(
            d.c.workflow == workflow, d.c.decided_at >= since,
            d.c.reason == "out_of_distribution")).scalar_one()
    return {"flagged": int(n), "rate": int(n) / decided if decided else None}


_WORD = re.compile(r"\w+")


def _tokens(value: Any) -> set[str]:
    text = " ".join(str(v) for v in value.values()) if isinstance(value, dict) else str(value)
    return {w.lower() for w in _WORD.findall(text) if len(w) > 2}


def similar_decisions(store: Store, workflow: str, record_id: str, text: Any,
                      predicted: Any, *, limit: int = 5, pool: int = 400) -> list[dict[str, Any]]:
    """Past review decisions like this one: the same predicted output, or similar words."""
    rt, r = t.review_tasks, t.records
    q = (select(rt.c.record_id, rt.c.decision, rt.c.output, rt.c.decided_by, rt.c.decided_at,
                rt.c.reason, r.c.key, r.c.input)
         .select_from(rt.join(r, r.c.id == rt.c.record_id))
         .where(rt.c.workflow == workflow, rt.c.status == "decided", rt.c.record_id != record_id)
         .order_by(rt.c.decided_at.desc()).limit(pool))
    with store.engine.connect() as conn:
        rows = [dict(x) for x in conn.execute(q).mappings()]
        said = _model_outputs(conn, [x["record_id"] for x in rows])
    mine = _tokens(text)
    scored = []
    for row in rows:
        theirs = _tokens(_json.loads(row["input"]))
        overlap = len(mine & theirs) / len(mine | theirs) if mine and theirs else 0.0
        model_said = said.get(row["record_id"])
        same = predicted is not None and model_said == predicted
        score = overlap + (0.5 if same else 0.0)
        if score > 0:
            scored.append((score, row, model_said, same))
    scored.sort(key=lambda s: -s[0])
    return [{"key": row["key"], "record_id": row["record_id"], "workflow": workflow,
             "input": _json.loads(row["input"]), "model_output": model_said,
             "decision": row["decision"],
             "final_output": _json.loads(row["output"]) if row["output"] else model_said,
             "decided_by": row["decided_by"], "decided_at": row["decided_at"],
             "same_prediction": same, "similarity": round(score, 3)}
            for score, row, model_said, same in scored[:limit]]


def _model_outputs(conn: Any, record_ids: list[str]) -> dict[str, Any]:
    p = t.predictions
    out: dict[str, Any] = {}
    for part in _chunks(record_ids):
        q = (select(p.c.record_id, p.c.output).where(p.c.record_id.in_(part))
             .order_by(p.c.created_at))
        for rid, output in conn.execute(q):
            out.setdefault(rid, _json.loads(output) if output else None)
    return out


def output_values(store: Store, workflow: str, field: str, limit: int = 500) -> list[str]:
    """Values seen for one output field (suggestions for the reviewer's correction form)."""
    d = t.decisions
    q = (select(d.c.output).where(d.c.workflow == workflow, d.c.output.is_not(None))
         .order_by(d.c.decided_at.desc()).limit(5000))
    seen: dict[str, None] = {}
    with store.engine.connect() as conn:
        for (raw,) in conn.execute(q):
            value = _json.loads(raw)
            if isinstance(value, dict) and value.get(field) is not None:
                seen.setdefault(str(value[field]), None)
                if len(seen) >= limit:
                    break
    return sorted(seen)

