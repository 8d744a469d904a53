"""Rollouts: a challenger release tried on live traffic, in shadow and canary steps, each
step ended by its evidence (promote, hold or roll back)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from keel import _json
from keel._record import new_id
from keel.errors import ReleaseError, RolloutConflict
from keel.releases._bundle import Release
from keel.releases._registry import actor, champion_now, ensure_champion, get, runnable
from keel.releases._stats import proportion_cs, release_difference_cs
from keel.store import Store
from keel.store import releases as sql
from keel.workflow import Rollout, Workflow

#: A guard rail judges a rate only after this many of the challenger's answers in the step.
GUARD_MIN = 20


@dataclass(frozen=True)
class Lineup:
    """Who decides now: the champion, and a challenger under trial with its share of traffic
    (percent; 0 in a shadow step, where it answers every record and decides none)."""

    champion: Release
    challenger: Release | None = None
    rollout_id: str | None = None
    share: float = 0.0
    status: str | None = None

    @property
    def shadow(self) -> bool:
        return self.challenger is not None and self.share == 0.0

    @property
    def token(self) -> tuple[Any, ...]:
        """Changes whenever who decides what changes."""
        return (self.champion.id, self.challenger.id if self.challenger else None,
                self.rollout_id, self.share)


def lineup(wf: Workflow, store: Store) -> Lineup:
    champion = ensure_champion(wf, store)
    ro = sql.active_rollout(store, wf.name)
    if ro is None:
        return Lineup(champion)
    if ro["champion"] != champion.id:  # the champion moved under the rollout: it ends
        sql.update_rollout(store, ro["id"], kind="aborted", actor="keel", status="aborted",
                           reason="the champion changed while the rollout was under way")
        return Lineup(champion)
    challenger = get(store, wf.name, ro["challenger"])
    share = 0.0 if ro["status"] == "awaiting_approval" else float(ro["steps"][ro["step"]])
    return Lineup(champion, challenger, ro["id"], share, ro["status"])


def in_canary(key: str, rollout_id: str, share: float) -> bool:
    """Sticky assignment: a key is in the canary when its hash (salted by the rollout) falls
    in the first ``share`` percent. A key in at 5% stays in at 25%."""
    if share <= 0.0:
        return False
    if share >= 100.0:
        return True
    h = hashlib.blake2b(f"{rollout_id}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % 10_000 < share * 100


# -- starting and steering ------------------------------------------------------------------------
def start(wf: Workflow, store: Store, challenger: str, *, shadow: bool = False,
          canary: Sequence[float] | None = None, settings: Rollout | None = None,
          by: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """Start trying ``challenger``: a shadow step first with ``shadow``, then the canary's
    steps (``canary``, else the workflow's ``Rollout.steps``; none with ``shadow`` alone)."""
    champion = ensure_champion(wf, store)
    release = get(store, wf.name, challenger)
    if release.id == champion.id:
        raise ReleaseError(f"release {release.name} is already the champion; register a new "
                           "one to try (`keel retrain` or `keel release register`)")
    active = sql.active_rollout(store, wf.name)
    if active is not None:
        raise RolloutConflict(f"a rollout is already under way for {wf.name} ({active['id']}, "
                              f"{active['status']}); `keel rollout status`, or "
                              "`keel rollout abort` to end it first")
    runnable(wf, store, release)
    base = settings or wf.rollout
    steps = [float(s) for s in (canary if canary is not None else
                                ([] if shadow else base.steps))]
    if any(s <= 0 for s in steps):
        raise ReleaseError("canary steps are shares of traffic above 0 (e.g. 5,25,50,100); "
                           "for a step that decides nothing use --shadow")
    steps = ([0.0] if shadow else []) + steps
    if not steps:
        raise ReleaseError("give --shadow, --canary STEPS, or both")
    try:
        chosen = replace(base, steps=tuple(steps))
    except ValueError as exc:  # steps that do not rise, or above 100
        raise ReleaseError(f"canary steps {[f'{s:g}' for s in steps]}: {exc}") from exc
    return sql.start_rollout(store, {
        "id": new_id(), "workflow": wf.name, "challenger": release.id,
        "champion": champion.id, "mode": "shadow" if steps[0] == 0 else "canary",
        "steps": steps, "settings": chosen.as_dict()}, by or actor(), reason)


def _active(store: Store, workflow: str) -> dict[str, Any]:
    ro = sql.active_rollout(store, workflow)
    if ro is None:
        raise ReleaseError(f"no rollout is under way for {workflow}; start one with "
                           "`keel rollout start WORKFLOW_PY --challenger NAME --canary 5,25,50,100`")
    return ro


def pause(wf: Workflow, store: Store, *, by: str | None = None,
          reason: str | None = None) -> dict[str, Any]:
    """Hold the rollout at its step: the split stays, no step is taken; a rollback on the
    evidence still happens."""
    ro = _active(store, wf.name)
    if ro["status"] != "running":
        raise RolloutConflict(f"the rollout is {ro['status']}, not running")
    sql.update_rollout(store, ro["id"], kind="paused", actor=by or actor(), reason=reason,
                       status="paused")
    return status(wf, store)


def resume(wf: Workflow, store: Store, *, by: str | None = None,
           reason: str | None = None) -> dict[str, Any]:
    """Continue a paused rollout, or approve the canary after a passed shadow step."""
    ro = _active(store, wf.name)
    if ro["status"] == "running":
        raise RolloutConflict("the rollout is already running")
    if ro["status"] == "awaiting_approval":
        sql.update_rollout(store, ro["id"], kind="canary_approved", actor=by or actor(),
                           reason=reason, status="running", step=ro["step"] + 1)
    else:
        sql.update_rollout(store, ro["id"], kind="resumed", actor=by or actor(),
                           reason=reason, status="running")
    return status(wf, store)


def abort(wf: Workflow, store: Store, *, by: str | None = None,
          reason: str | None = None) -> dict[str, Any]:
    """End the rollout; the champion stays and decides everything from the next batch."""
    ro = _active(store, wf.name)
    sql.update_rollout(store, ro["id"], kind="aborted", actor=by or actor(),
                       reason=reason or "aborted by hand", status="aborted")
    return status(wf, store)


# -- evidence and the step decision --------------------------------------------------------------
def _same(a: str | None, b: str | None) -> bool:
    return a is not None and b is not None and _json.loads(a) == _json.loads(b)


def paired(store: Store, workflow: str, champion: str, challenger: str,
           since: float) -> dict[str, int]:
    """Records both releases answered since ``since`` (one deciding, one in the shadow): how
    many, how many differently; of those people reviewed, how many, and of the differing
    ones, how many had exactly one release right, and which."""
    n, differ = sql.agreement(store, workflow, [champion, challenger], since)
    reviewed = labelled = decisive = chal_right = champ_right = 0
    for r in sql.reviewed_answers(store, workflow, [champion, challenger], since):
        other = challenger if r["release_id"] == champion else champion
        if other not in r["shadow"] or r["answer"] is None or r["shadow"][other] is None:
            continue
        reviewed += 1
        if _same(r["answer"], r["shadow"][other]):
            continue
        labelled += 1
        mine, theirs = _same(r["answer"], r["label"]), _same(r["shadow"][other], r["label"])
        chal_ok, champ_ok = (theirs, mine) if other == challenger else (mine, theirs)
        if chal_ok != champ_ok:
            decisive += 1
            chal_right += chal_ok
            champ_right += champ_ok
    return {"records": n, "differ": differ, "reviewed": reviewed,
            "labelled_differences": labelled, "decisive": decisive,
            "challenger_right": chal_right, "champion_right": champ_right}


def _pp(value: float | None) -> str:
    return "unknown" if value is None else f"{value:+.1%}"


def _rates(stats: dict[str, Any], shadow: bool) -> dict[str, Any]:
    if shadow:
        n = stats["answered"]
        return {"n": n, "error_rate": stats["errors"] / n if n else None,
                "fallback_rate": stats["fallback"] / n if n else None,
                "latency_ms": stats["latency_ms"], "cost_per_decision": stats["cost_per_decision"]}
    n = stats["decided"]
    fallback = stats["dispositions"].get("fallback", 0)
    return {"n": n, "error_rate": stats["with_errors"] / n if n else None,
            "fallback_rate": fallback / n if n else None, "latency_ms": stats["latency_ms"],
            "cost_per_decision": stats["cost_per_decision"]}


def _guard_rails(s: Rollout, chal: dict[str, Any], champ: dict[str, Any]) -> list[str]:
    """The rails the challenger broke (empty: none)."""
    broken: list[str] = []
    if chal["n"] < GUARD_MIN:
        return broken
    for rate in ("error_rate", "fallback_rate"):
        c, h = chal[rate], champ[rate] or 0.0
        if c is not None and c - h > s.max_error_rate_increase:
            broken.append(f"{rate.replace('_', ' ')} {c:.1%} against the champion's {h:.1%} "
                          f"(allowed: +{s.max_error_rate_increase:.1%})")
    c, h = chal["latency_ms"], champ["latency_ms"]
    if c is not None and h and c > s.max_latency_ratio * h:
        broken.append(f"mean latency {c:.1f} ms against the champion's {h:.1f} ms "
                      f"(allowed: x{s.max_latency_ratio:g})")
    c, h = chal["cost_per_decision"], champ["cost_per_decision"]
    if c is not None and h and c > s.max_cost_ratio * h:
        broken.append(f"cost per decision ${c:.6f} against the champion's ${h:.6f} "
                      f"(allowed: x{s.max_cost_ratio:g})")
    return broken


def evidence(wf: Workflow, store: Store, ro: dict[str, Any]) -> dict[str, Any]:
    """Everything a step is judged by, and the verdict: promote, hold or rollback."""
    s = Rollout.from_dict(ro["settings"])
    alpha = 1.0 - s.confidence
    share = 0.0 if ro["status"] == "awaiting_approval" else float(ro["steps"][ro["step"]])
    shadow = share == 0.0
    chal_id, champ_id = ro["challenger"], ro["champion"]
    since = ro["started_at"]
    if shadow:
        chal = _rates(sql.shadow_stats(store, wf.name, chal_id, ro["step_started_at"]), True)
    else:
        chal = _rates(sql.release_stats(store, wf.name, chal_id, ro["step_started_at"]), False)
    champ = _rates(sql.release_stats(store, wf.name, champ_id, ro["step_started_at"]), False)
    pairs = paired(store, wf.name, champ_id, chal_id, since)
    n = pairs["reviewed"]
    diff = release_difference_cs(pairs["records"], pairs["differ"], pairs["decisive"],
                                 pairs["challenger_right"], pairs["labelled_differences"], alpha)
    same = proportion_cs(pairs["records"] - pairs["differ"], pairs["records"], alpha)
    broken = _guard_rails(s, chal, champ)
    need = {"decisions": s.min_decisions, "reviewed": s.min_reviewed}
    if broken:
        verdict, why = "rollback", "guard rail: " + "; ".join(broken)
    elif diff.high < 0:
        verdict = "rollback"
        why = (f"the challenger is right less often than the champion: difference "
               f"{_pp(diff.estimate)}, at most {_pp(diff.high)} at {s.confidence:.0%} "
               f"confidence ({pairs['champion_right']} of {pairs['labelled_differences']} "
               f"labelled disagreements the champion's, {pairs['challenger_right']} the "
               "challenger's)")
    elif chal["n"] < s.min_decisions or n < s.min_reviewed:
        verdict = "hold"
        why = (f"not enough evidence yet: {chal['n']} of {s.min_decisions} challenger "
               f"{'answers' if shadow else 'decisions'} in this step, {n} of {s.min_reviewed} "
               "reviewed records with both answers")
    elif diff.low >= -s.tolerance:
        verdict = "promote"
        why = (f"the challenger is not worse than the champion by more than "
               f"{s.tolerance:.1%}: difference {_pp(diff.estimate)} ({_pp(diff.low)} to "
               f"{_pp(diff.high)} at {s.confidence:.0%}); answers differ on {pairs['differ']} "
               f"of {pairs['records']} records, people labelled {pairs['labelled_differences']}")
    else:
        verdict = "hold"
        why = (f"not enough evidence yet: the difference is {_pp(diff.estimate)} "
               f"({_pp(diff.low)} to {_pp(diff.high)}); promotion needs the low end above "
               f"-{s.tolerance:.1%}")
    return {"verdict": verdict, "why": why, "step": ro["step"], "share": share,
            "shadow": shadow, "challenger": chal, "champion": champ, "paired": pairs,
            "difference": diff.as_dict(), "same_answer": same.as_dict(),
            "needs": need, "confidence": s.confidence}


def tend(wf: Workflow, store: Store) -> dict[str, Any] | None:
    """Look at the rollout's evidence and act on it: the next step, the champion alias, an
    immediate rollback, or nothing yet. Returns what was decided (None: no rollout)."""
    ro = sql.active_rollout(store, wf.name)
    if ro is None or ro["status"] == "awaiting_approval":
        return None
    ev = evidence(wf, store, ro)
    verdict, why = ev["verdict"], ev["why"]
    steps = ro["steps"]
    at = (ro["status"], ro["step"])  # act only if no one else moved it meanwhile
    if verdict == "rollback":
        sql.update_rollout(store, ro["id"], expect=at, kind="rolled_back", actor="keel", reason=why,
                           evidence=ev, status="rolled_back")
    elif verdict == "promote" and ro["status"] == "running":
        last = ro["step"] == len(steps) - 1
        if last and steps[-1] == 0.0:
            sql.update_rollout(store, ro["id"], expect=at, kind="shadow_passed", actor="keel", reason=why,
                               evidence=ev, status="passed")
        elif last:
            sql.update_rollout(store, ro["id"], expect=at, kind="promoted", actor="keel", reason=why,
                               evidence=ev, status="promoted", champion=ro["challenger"])
        elif steps[ro["step"]] == 0.0 and not Rollout.from_dict(ro["settings"]).auto_canary:
            sql.update_rollout(store, ro["id"], expect=at, kind="shadow_passed", actor="keel",
                               reason=why + "; the canary waits for a person: "
                               "`keel rollout resume`", evidence=ev, status="awaiting_approval")
        else:
            sql.update_rollout(store, ro["id"], expect=at, kind="step", actor="keel",
                               reason=f"to {steps[ro['step'] + 1]:g}%: {why}", evidence=ev,
                               step=ro["step"] + 1)
    else:
        verdict = "hold"
        sql.note_evidence(store, ro["id"], ev)
    return {**ev, "verdict": verdict, "rollout": ro["id"]}


def status(wf: Workflow, store: Store) -> dict[str, Any]:
    """The live release, the rollout (if any) with its step and latest evidence."""
    champion = champion_now(store, wf.name)
    ro = sql.active_rollout(store, wf.name) or sql.last_rollout(store, wf.name)
    out: dict[str, Any] = {"workflow": wf.name,
                           "champion": champion.as_dict() if champion else None, "rollout": None}
    if ro is None:
        return out
    names = {r["id"]: r["name"] for r in sql.releases(store, wf.name)}
    active = ro["status"] in sql.ACTIVE
    current = evidence(wf, store, ro) if active else ro["evidence"]
    out["rollout"] = {
        "id": ro["id"], "status": ro["status"], "mode": ro["mode"], "steps": ro["steps"],
        "step": ro["step"], "share": (0.0 if ro["status"] == "awaiting_approval"
                                      else ro["steps"][ro["step"]]),
        "challenger": names.get(ro["challenger"], ro["challenger"]),
        "champion": names.get(ro["champion"], ro["champion"]),
        "started_at": ro["started_at"], "step_started_at": ro["step_started_at"],
        "updated_at": ro["updated_at"], "active": active, "evidence": current}
    return out
