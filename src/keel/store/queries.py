"""Read-side queries: status, trace, quarantine listings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any

from sqlalchemy import Connection, func, select

from keel import _json
from keel.contracts import DecidedValues, Unique
from keel.store import _schema as t
from keel.store import queue
from keel.store._store import BreakerBook, Store
from keel.store.releases import release_summary
from keel.store.reviews import guarantee_status


def _by_cause(rows: Any) -> dict[str, int]:
    """Failed decisions counted by error code (reasons read ``[code] message``)."""
    out: dict[str, int] = {}
    for reason, n in rows:
        text = reason or ""
        code = text[1:text.index("]")] if text.startswith("[") and "]" in text else text
        out[code or "unknown"] = out.get(code or "unknown", 0) + int(n)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def workflow_names(store: Store) -> list[str]:
    with store.engine.connect() as conn:
        names = {r[0] for r in conn.execute(select(t.workflows.c.name))}
        names |= {r[0] for r in conn.execute(select(t.records.c.workflow).distinct())}
    return sorted(names)


def workflow_sources(store: Store) -> dict[str, str | None]:
    """Workflow name -> the workflow.py it was last run from."""
    with store.engine.connect() as conn:
        return {n: p for n, p in conn.execute(select(t.workflows.c.name, t.workflows.c.source_path))}


def status(store: Store, workflow: str) -> dict[str, Any]:
    r, d, rt = t.records, t.decisions, t.review_tasks
    with store.engine.connect() as conn:
        counts: dict[str, int] = dict(conn.execute(select(d.c.disposition, func.count())
                                   .where(d.c.workflow == workflow).group_by(d.c.disposition)).all())
        total = conn.execute(select(func.count()).select_from(r).where(r.c.workflow == workflow)).scalar_one()
        cost = conn.execute(select(func.coalesce(func.sum(d.c.cost_usd), 0.0))
                            .where(d.c.workflow == workflow)).scalar_one()
        lat = [x for (x,) in conn.execute(select(d.c.latency_ms).where(
            d.c.workflow == workflow, d.c.latency_ms.is_not(None)))]
        backlog: dict[str, int] = dict(conn.execute(select(rt.c.reason, func.count()).where(
            rt.c.workflow == workflow, rt.c.status == "open").group_by(rt.c.reason)).all())
        oldest = conn.execute(select(func.min(rt.c.created_at)).where(
            rt.c.workflow == workflow, rt.c.status == "open")).scalar_one()
        failures = _by_cause(conn.execute(
            select(d.c.reason, func.count()).where(d.c.workflow == workflow,
                                                   d.c.disposition == "failed")
            .group_by(d.c.reason)).all())
        spec = conn.execute(select(t.workflows.c.spec, t.workflows.c.version)
                            .where(t.workflows.c.name == workflow)).first()
        unpriced = _unpriced(conn, workflow)
    decided = sum(counts.values())
    return {
        "workflow": workflow,
        "version": spec[1] if spec else None,
        "records": total,
        "dispositions": {k: int(counts.get(k, 0)) for k in
                         ("accepted", "reviewed", "fallback", "quarantined", "failed", "in_review")},
        "pending": int(total - decided),
        "review_backlog": {"open": int(sum(backlog.values())), "by_reason": backlog,
                           "oldest_created_at": oldest},
        "latency_ms": {"p50": percentile(lat, 50), "p95": percentile(lat, 95)},
        "cost_usd": round(float(cost), 6),
        "cost_unknown": unpriced,
        "failures_by_cause": failures,
        "breakers": BreakerBook(store).for_workflow(workflow),
        "policy": _json.loads(spec[0]).get("policy") if spec else None,
        "releases": release_summary(store, workflow),
        "queue": _queue(store, workflow),
        **guarantee_status(store, workflow),
    }


def _queue(store: Store, workflow: str) -> dict[str, Any]:
    """Records queued for workers (``keel submit``) and the workers deciding them."""
    found = queue.depth(store, workflow)
    live = [w for w in queue.workers(store, workflow) if w["alive"]]
    found["workers"] = len(live)
    found["records_per_s"] = round(sum(w["records_per_s"] for w in live), 3)
    return found


#: how an answer from a model with no known price is marked in its metadata (keel._json)
UNPRICED = '%"price":"unknown"%'


def _unpriced(conn: Connection, workflow: str) -> dict[str, int]:
    """Answers whose cost is unknown (a model with no price): keel never counts them as $0."""
    p, r = t.predictions, t.records
    n, tin, tout = conn.execute(
        select(func.count(), func.coalesce(func.sum(p.c.input_tokens), 0),
               func.coalesce(func.sum(p.c.output_tokens), 0))
        .select_from(p.join(r, r.c.id == p.c.record_id))
        .where(r.c.workflow == workflow, p.c.metadata.like(UNPRICED))).one()
    return {"answers": int(n), "input_tokens": int(tin), "output_tokens": int(tout)}


def expand_segments(rows: Iterable[Mapping[str, Any]] | Any) -> list[dict[str, Any]]:
    """One record's stored segments (in order) as its events, numbered from 1; each names the
    segment it was written in and that segment's hash."""
    out: list[dict[str, Any]] = []
    for seg in rows:
        for ev in _json.loads(seg["entries"]):
            out.append({"seq": len(out) + 1, "kind": ev["kind"], "at": ev["at"],
                        "actor": ev.get("actor"), "model_version": ev.get("model_version"),
                        "latency_ms": ev.get("latency_ms"), "cost_usd": ev.get("cost_usd"),
                        "detail": ev.get("detail"), "segment": seg["seq"],
                        "hash": seg["hash"], "prev_hash": seg["prev_hash"]})
    return out


def trace(store: Store, key: str, workflow: str | None = None) -> list[dict[str, Any]]:
    """Every record with this key (one per workflow, or the one workflow given); a record id
    finds its record too (links use ids, so a key holding personal data is never in a URL)."""
    r, e, d, p, rt = t.records, t.events, t.decisions, t.predictions, t.review_tasks
    out = []
    with store.engine.connect() as conn:
        q = select(r).where(r.c.key == key)
        if workflow:
            q = q.where(r.c.workflow == workflow)
        found = conn.execute(q).mappings().all()
        if not found:
            found = conn.execute(select(r).where(r.c.id == key)).mappings().all()
        for rec in found:
            rid = rec["id"]
            evs = expand_segments(conn.execute(select(e).where(e.c.record_id == rid)
                                               .order_by(e.c.seq)).mappings())
            dec = conn.execute(select(d).where(d.c.record_id == rid)).mappings().first()
            preds = [dict(x) for x in conn.execute(select(p).where(p.c.record_id == rid)
                                                   .order_by(p.c.created_at)).mappings()]
            tasks = [dict(x) for x in conn.execute(select(rt).where(rt.c.record_id == rid)
                                                   .order_by(rt.c.created_at)).mappings()]
            decision = dict(dec) if dec else None
            if decision:
                decision["output"] = _json.loads(decision["output"])
                decision["release"] = _release_name(conn, decision.get("release_id"))
            for pr in preds:
                pr["output"] = _json.loads(pr["output"])
                pr["metadata"] = _json.loads(pr["metadata"])
            for tk in tasks:
                tk["output"] = _json.loads(tk["output"])
            out.append({"record_id": rid, "workflow": rec["workflow"], "key": rec["key"],
                        "input": _json.loads(rec["input"]), "source": rec["source"],
                        "created_at": rec["created_at"], "decision": decision,
                        "predictions": preds, "review_tasks": tasks, "events": evs})
    return out


def _release_name(conn: Connection, release_id: str | None) -> str | None:
    if release_id is None:
        return None
    name = conn.execute(select(t.releases.c.name).where(t.releases.c.id == release_id)).scalar()
    return str(name) if name is not None else release_id


def quarantined(store: Store, workflow: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    q_, r = t.quarantine, t.records
    q = (select(q_.c.record_id, q_.c.workflow, q_.c.source, q_.c.violations, q_.c.created_at,
                r.c.key, r.c.input)
         .select_from(q_.join(r, r.c.id == q_.c.record_id)).where(q_.c.status == "open")
         .order_by(q_.c.created_at).limit(limit))
    if workflow:
        q = q.where(q_.c.workflow == workflow)
    with store.engine.connect() as conn:
        rows = [dict(x) for x in conn.execute(q).mappings()]
    for row in rows:
        row["violations"] = _json.loads(row["violations"])
        row["input"] = _json.loads(row["input"])
    return rows


def realized_accuracy(store: Store, workflow: str, truth: dict[str, str],
                      field: str = "intent") -> dict[str, Any]:
    """Accuracy of automatic decisions (accepted, fallback) against held-back labels."""
    r, d = t.records, t.decisions
    q = (select(r.c.key, d.c.disposition, d.c.output)
         .select_from(r.join(d, d.c.record_id == r.c.id)).where(r.c.workflow == workflow))
    auto = correct = total = 0
    by_disp: dict[str, list[int]] = {}
    with store.engine.connect() as conn:
        for key, disp, output in conn.execute(q):
            if key not in truth:
                continue
            total += 1
            if disp in ("accepted", "fallback"):
                auto += 1
                ok = int((_json.loads(output) or {}).get(field) == truth[key])
                correct += ok
                by_disp.setdefault(disp, [0, 0])
                by_disp[disp][0] += ok
                by_disp[disp][1] += 1
    return {
        "labelled_records": total,
        "automated": auto,
        "coverage": auto / total if total else None,
        "accuracy_automated": correct / auto if auto else None,
        "by_disposition": {k: {"correct": v[0], "total": v[1]} for k, v in by_disp.items()},
    }


def decisions_by_key(store: Store, workflow: str) -> dict[str, dict[str, Any]]:
    """Every decided record of a workflow: key -> disposition, reason and output (as stored,
    unmasked: for scoring a run against held-back truth)."""
    r, d = t.records, t.decisions
    q = (select(r.c.key, d.c.disposition, d.c.reason, d.c.output)
         .select_from(r.join(d, d.c.record_id == r.c.id)).where(r.c.workflow == workflow))
    with store.engine.connect() as conn:
        return {key: {"disposition": disp, "reason": reason,
                      "output": _json.loads(output) if output else None}
                for key, disp, reason, output in conn.execute(q)}


#: the dispositions whose output is decided (a reject leaves none)
DECIDED = ("accepted", "reviewed", "fallback")


def decided_outputs(store: Store, workflow: str,
                    since: float | None = None) -> list[tuple[str, Any, float]]:
    """(key, output, decided_at) of the workflow's records decided with an output, those
    decided at or after ``since`` only when given (read through the (workflow, decided_at)
    index: a refresh reads what is new, not the whole table)."""
    r, d = t.records, t.decisions
    q = (select(r.c.key, d.c.output, d.c.decided_at).select_from(d.join(r, r.c.id == d.c.record_id))
         .where(d.c.workflow == workflow, d.c.disposition.in_(DECIDED), d.c.output.is_not(None)))
    if since is not None:
        q = q.where(d.c.decided_at >= since)
    with store.engine.connect() as conn:
        return [(k, _json.loads(out), float(at)) for k, out, at in conn.execute(q)]


def watch_decided(unique: Iterable[Unique], store: Store, workflow: str) -> list[DecidedValues]:
    """Bind each unique check to the workflow's decided outputs in ``store`` (read now; call
    ``refresh()`` on what this returns to learn what was decided since)."""
    books = list({id(c.book): c.book for c in unique}.values())
    for book in books:
        book.bind(partial(decided_outputs, store, workflow))
    return books


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile with linear interpolation (NumPy's default), without NumPy:
    reading a store's status must not pay for importing it."""
    if not values:
        return None
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (pos - low))


def recent_inputs(store: Store, workflow: str, n: int) -> list[str]:
    """The stored inputs of the workflow's ``n`` newest records (as the store keeps them)."""
    r = t.records
    with store.engine.connect() as conn:
        return [str(x) for (x,) in conn.execute(select(r.c.input).where(r.c.workflow == workflow)
                                                .order_by(r.c.created_at.desc()).limit(n))]


def key_counts(store: Store, workflow: str) -> dict[str, int]:
    """Records per key (more than one: a key decided twice)."""
    r = t.records
    with store.engine.connect() as conn:
        return {str(k): int(c) for k, c in conn.execute(
            select(r.c.key, func.count()).where(r.c.workflow == workflow).group_by(r.c.key))}


def failed_attempts(store: Store, workflow: str) -> int:
    """Model calls that failed (errors, timeouts, malformed answers), over all decisions."""
    d = t.decisions
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(d.c.failed_attempts), 0))
                                .where(d.c.workflow == workflow)).scalar_one())
