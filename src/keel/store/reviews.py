"""Review tasks, leases, decisions and labels: the SQL side of ``keel.review``.

Every write that must not race (claim, decide, escalate) is one conditional UPDATE whose
``WHERE`` clause states the rule (task open, lease free or ours), so two reviewers can never
both win, on SQLite or PostgreSQL. The caller learns why an update matched nothing from
:func:`task_row` afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, case, func, or_, select, update
from sqlalchemy.sql import ColumnElement

from keel import _json
from keel._record import new_id
from keel.store import _schema as t
from keel.store._store import Store

_TASK_JSON = ("output",)


def _task(row: Any) -> dict[str, Any]:
    out = dict(row)
    for name in _TASK_JSON:
        if name in out:
            out[name] = _json.loads(out[name])
    return out


def _claimable(reviewer: str, now: float) -> ColumnElement[bool]:
    rt = t.review_tasks
    return or_(rt.c.claimed_by.is_(None), rt.c.claimed_by == reviewer, rt.c.lease_until < now)


def task_row(store: Store, task_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(t.review_tasks)
                           .where(t.review_tasks.c.id == task_id)).mappings().first()
    return _task(row) if row else None


def list_tasks(store: Store, *, status: str | None, reason: str | None, workflow: str | None,
               limit: int, queue: str | None = None) -> list[dict[str, Any]]:
    """Tasks with their record's key and confidence, priority first, then earliest due."""
    rt, r, d = t.review_tasks, t.records, t.decisions
    q = (select(rt, r.c.key, d.c.confidence, d.c.model_version, d.c.output.label("model_output"))
         .select_from(rt.join(r, r.c.id == rt.c.record_id)
                      .outerjoin(d, d.c.record_id == rt.c.record_id))
         .order_by(rt.c.priority.desc(), rt.c.due_at, rt.c.created_at, rt.c.id).limit(limit))
    for col, value in ((rt.c.status, status), (rt.c.reason, reason), (rt.c.workflow, workflow),
                       (rt.c.queue, queue)):
        if value is not None:
            q = q.where(col == value)
    with store.engine.connect() as conn:
        rows = [_task(x) for x in conn.execute(q).mappings()]
    for row in rows:
        row["model_output"] = _json.loads(row["model_output"])
    return rows


def task_context(store: Store, task_id: str) -> dict[str, Any] | None:
    """A task with everything a reviewer needs: input, model output, confidence, parent."""
    rt, r, d, p = t.review_tasks, t.records, t.decisions, t.predictions
    with store.engine.connect() as conn:
        task = conn.execute(select(rt).where(rt.c.id == task_id)).mappings().first()
        if task is None:
            return None
        out = _task(task)
        rec = conn.execute(select(r.c.key, r.c.input, r.c.source)
                           .where(r.c.id == out["record_id"])).first()
        dec = conn.execute(select(d).where(d.c.record_id == out["record_id"])).mappings().first()
        preds = conn.execute(select(p.c.model_version, p.c.output, p.c.confidence, p.c.step)
                             .where(p.c.record_id == out["record_id"])
                             .order_by(p.c.created_at)).mappings().all()
        parent = None
        if out["parent_id"]:
            parent = conn.execute(select(rt).where(rt.c.id == out["parent_id"])).mappings().first()
    if rec is None:
        return None
    out["key"], out["input"], out["source"] = rec[0], _json.loads(rec[1]), rec[2]
    decision = dict(dec) if dec else {}
    out["disposition"] = decision.get("disposition")
    out["model_version"] = decision.get("model_version")
    out["decision_output"] = _json.loads(decision.get("output"))
    out["policy_version"] = decision.get("policy_version")
    pred = next((x for x in reversed(preds) if x["model_version"] == out["model_version"]),
                preds[-1] if preds else None)
    out["answers"] = [{"step": x["step"], "model_version": x["model_version"],
                       "output": _json.loads(x["output"]), "confidence": x["confidence"]}
                      for x in preds]
    out["model_output"] = _json.loads(pred["output"]) if pred else None
    out["confidence"] = pred["confidence"] if pred else decision.get("confidence")
    out["model_version"] = pred["model_version"] if pred else out["model_version"]
    out["parent"] = _task(parent) if parent else None
    return out


def claim(store: Store, task_id: str, reviewer: str, lease_s: float, now: float) -> bool:
    """Take (or extend) the lease on an open task; False if it is not claimable by ``reviewer``."""
    rt = t.review_tasks
    with store.tx() as conn:
        done = conn.execute(update(rt).where(rt.c.id == task_id, rt.c.status == "open",
                                             _claimable(reviewer, now))
                            .values(claimed_by=reviewer, lease_until=now + lease_s,
                                    # handling time runs from the first claim of this holder
                                    claimed_at=case((and_(rt.c.claimed_by == reviewer,
                                                          rt.c.claimed_at.is_not(None)),
                                                     rt.c.claimed_at), else_=now)))
    return bool(done.rowcount)


def claim_candidates(store: Store, reviewer: str, now: float, *, workflow: str | None,
                     reason: str | None, skip: Sequence[str], limit: int = 25) -> list[str]:
    """Ids of open tasks ``reviewer`` may claim, in queue order.

    A second review is never offered to the person who made the first decision.
    """
    rt = t.review_tasks
    parent = rt.alias("parent")
    q = (select(rt.c.id).select_from(rt.outerjoin(parent, parent.c.id == rt.c.parent_id))
         .where(rt.c.status == "open", _claimable(reviewer, now),
                or_(parent.c.decided_by.is_(None), parent.c.decided_by != reviewer))
         .order_by(rt.c.priority.desc(), rt.c.due_at, rt.c.created_at, rt.c.id).limit(limit))
    if workflow is not None:
        q = q.where(rt.c.workflow == workflow)
    if reason is not None:
        q = q.where(rt.c.reason == reason)
    if skip:
        q = q.where(rt.c.id.not_in(list(skip)))
    with store.engine.connect() as conn:
        return [x for (x,) in conn.execute(q)]


def release(store: Store, task_id: str, reviewer: str) -> bool:
    rt = t.review_tasks
    with store.tx() as conn:
        done = conn.execute(update(rt).where(rt.c.id == task_id, rt.c.status == "open",
                                             rt.c.claimed_by == reviewer)
                            .values(claimed_by=None, claimed_at=None, lease_until=None))
    return bool(done.rowcount)


@dataclass
class DecisionWrite:
    """Everything one review decision changes, written in one transaction."""

    task: dict[str, Any]             # the task as read by task_context
    reviewer: str
    decision: str                    # accept | correct | reject
    output: dict[str, Any] | None    # the decided output (None on reject)
    note: str | None
    now: float
    record_update: dict[str, Any] | None   # new values for the record's decisions row
    event: dict[str, Any]            # detail of the `reviewed` event
    label: dict[str, Any] | None     # the labelled example, None when a second review follows
    second_review: dict[str, Any] | None = None  # a follow-up task row to open


def commit_decision(store: Store, w: DecisionWrite) -> bool:
    """Decide the task if it is still open and not leased by someone else; False otherwise."""
    rt, d = t.review_tasks, t.decisions
    task = w.task
    with store.tx() as conn:
        done = conn.execute(
            update(rt).where(rt.c.id == task["id"], rt.c.status == "open",
                             _claimable(w.reviewer, w.now))
            .values(status="decided", decided_by=w.reviewer, decided_at=w.now,
                    decision=w.decision,
                    output=_json.dumps(w.output) if w.output is not None else None,
                    note=w.note, claimed_by=w.reviewer, lease_until=None))
        if not done.rowcount:
            return False
        if w.record_update:
            conn.execute(update(d).where(d.c.record_id == task["record_id"])
                         .values(**w.record_update))
            # Sinks that received the earlier decision are owed this one: the next run with
            # the sink, or `keel deliveries retry`, sends it.
            dl = t.deliveries
            conn.execute(update(dl).where(dl.c.record_id == task["record_id"],
                                          dl.c.status == "delivered")
                         .values(status="pending", updated_at=w.now))
        if w.second_review:
            conn.execute(rt.insert().values(**w.second_review))
        if w.label:
            conn.execute(t.labels.insert().values(id=new_id(), **w.label))
        store.append_event(conn, task["workflow"], task["record_id"], "reviewed",
                           actor=w.reviewer, detail=w.event,
                           model_version=task.get("model_version"))
    return True


def open_task(store: Store, row: dict[str, Any], event: dict[str, Any], actor: str) -> None:
    """Insert a review task (a reopened decision, say) and record it on the record's chain."""
    with store.tx() as conn:
        conn.execute(t.review_tasks.insert().values(**row))
        store.append_event(conn, row["workflow"], row["record_id"], "review_requested",
                           actor=actor, detail=event)


def find_record(store: Store, workflow: str, key: str) -> dict[str, Any] | None:
    r, d = t.records, t.decisions
    with store.engine.connect() as conn:
        row = conn.execute(select(r.c.id, r.c.key, d.c.disposition)
                           .select_from(r.outerjoin(d, d.c.record_id == r.c.id))
                           .where(r.c.workflow == workflow, r.c.key == key)).mappings().first()
        if row is None:
            return None
        busy = conn.execute(select(t.review_tasks.c.id).where(
            t.review_tasks.c.record_id == row["id"], t.review_tasks.c.status == "open")).first()
    return {**dict(row), "open_task": busy[0] if busy else None}


def overdue(store: Store, now: float, workflow: str | None = None) -> list[dict[str, Any]]:
    """Open tasks past their due time that have not been escalated yet."""
    rt = t.review_tasks
    q = select(rt).where(rt.c.status == "open", rt.c.due_at < now, rt.c.escalated_at.is_(None))
    if workflow is not None:
        q = q.where(rt.c.workflow == workflow)
    with store.engine.connect() as conn:
        return [_task(x) for x in conn.execute(q.order_by(rt.c.due_at)).mappings()]


def escalate(store: Store, task: dict[str, Any], queue: str, priority: int, now: float,
             detail: dict[str, Any]) -> bool:
    """Move an overdue task to the escalation queue (once) and record it on the record's chain."""
    rt = t.review_tasks
    with store.tx() as conn:
        done = conn.execute(update(rt).where(rt.c.id == task["id"], rt.c.status == "open",
                                             rt.c.escalated_at.is_(None))
                            .values(escalated_at=now, queue=queue, priority=priority))
        if not done.rowcount:
            return False
        store.append_event(conn, task["workflow"], task["record_id"], "escalated",
                           actor="keel", detail=detail)
    return True


def workflow_spec(store: Store, workflow: str) -> dict[str, Any] | None:
    """The stored declaration of a workflow (owners, policy) and where its file lives."""
    w = t.workflows
    with store.engine.connect() as conn:
        row = conn.execute(select(w.c.spec, w.c.source_path).where(w.c.name == workflow)).first()
    if row is None:
        return None
    spec: dict[str, Any] = _json.loads(row[0])
    spec["source_path"] = row[1]
    return spec


# -- labels ----------------------------------------------------------------------------------
def labels(store: Store, workflow: str | None = None, *, sampled_only: bool = False,
           conn: Connection | None = None) -> list[dict[str, Any]]:
    """Every labelled example (oldest first), JSON columns decoded."""
    lb = t.labels
    q = select(lb).order_by(lb.c.decided_at, lb.c.id)
    if workflow is not None:
        q = q.where(lb.c.workflow == workflow)
    if sampled_only:
        q = q.where(lb.c.sampled.is_(True))
    with store.engine.connect() as c:
        rows = [dict(x) for x in c.execute(q).mappings()]
    for row in rows:
        for name in ("input", "model_output", "label"):
            row[name] = _json.loads(row[name])
    return rows


def audit_accuracy(conn: Connection, workflow: str, *, policy_version: str | None = None,
                   since: float | None = None) -> dict[str, Any]:
    """The realized accuracy of automatic decisions, measured by their audits: of the audited
    automatic decisions a person has decided, the share where the person kept the model's
    answer. A correction and a rejection (no right answer: the record should not have been
    automated) both count as wrong. ``ci95`` is the exact (Clopper-Pearson) 95% interval.

    The one definition keel uses: `keel status`, the dashboard and the alert rules read it.
    """
    lb = t.labels
    cond = [lb.c.workflow == workflow, lb.c.reason == "audit_sample"]
    if policy_version is not None:
        cond.append(lb.c.policy_version == policy_version)
    if since is not None:
        cond.append(lb.c.decided_at >= since)
    counts = {(bool(ok), str(dec)): int(n) for ok, dec, n in conn.execute(
        select(lb.c.model_correct, lb.c.decision, func.count()).where(and_(*cond))
        .group_by(lb.c.model_correct, lb.c.decision))}
    n = sum(counts.values())
    right = sum(v for (ok, _d), v in counts.items() if ok)
    rejected = sum(v for (_ok, d), v in counts.items() if d == "reject")
    return {"accuracy": right / n if n else None, "n": n, "correct": right,
            "wrong": n - right, "rejected": rejected, "ci95": exact_ci(right, n)}


def violation_evidence(errors: int, n: int, target_accuracy: float) -> float:
    """Evidence that the error rate of audited automatic decisions is above 1 - target: the
    likelihood ratio of "error rate p" to "error rate 1 - target", averaged over p uniform
    above 1 - target (a mixture sequential probability ratio test).

    While the guarantee holds, the chance that this ever reaches 1 / delta, however often it
    is looked at and however many audits arrive, is at most delta (Ville's inequality): it
    is a supermartingale under every error rate at or below the target's. So a guarantee can
    be declared void when it does, with no correction for watching it continuously.
    """
    if n == 0:
        return 1.0
    import math

    from scipy.special import betaincc, betaln

    alpha = 1.0 - target_accuracy
    k = errors
    tail = float(betaincc(k + 1, n - k + 1, alpha))  # share of Beta(k+1, n-k+1) above alpha
    if tail <= 0.0:
        return 0.0
    log_m = (betaln(k + 1, n - k + 1) + math.log(tail) - math.log(1.0 - alpha)
             - k * math.log(alpha) - (n - k) * math.log(1.0 - alpha))
    return float(math.exp(min(log_m, 700.0)))


def exact_ci(hits: int, n: int, confidence: float = 0.95) -> list[float] | None:
    """Clopper-Pearson interval for a proportion (None without observations)."""
    if n == 0:
        return None
    # start-up: scipy.special only when there is something to bound (scipy.stats costs ~1 s)
    from scipy.special import betaincinv

    tail = (1.0 - confidence) / 2.0
    low = 0.0 if hits == 0 else float(betaincinv(hits, n - hits + 1, tail))
    high = 1.0 if hits == n else float(betaincinv(hits + 1, n - hits, 1.0 - tail))
    return [low, high]


# -- routing policies ------------------------------------------------------------------------
def save_routing_policy(store: Store, workflow: str, params: dict[str, Any],
                        evidence: dict[str, Any], *, activate: bool = True) -> str:
    """Store a calibrated policy as ``<workflow>@<n>``; activating it retires the previous one."""
    rp = t.routing_policies
    with store.tx() as conn:
        n = conn.execute(select(func.count()).select_from(rp)
                         .where(rp.c.workflow == workflow)).scalar_one()
        version = f"{workflow}@{n + 1}"
        if activate:
            conn.execute(update(rp).where(rp.c.workflow == workflow, rp.c.active.is_(True))
                         .values(active=False))
        conn.execute(rp.insert().values(version=version, workflow=workflow,
                                        params=_json.dumps(params), evidence=_json.dumps(evidence),
                                        active=activate, created_at=time.time()))
    return version


def active_routing_policy(store: Store, workflow: str) -> dict[str, Any] | None:
    """The routing policy in force for ``workflow`` (None: the one declared in workflow.py)."""
    rp = t.routing_policies
    with store.engine.connect() as conn:
        row = conn.execute(select(rp).where(rp.c.workflow == workflow, rp.c.active.is_(True))
                           .order_by(rp.c.created_at.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["params"], out["evidence"] = _json.loads(out["params"]), _json.loads(out["evidence"])
    return out


def champion_version(store: Store, workflow: str) -> str | None:
    """The model version most recently registered as the workflow's primary (``champion``)."""
    mv = t.model_versions
    with store.engine.connect() as conn:
        row = conn.execute(select(mv.c.version).where(mv.c.workflow == workflow,
                                                      mv.c.alias == "champion")
                           .order_by(mv.c.created_at.desc()).limit(1)).first()
    return row[0] if row else None


def live_model_version(store: Store, workflow: str) -> str | None:
    """The model version behind the workflow's most recent primary prediction."""
    p, r = t.predictions, t.records
    with store.engine.connect() as conn:
        row = conn.execute(select(p.c.model_version).select_from(p.join(r, r.c.id == p.c.record_id))
                           .where(r.c.workflow == workflow, p.c.step == "primary")
                           .order_by(p.c.created_at.desc()).limit(1)).first()
    return row[0] if row else None


def guarantee_status(store: Store, workflow: str) -> dict[str, Any]:
    """The calibrated guarantee in force, and the realized accuracy of audited auto-decisions
    (under that policy once it has routed decisions; see :func:`audit_accuracy`)."""
    active = active_routing_policy(store, workflow)
    guarantee = None
    if active is not None:
        params, ev = active["params"], active["evidence"] or {}
        live = live_model_version(store, workflow)
        with store.engine.connect() as conn:
            routed = conn.execute(select(func.count()).select_from(t.decisions).where(
                t.decisions.c.workflow == workflow,
                t.decisions.c.policy_version == active["version"])).scalar_one()
        guarantee = {
            "version": active["version"], "target_accuracy": params.get("target_accuracy"),
            "delta": params.get("delta"), "method": params.get("method"),
            "threshold": params.get("threshold"), "per_class": len(params.get("per_class") or {}),
            "expected_coverage": ev.get("coverage"), "accuracy_bound": ev.get("accuracy_bound"),
            "labels": ev.get("used"), "source": ev.get("source"),
            "model_version": params.get("model_version"), "live_model_version": live,
            "in_force": live is None or live == params.get("model_version"),
            "decisions_routed": int(routed), "created_at": active["created_at"],
        }
    version = guarantee["version"] if guarantee and guarantee["decisions_routed"] else None
    with store.engine.connect() as conn:
        acc = audit_accuracy(conn, workflow, policy_version=version)
    realized: dict[str, Any] = {"audited": acc["n"], "correct": acc["correct"],
                                "rejected": acc["rejected"], "policy_version": version,
                                "accuracy": acc["accuracy"], "ci95": acc["ci95"]}
    if guarantee is not None:
        guarantee.update(_watch(guarantee, acc if version else None))
    return {"guarantee": guarantee, "realized_accuracy": realized}


def guarantee_watch(store: Store, workflow: str, version: str,
                    params: dict[str, Any]) -> dict[str, Any]:
    """Is the guarantee of the stored policy ``version`` contradicted by the audits of the
    decisions it routed? (what `keel status` shows, for one policy)."""
    with store.engine.connect() as conn:
        acc = audit_accuracy(conn, workflow, policy_version=version)
    out = _watch({"target_accuracy": params.get("target_accuracy"),
                  "delta": params.get("delta")}, acc)
    return {**out, "audited": acc["n"], "wrong": acc["n"] - acc["correct"]}


def _watch(guarantee: dict[str, Any], acc: dict[str, Any] | None) -> dict[str, Any]:
    """Is the guarantee contradicted by the audits of the decisions it routed?"""
    target, delta = guarantee["target_accuracy"], guarantee["delta"]
    if acc is None or not acc["n"] or target is None or delta is None:
        return {"void": False, "violation_evidence": None}
    evidence = violation_evidence(acc["n"] - acc["correct"], acc["n"], target)
    return {"void": evidence >= 1.0 / delta, "violation_evidence": evidence}


def model_version_alias(store: Store, version: str) -> str | None:
    """The alias of a registered model version ('' when it has none); None if unknown."""
    mv = t.model_versions
    with store.engine.connect() as conn:
        row = conn.execute(select(mv.c.alias).where(mv.c.version == version)).first()
    return None if row is None else (row[0] or "")
