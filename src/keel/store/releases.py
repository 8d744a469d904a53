"""Releases in the store: the bundles that decide records, their aliases and history, the
model artifacts that make them runnable, rollouts, eval runs and shadow answers.

Every change of an alias or a rollout's state is a release event (who, why, with what
evidence) and a segment on the audit trail of the workflow's release record
(:func:`trail_id`), sealed in the ledger like any decision.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import Connection, and_, func, select, update

from keel import _json
from keel._record import new_id
from keel.errors import NotFoundError, UserError
from keel.store import _schema as t
from keel.store._store import Store, _chunks

CHAMPION, CHALLENGER = "champion", "challenger"
#: A rollout in one of these states is under way (one per workflow at a time).
ACTIVE = ("running", "paused", "awaiting_approval")
#: ... and in these it has ended.
ENDED = ("promoted", "rolled_back", "aborted", "passed")


def trail_id(workflow: str) -> str:
    """The record id under which a workflow's release events are chained on the audit trail."""
    return "rel-" + hashlib.sha256(workflow.encode()).hexdigest()[:24]


def _row(r: Any) -> dict[str, Any]:
    out = dict(r)
    out["spec"] = _json.loads(out["spec"])
    return out


# -- releases -----------------------------------------------------------------------------------
def save_release(store: Store, release: dict[str, Any],
                 artifact: bytes | None) -> tuple[dict[str, Any], bool]:
    """Store a release (and its artifact): (the release, whether it is new). An identical one
    already stored is returned as it is. A name taken by another release is a UserError."""
    rl = t.releases
    now = time.time()
    sha = hashlib.sha256(artifact).hexdigest() if artifact is not None else None
    with store.tx() as conn:
        found = conn.execute(select(rl).where(rl.c.id == release["id"])).mappings().first()
        if found is not None:
            if sha and not found["artifact"]:
                conn.execute(update(rl).where(rl.c.id == release["id"]).values(artifact=sha))
                _save_artifact(conn, sha, artifact, now)
                return _row({**found, "artifact": sha}), False
            return _row(found), False
        taken = conn.execute(select(rl.c.id).where(rl.c.workflow == release["workflow"],
                                                   rl.c.name == release["name"])).first()
        if taken is not None:
            raise UserError(f"release name {release['name']!r} is taken in "
                            f"{release['workflow']} (by {taken[0][:12]}); choose another --name")
        if sha is not None:
            _save_artifact(conn, sha, artifact, now)
        row = {**release, "spec": _json.dumps(release["spec"]), "artifact": sha,
               "created_at": now}
        conn.execute(rl.insert().values(**row))
        _event(store, conn, release["workflow"], "registered", release["id"], None,
               release.get("created_by"), release.get("note"), {"name": release["name"]}, now)
    return {**release, "artifact": sha, "created_at": now}, True


def next_name(store: Store, workflow: str) -> str:
    """The next free automatic release name: r1, r2, ..."""
    taken = {r["name"] for r in releases(store, workflow)}
    n = sum(1 for name in taken if name[:1] == "r" and name[1:].isdigit()) + 1
    while f"r{n}" in taken:
        n += 1
    return f"r{n}"


def _save_artifact(conn: Connection, sha: str, data: bytes | None, now: float) -> None:
    ra = t.release_artifacts
    if data is None or conn.execute(select(ra.c.sha256).where(ra.c.sha256 == sha)).first():
        return
    conn.execute(ra.insert().values(sha256=sha, data=data, size=len(data), created_at=now))


def artifact(store: Store, sha: str) -> bytes | None:
    ra = t.release_artifacts
    with store.engine.connect() as conn:
        row = conn.execute(select(ra.c.data).where(ra.c.sha256 == sha)).first()
    return bytes(row[0]) if row else None


def release(store: Store, workflow: str, name_or_id: str) -> dict[str, Any]:
    """A release by name, id or id prefix (at least 6 characters); NotFoundError otherwise."""
    rl = t.releases
    with store.engine.connect() as conn:
        row = conn.execute(select(rl).where(rl.c.workflow == workflow,
                                            rl.c.name == name_or_id)).mappings().first()
        if row is None and len(name_or_id) >= 6:
            rows = conn.execute(select(rl).where(rl.c.workflow == workflow,
                                                 rl.c.id.startswith(name_or_id))).mappings().all()
            row = rows[0] if len(rows) == 1 else None
    if row is None:
        names = ", ".join(r["name"] for r in releases(store, workflow)) or "none yet"
        raise NotFoundError(f"no release {name_or_id!r} in {workflow}; releases: {names} "
                            "(`keel releases list`)")
    return _row(row)


def release_by_id(store: Store, release_id: str) -> dict[str, Any] | None:
    rl = t.releases
    with store.engine.connect() as conn:
        row = conn.execute(select(rl).where(rl.c.id == release_id)).mappings().first()
    return _row(row) if row else None


def releases(store: Store, workflow: str) -> list[dict[str, Any]]:
    rl = t.releases
    with store.engine.connect() as conn:
        rows = conn.execute(select(rl).where(rl.c.workflow == workflow)
                            .order_by(rl.c.created_at)).mappings().all()
    return [_row(r) for r in rows]


def count_releases(store: Store, workflow: str) -> int:
    rl = t.releases
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(rl)
                                .where(rl.c.workflow == workflow)).scalar_one())


# -- aliases and history ------------------------------------------------------------------------
def aliases(store: Store, workflow: str) -> dict[str, str]:
    """{alias: release id} now."""
    ra = t.release_aliases
    with store.engine.connect() as conn:
        return {a: r for a, r in conn.execute(select(ra.c.alias, ra.c.release_id)
                                              .where(ra.c.workflow == workflow))}


def move_alias(store: Store, workflow: str, alias: str, release_id: str | None, *,
               kind: str, actor: str | None, reason: str | None,
               evidence: dict[str, Any] | None = None) -> None:
    """Point ``alias`` at ``release_id`` (None: remove it), with a release event and a segment
    on the audit trail, in one transaction."""
    ra = t.release_aliases
    now = time.time()
    with store.tx() as conn:
        conn.execute(ra.delete().where(ra.c.workflow == workflow, ra.c.alias == alias))
        if release_id is not None:
            conn.execute(ra.insert().values(workflow=workflow, alias=alias,
                                            release_id=release_id, since=now))
        _event(store, conn, workflow, kind, release_id, alias, actor, reason, evidence, now)


def record_event(store: Store, workflow: str, kind: str, release_id: str | None, *,
                 actor: str | None, reason: str | None,
                 evidence: dict[str, Any] | None = None) -> None:
    with store.tx() as conn:
        _event(store, conn, workflow, kind, release_id, None, actor, reason, evidence,
               time.time())


def _event(store: Store, conn: Connection, workflow: str, kind: str, release_id: str | None,
           alias: str | None, actor: str | None, reason: str | None,
           evidence: dict[str, Any] | None, now: float) -> None:
    conn.execute(t.release_events.insert().values(
        id=new_id(), workflow=workflow, at=now, kind=kind, release_id=release_id, alias=alias,
        actor=actor, reason=reason, evidence=_json.dumps(evidence) if evidence else None))
    store.append_event(conn, workflow, trail_id(workflow), f"release_{kind}", actor=actor,
                       detail={"release_id": release_id, "alias": alias, "reason": reason,
                               "evidence": evidence})


def history(store: Store, workflow: str, *, until: float | None = None,
            limit: int = 1000) -> list[dict[str, Any]]:
    """Release events, oldest first (up to ``until``)."""
    re_ = t.release_events
    q = select(re_).where(re_.c.workflow == workflow)
    if until is not None:
        q = q.where(re_.c.at <= until)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(re_.c.at).limit(limit)).mappings()]
    for r in rows:
        r["evidence"] = _json.loads(r["evidence"]) if r["evidence"] else None
    return rows


def aliases_at(store: Store, workflow: str, at: float) -> dict[str, str]:
    """{alias: release id} as they stood at time ``at``: replayed from the history."""
    now: dict[str, str] = {}
    for ev in history(store, workflow, until=at):
        if ev["alias"] is None:
            continue
        if ev["release_id"] is None:
            now.pop(ev["alias"], None)
        else:
            now[ev["alias"]] = ev["release_id"]
    return now


# -- rollouts -----------------------------------------------------------------------------------
def active_rollout(store: Store, workflow: str) -> dict[str, Any] | None:
    """The rollout running or paused for ``workflow``, if any."""
    ro = t.rollouts
    with store.engine.connect() as conn:
        row = conn.execute(select(ro).where(ro.c.workflow == workflow,
                                            ro.c.status.in_(ACTIVE))
                           .order_by(ro.c.started_at.desc()).limit(1)).mappings().first()
    return _rollout(row) if row else None


def last_rollout(store: Store, workflow: str) -> dict[str, Any] | None:
    ro = t.rollouts
    with store.engine.connect() as conn:
        row = conn.execute(select(ro).where(ro.c.workflow == workflow)
                           .order_by(ro.c.started_at.desc()).limit(1)).mappings().first()
    return _rollout(row) if row else None


def _rollout(row: Any) -> dict[str, Any]:
    out = dict(row)
    for name in ("steps", "settings", "evidence"):
        out[name] = _json.loads(out[name]) if out[name] else None
    return out


def start_rollout(store: Store, rollout: dict[str, Any], actor: str | None,
                  reason: str | None) -> dict[str, Any]:
    ro = t.rollouts
    now = time.time()
    row = {**rollout, "steps": _json.dumps(rollout["steps"]),
           "settings": _json.dumps(rollout["settings"]), "evidence": None, "step": 0,
           "status": "running", "started_at": now, "step_started_at": now, "updated_at": now}
    with store.tx() as conn:
        running = conn.execute(select(ro.c.id).where(
            ro.c.workflow == rollout["workflow"], ro.c.status.in_(ACTIVE))).first()
        if running is not None:
            raise UserError(f"a rollout is already under way for {rollout['workflow']} "
                            f"({running[0]}); `keel rollout status`, then `keel rollout abort` "
                            "to end it first")
        conn.execute(ro.insert().values(**row))
        ra = t.release_aliases
        conn.execute(ra.delete().where(ra.c.workflow == rollout["workflow"],
                                       ra.c.alias == CHALLENGER))
        conn.execute(ra.insert().values(workflow=rollout["workflow"], alias=CHALLENGER,
                                        release_id=rollout["challenger"], since=now))
        _event(store, conn, rollout["workflow"], f"{rollout['mode']}_started",
               rollout["challenger"], CHALLENGER, actor, reason,
               {"steps": rollout["steps"], "settings": rollout["settings"],
                "champion": rollout["champion"]}, now)
    return {**rollout, "step": 0, "status": "running", "started_at": now,
            "step_started_at": now, "updated_at": now, "evidence": None}


def update_rollout(store: Store, rollout_id: str, *, kind: str, actor: str | None,
                   reason: str | None, evidence: dict[str, Any] | None = None,
                   status: str | None = None, step: int | None = None,
                   champion: str | None = None,
                   expect: tuple[str, int] | None = None) -> bool:
    """Change a rollout's state (a step, a pause, its end) and record why, in one transaction;
    ending it clears the challenger alias, and ``champion`` moves the champion alias too.
    ``expect`` (status, step): change it only if it still stands there (False if not)."""
    ro, ra = t.rollouts, t.release_aliases
    now = time.time()
    with store.tx() as conn:
        row = conn.execute(select(ro).where(ro.c.id == rollout_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no rollout {rollout_id!r}")
        values: dict[str, Any] = {"updated_at": now}
        if evidence is not None:
            values["evidence"] = _json.dumps(evidence)
        if status is not None:
            values["status"] = status
        if step is not None:
            values["step"], values["step_started_at"] = step, now
        where = [ro.c.id == rollout_id]
        if expect is not None:  # only if it still stands there: the UPDATE itself checks
            where += [ro.c.status == expect[0], ro.c.step == expect[1]]
        if conn.execute(update(ro).where(*where).values(**values)).rowcount == 0:
            return False  # another runner or a person acted on it first
        wf = str(row["workflow"])
        if status in ENDED:
            conn.execute(ra.delete().where(ra.c.workflow == wf, ra.c.alias == CHALLENGER))
        if champion is not None:
            conn.execute(ra.delete().where(ra.c.workflow == wf, ra.c.alias == CHAMPION))
            conn.execute(ra.insert().values(workflow=wf, alias=CHAMPION, release_id=champion,
                                            since=now))
        _event(store, conn, wf, kind, str(row["challenger"]),
               CHAMPION if champion is not None else None, actor, reason, evidence, now)
    return True


def note_evidence(store: Store, rollout_id: str, evidence: dict[str, Any]) -> None:
    """Keep the latest look at a rollout's evidence (a hold: no event, nothing changed)."""
    ro = t.rollouts
    with store.tx() as conn:
        conn.execute(update(ro).where(ro.c.id == rollout_id)
                     .values(evidence=_json.dumps(evidence), updated_at=time.time()))


def rollouts(store: Store, workflow: str, limit: int = 50) -> list[dict[str, Any]]:
    ro = t.rollouts
    with store.engine.connect() as conn:
        rows = conn.execute(select(ro).where(ro.c.workflow == workflow)
                            .order_by(ro.c.started_at.desc()).limit(limit)).mappings().all()
    return [_rollout(r) for r in rows]


# -- what the rollout controller and reports read -----------------------------------------------
def release_stats(store: Store, workflow: str, release_id: str,
                  since: float) -> dict[str, Any]:
    """What a release decided since ``since``: counts by disposition, decisions with a failed
    model call, mean latency and cost per decision."""
    d = t.decisions
    cond = and_(d.c.workflow == workflow, d.c.release_id == release_id, d.c.decided_at >= since)
    with store.engine.connect() as conn:
        disp = {k: int(v) for k, v in conn.execute(
            select(d.c.disposition, func.count()).where(cond).group_by(d.c.disposition))}
        n, errors, latency, cost = conn.execute(select(
            func.count(), func.count().filter(d.c.failed_attempts > 0),
            func.avg(d.c.latency_ms), func.sum(d.c.cost_usd)).where(cond)).one()
    n = int(n or 0)
    return {"decided": n, "dispositions": disp, "with_errors": int(errors or 0),
            "latency_ms": float(latency) if latency is not None else None,
            "cost_usd": float(cost or 0.0),
            "cost_per_decision": float(cost or 0.0) / n if n else None}


def shadow_stats(store: Store, workflow: str, release_id: str, since: float) -> dict[str, Any]:
    """A shadow's answers since ``since``: how many, how many failed, how often they agreed
    with the answer of the release that decided the record, latency and cost."""
    sa = t.shadow_answers
    cond = and_(sa.c.workflow == workflow, sa.c.release_id == release_id,
                sa.c.created_at >= since)
    with store.engine.connect() as conn:
        n, agree, errors, fallback, latency, cost = conn.execute(select(
            func.count(), func.count().filter(sa.c.agrees.is_(True)),
            func.count().filter(sa.c.error.is_not(None)),
            func.count().filter(sa.c.step.is_not(None) & (sa.c.step != "primary")),
            func.avg(sa.c.latency_ms), func.sum(sa.c.cost_usd)).where(cond)).one()
    n = int(n or 0)
    return {"answered": n, "agreed": int(agree or 0), "errors": int(errors or 0),
            "fallback": int(fallback or 0),
            "latency_ms": float(latency) if latency is not None else None,
            "cost_usd": float(cost or 0.0),
            "cost_per_decision": float(cost or 0.0) / n if n else None}


def agreement(store: Store, workflow: str, release_ids: list[str], since: float) -> tuple[int, int]:
    """Shadow answers since ``since`` given by ``release_ids`` next to an answer that decided
    the record: (how many, how many differed from it)."""
    sa = t.shadow_answers
    with store.engine.connect() as conn:
        n, differ = conn.execute(select(
            func.count(), func.count().filter(sa.c.agrees.is_(False)))
            .where(sa.c.workflow == workflow, sa.c.release_id.in_(release_ids),
                   sa.c.created_at >= since, sa.c.agrees.is_not(None))).one()
    return int(n or 0), int(differ or 0)


def reviewed_answers(store: Store, workflow: str, release_ids: list[str],
                     since: float) -> list[dict[str, Any]]:
    """Records decided by one of ``release_ids`` since ``since`` that a person labelled
    (latest label; rejects left out): the label, the deciding release and its model's answer,
    and every shadow answer the other releases gave for the same record."""
    d, lb, sa = t.decisions, t.labels, t.shadow_answers
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(lb.c.record_id, lb.c.label, lb.c.model_output, lb.c.decided_at,
                   d.c.release_id)
            .select_from(lb.join(d, d.c.record_id == lb.c.record_id))
            .where(lb.c.workflow == workflow, d.c.release_id.in_(release_ids),
                   d.c.decided_at >= since, lb.c.decision != "reject")
            .order_by(lb.c.decided_at)).all()
        latest: dict[str, dict[str, Any]] = {}
        for rid, label, answer, _at, release in rows:
            latest[rid] = {"record_id": rid, "label": label, "answer": answer,
                           "release_id": release, "shadow": {}}
        for part in _chunks(list(latest)):
            for rid, release, output, error in conn.execute(
                    select(sa.c.record_id, sa.c.release_id, sa.c.output, sa.c.error)
                    .where(sa.c.record_id.in_(part), sa.c.release_id.in_(release_ids))):
                latest[rid]["shadow"][release] = None if error is not None else output
    return [r for r in latest.values() if r["label"] is not None]


# -- eval runs ----------------------------------------------------------------------------------
def save_eval_run(store: Store, run: dict[str, Any]) -> str:
    rid = new_id()
    with store.tx() as conn:
        conn.execute(t.eval_runs.insert().values(
            id=rid, workflow=run["workflow"], release_id=run["release_id"],
            against_id=run.get("against_id"), data_hash=run["data_hash"], rows=run["rows"],
            metrics=_json.dumps(run["metrics"]), created_at=time.time()))
    return rid


def eval_runs(store: Store, workflow: str, release_id: str | None = None) -> list[dict[str, Any]]:
    er = t.eval_runs
    q = select(er).where(er.c.workflow == workflow)
    if release_id is not None:
        q = q.where(er.c.release_id == release_id)
    with store.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(q.order_by(er.c.created_at.desc())).mappings()]
    for r in rows:
        r["metrics"] = _json.loads(r["metrics"])
    return rows


def release_counts(store: Store, workflow: str, release_ids: list[str]) -> dict[str, int]:
    """Decisions each release made."""
    d = t.decisions
    out: dict[str, int] = {}
    with store.engine.connect() as conn:
        for part in _chunks(release_ids):
            for rid, n in conn.execute(select(d.c.release_id, func.count()).where(
                    d.c.workflow == workflow, d.c.release_id.in_(part)).group_by(d.c.release_id)):
                out[str(rid)] = int(n)
    return out


# -- what status, the dashboard and /metrics show -------------------------------------------------
def agreement_by_release(store: Store, workflow: str, *, since: float | None = None,
                         bucket_s: float | None = None) -> list[dict[str, Any]]:
    """Per release (and per time bucket of ``bucket_s`` seconds, when given): how many of its
    answers people reviewed, and how many they kept as they were."""
    d, lb = t.decisions, t.labels
    cond = [lb.c.workflow == workflow, lb.c.decision != "reject", d.c.release_id.is_not(None)]
    if since is not None:
        cond.append(lb.c.decided_at >= since)
    with store.engine.connect() as conn:
        rows = conn.execute(select(d.c.release_id, lb.c.decided_at, lb.c.model_correct)
                            .select_from(lb.join(d, d.c.record_id == lb.c.record_id))
                            .where(*cond)).all()
    names = {r["id"]: r["name"] for r in releases(store, workflow)}
    acc: dict[tuple[str, float | None], list[int]] = {}
    for rid, at, ok in rows:
        key = (str(rid), None if bucket_s is None else float(at) // bucket_s * bucket_s)
        cell = acc.setdefault(key, [0, 0])
        cell[0] += 1
        cell[1] += bool(ok)
    return [{"release_id": rid, "release": names.get(rid, rid), "at": at, "reviewed": n,
             "agreed": k, "agreement": k / n if n else None}
            for (rid, at), (n, k) in sorted(acc.items(), key=lambda kv: (kv[0][1] or 0, kv[0][0]))]


def release_summary(store: Store, workflow: str) -> dict[str, Any] | None:
    """The live release, a rollout under way (its step and share), and agreement with
    reviewers per release: what `keel status` shows (None: no release yet)."""
    now = aliases(store, workflow)
    if CHAMPION not in now:
        return None
    names = {r["id"]: r["name"] for r in releases(store, workflow)}
    ro = active_rollout(store, workflow)
    rollout = None
    if ro is not None:
        share = 0.0 if ro["status"] == "awaiting_approval" else float(ro["steps"][ro["step"]])
        rollout = {"id": ro["id"], "status": ro["status"], "challenger": names.get(ro["challenger"]),
                   "step": ro["step"] + 1, "steps": len(ro["steps"]), "share": share,
                   "verdict": (ro["evidence"] or {}).get("verdict"),
                   "why": (ro["evidence"] or {}).get("why")}
    return {"champion": names.get(now[CHAMPION], now[CHAMPION]),
            "challenger": names.get(now[CHALLENGER]) if CHALLENGER in now else None,
            "rollout": rollout,
            "agreement": {r["release"]: {"reviewed": r["reviewed"], "agreed": r["agreed"],
                                         "agreement": r["agreement"]}
                          for r in agreement_by_release(store, workflow)}}
