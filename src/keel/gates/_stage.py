"""The readiness report and the stage it lets a workflow take."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from keel import _json
from keel.errors import GateNotReady, OverrideReason, StageConflict, UserError
from keel.gates._criteria import FAIL, NA, PASS, UNKNOWN, Verdict, evaluate
from keel.releases import actor
from keel.store import Store
from keel.store import gates as sql
from keel.workflow import SECTIONS, STAGES, Gates, Workflow

#: What a score (the lowest section's count of passed criteria) says, in keel's words.
BANDS = ((0, "an experiment: nothing is in place for production yet"),
         (1, "first steps: serious gaps remain"),
         (2, "the basics of production are in place; more is needed before high stakes"),
         (3, "well prepared: the rest is making manual checks automatic"),
         (5, "strong: ready for decisions with high stakes"))


def current(store: Store, workflow: str) -> str:
    """The workflow's stage: as last recorded, else ``prototype``."""
    row = sql.stage(store, workflow)
    return str(row["stage"]) if row else "prototype"


def history(store: Store, workflow: str) -> list[dict[str, Any]]:
    """Every stage change, oldest first, with what it rested on."""
    return sql.stage_history(store, workflow)


def _next(stage: str) -> str:
    i = STAGES.index(stage)
    return STAGES[min(i + 1, len(STAGES) - 1)]


@dataclass
class Report:
    """``keel gate``: every criterion's verdict, the score, and whether ``to`` may be taken."""

    workflow: str
    stage: str
    to: str
    verdicts: list[Verdict]
    gated: bool

    @property
    def needed(self) -> list[Verdict]:
        upto = STAGES.index(self.to)
        return [v for v in self.verdicts if STAGES.index(v.needed_for) <= upto]

    @property
    def blocking(self) -> list[Verdict]:
        order = {FAIL: 0, UNKNOWN: 1}
        return sorted((v for v in self.needed if v.status in (FAIL, UNKNOWN)),
                      key=lambda v: order[v.status])

    @property
    def ready(self) -> bool:
        return not self.blocking

    def sections(self) -> dict[str, dict[str, int]]:
        out = {s: {"passed": 0, "of": 0} for s in SECTIONS}
        for v in self.verdicts:
            if v.status == NA:
                continue
            out[v.section]["of"] += 1
            out[v.section]["passed"] += v.status == PASS
        return out

    @property
    def score(self) -> int:
        # a section whose every criterion was set aside (not applicable) has nothing to score
        return min((s["passed"] for s in self.sections().values() if s["of"]), default=0)

    @property
    def band(self) -> str:
        return next(text for floor, text in reversed(BANDS) if self.score >= floor)

    @property
    def summary(self) -> str:
        if self.ready:
            return f"ready for {self.to}"
        why = "; ".join(f"{v.title} ({v.status}: {v.detail})" for v in self.blocking[:3])
        more = f" and {len(self.blocking) - 3} more" if len(self.blocking) > 3 else ""
        return f"not yet ready for {self.to}, because {why}{more}"

    @property
    def hash(self) -> str:
        """A digest of every verdict and its evidence: what a stage change rested on."""
        blob = _json.dumps([v.as_dict() for v in self.verdicts])
        return hashlib.sha256(blob.encode()).hexdigest()

    def as_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "stage": self.stage, "to": self.to,
                "gated": self.gated, "ready": self.ready, "summary": self.summary,
                "score": self.score, "band": self.band, "sections": self.sections(),
                "blocking": [v.id for v in self.blocking], "hash": self.hash,
                "criteria": [v.as_dict() for v in self.verdicts]}


def report(wf: Workflow, store: Store, *, to: str | None = None,
           wf_arg: str | None = None) -> Report:
    """The readiness report for the next stage (or ``to``)."""
    if to is not None and to not in STAGES:
        raise UserError(f"unknown stage {to!r}; stages are {', '.join(STAGES)}")
    stage = current(store, wf.name)
    target = to or _next(stage)
    gates = wf.gates or Gates()
    verdicts = evaluate(wf, store, gates, wf_arg or wf.source_path or wf.name)
    return Report(wf.name, stage, target, verdicts, wf.gates is not None)


def promote(wf: Workflow, store: Store, to: str, *, by: str | None = None,
            reason: str | None = None, override: bool = False,
            wf_arg: str | None = None) -> dict[str, Any]:
    """Move the workflow to stage ``to`` when its gate passes (or with ``override`` and a
    reason). Moving back a stage is allowed at any time."""
    if to not in STAGES:
        raise UserError(f"unknown stage {to!r}; stages are {', '.join(STAGES)}")
    stage = current(store, wf.name)
    here, there = STAGES.index(stage), STAGES.index(to)
    who = by or actor()
    if there == here:
        raise StageConflict(f"{wf.name} is already in {to}")
    if there < here:
        return sql.set_stage(store, wf.name, to, actor=who, reason=reason or "moved back",
                             override=False, evidence=None)
    if there > here + 1:
        raise StageConflict(f"{wf.name} is a {stage}: promote it to {STAGES[here + 1]} first "
                        f"(stages are taken one at a time: {' -> '.join(STAGES)})")
    rep = report(wf, store, to=to, wf_arg=wf_arg)
    if override and not (reason and reason.strip()):
        raise OverrideReason("an override needs a written reason: --reason '...'")
    if not rep.ready and not override:
        raise GateNotReady(f"{wf.name} is {rep.summary}. Fix: "
                           + "; ".join(v.fix for v in rep.blocking if v.fix)
                           + f". Or override with a reason (admin): keel promote "
                           f"{wf_arg or wf.name} --to {to} --override --reason '...'")
    evidence = {"hash": rep.hash, "score": rep.score, "ready": rep.ready,
                "blocking": [v.id for v in rep.blocking],
                "criteria": {v.id: {"status": v.status, "evidence": v.evidence}
                             for v in rep.verdicts}}
    return sql.set_stage(store, wf.name, to, actor=who, reason=reason,
                         override=override and not rep.ready, evidence=evidence)


#: What an approver may sign.
SIGNATURES = ("security_review", "operational_signoff")


def sign(wf: Workflow, store: Store, kind: str, *, key: str | None,
         note: str | None = None) -> dict[str, Any]:
    """An approver's signature, by their API key (role ``approver`` or ``admin``)."""
    from keel.store import keys as key_sql  # start-up: keel gate sign only

    if kind not in SIGNATURES:
        raise UserError(f"unknown signature {kind!r}; sign one of {', '.join(SIGNATURES)}")
    if not key:
        raise UserError("sign with an approver's API key: --key KEY or KEEL_API_KEY "
                        "(`keel keys create --role approver --name 'Ana Ruiz'`)")
    found = key_sql.key_by_hash(store, key_sql.hash_key(key))
    if found is None or found.get("revoked_at"):
        raise UserError("that API key is unknown or revoked")
    if found["role"] not in ("approver", "admin"):
        raise UserError(f"key {found['name']} has role {found['role']}; signing needs an "
                        "approver (or admin) key")
    return sql.sign(store, wf.name, kind, str(found["name"]), str(found["id"]), wf.version, note)
