"""Gates in the store: a workflow's construction stage and its history, approvers'
signatures, recovery drills, and the evidence the readiness criteria read.

A stage change is appended to the workflow's governance trail on the audit trail (the same
chain as its release history: :func:`keel.store.releases.trail_id`)."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, select

from keel import _json
from keel._record import new_id
from keel.store import _schema as t
from keel.store._store import Store
from keel.store.releases import trail_id

STAGES = ("prototype", "mvp", "production")


def stage(store: Store, workflow: str) -> dict[str, Any] | None:
    """The latest stage change (None: never staged, a prototype)."""
    st = t.stages
    with store.engine.connect() as conn:
        row = conn.execute(select(st).where(st.c.workflow == workflow)
                           .order_by(st.c.at.desc()).limit(1)).mappings().first()
    return _stage_row(row) if row else None


def _stage_row(row: Any) -> dict[str, Any]:
    out = dict(row)
    out["evidence"] = _json.loads(out["evidence"]) if out["evidence"] else None
    return out


def stage_history(store: Store, workflow: str) -> list[dict[str, Any]]:
    st = t.stages
    with store.engine.connect() as conn:
        rows = conn.execute(select(st).where(st.c.workflow == workflow).order_by(st.c.at))
        return [_stage_row(r) for r in rows.mappings()]


def set_stage(store: Store, workflow: str, new: str, *, actor: str | None, reason: str | None,
              override: bool, evidence: dict[str, Any] | None) -> dict[str, Any]:
    """Record a stage change, and append it to the governance trail, in one transaction."""
    row = {"id": new_id(), "workflow": workflow, "stage": new, "at": time.time(),
           "actor": actor, "reason": reason, "override": override,
           "evidence": _json.dumps(evidence) if evidence is not None else None}
    with store.tx() as conn:
        conn.execute(t.stages.insert().values(**row))
        store.append_event(conn, workflow, trail_id(workflow), f"stage_{new}", actor=actor,
                           detail={"stage": new, "reason": reason, "override": override,
                                   "evidence_hash": (evidence or {}).get("hash")})
    return {**row, "evidence": evidence}


def sign(store: Store, workflow: str, kind: str, signer: str, key_id: str | None,
         workflow_version: str | None, note: str | None) -> dict[str, Any]:
    row = {"id": new_id(), "workflow": workflow, "kind": kind, "signer": signer,
           "key_id": key_id, "workflow_version": workflow_version, "note": note,
           "at": time.time()}
    with store.tx() as conn:
        conn.execute(t.gate_signatures.insert().values(**row))
        store.append_event(conn, workflow, trail_id(workflow), f"signed_{kind}", actor=signer,
                           detail={"kind": kind, "note": note, "key_id": key_id,
                                   "workflow_version": workflow_version})
    return row


def signatures(store: Store, workflow: str) -> list[dict[str, Any]]:
    gs = t.gate_signatures
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(gs).where(gs.c.workflow == workflow)
                                              .order_by(gs.c.at.desc())).mappings()]


def save_drill(store: Store, workflow: str, workflow_version: str | None, ok: bool,
               result: dict[str, Any]) -> str:
    rid = new_id()
    with store.tx() as conn:
        conn.execute(t.drills.insert().values(id=rid, workflow=workflow,
                                              workflow_version=workflow_version, ok=ok,
                                              result=_json.dumps(result), at=time.time()))
    return rid


def last_drill(store: Store, workflow: str) -> dict[str, Any] | None:
    dr = t.drills
    with store.engine.connect() as conn:
        row = conn.execute(select(dr).where(dr.c.workflow == workflow)
                           .order_by(dr.c.at.desc()).limit(1)).mappings().first()
    if row is None:
        return None
    out = dict(row)
    out["result"] = _json.loads(out["result"])
    return out


def decided_since(store: Store, workflow: str, since: float) -> int:
    """Records decided since ``since`` (an MVP's daily volume)."""
    d = t.decisions
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(
            d.c.workflow == workflow, d.c.decided_at >= since)).scalar_one())


def open_alerts(store: Store, workflow: str) -> list[dict[str, Any]]:
    a = t.alerts
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(a.c.rule, a.c.fired_at).where(
            a.c.workflow == workflow, a.c.state == "firing")).mappings()]


def key_ages(store: Store) -> list[dict[str, Any]]:
    """Every API key not revoked: role, name, age, last use."""
    k = t.api_keys
    now = time.time()
    with store.engine.connect() as conn:
        rows = conn.execute(select(k.c.id, k.c.name, k.c.role, k.c.created_at, k.c.last_used_at)
                            .where(k.c.revoked_at.is_(None))).mappings().all()
    return [{**dict(r), "age_s": now - float(r["created_at"])} for r in rows]


def passed_on_evidence(store: Store, workflow: str, release_id: str, since: float) -> bool:
    """Did a rollout of ``release_id`` since ``since`` end on its evidence (the rollout
    controller's shadow pass or promotion), not by a person's promotion mid-way?"""
    re_ = t.release_events
    with store.engine.connect() as conn:
        rows = conn.execute(select(re_.c.evidence).where(
            re_.c.workflow == workflow, re_.c.release_id == release_id, re_.c.at >= since,
            re_.c.kind.in_(("promoted", "shadow_passed")))).scalars().all()
    return any((_json.loads(e) if e else {}).get("verdict") == "promote" for e in rows)


def audit_counts(store: Store, workflow: str) -> tuple[int, int]:
    """(audited automatic decisions a person decided, how many they kept)."""
    lb = t.labels
    with store.engine.connect() as conn:
        n, ok = conn.execute(select(func.count(), func.count().filter(lb.c.model_correct.is_(True)))
                             .where(lb.c.workflow == workflow,
                                    lb.c.reason == "audit_sample")).one()
    return int(n or 0), int(ok or 0)
