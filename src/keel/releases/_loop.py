"""The feedback loop: retrain on reviewers' labels, evaluate the candidate against the
champion on held-out labels, and try it on live traffic when it is not worse."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from keel.errors import ReleaseError
from keel.releases._eval import EvalReport, Labelled, evaluate
from keel.releases._registry import ensure_champion, register
from keel.releases._rollout import start
from keel.review import retrain, training_examples
from keel.store import Store
from keel.store import releases as sql
from keel.store.monitoring import alert_history
from keel.workflow import Workflow

#: An evaluation on fewer held-out labels than this says too little to act on.
MIN_HOLDOUT = 20


def held_out(key: str, share: float) -> bool:
    """A label is held out for evaluation when its key's hash falls in the first ``share``:
    a record stays on its side however often keel retrains."""
    h = hashlib.blake2b(f"holdout\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64 < share


def retrain_release(wf: Workflow, store: Store, *, holdout: float | None = None,
                    by: str | None = None, why: str = "keel retrain") -> dict[str, Any]:
    """Train a candidate on the labels (all, or those outside the held-out share), register
    it as a release, and with ``holdout`` evaluate it against the champion on the rest."""
    champion = ensure_champion(wf, store)
    examples = training_examples(store, wf.name)
    train, test = examples, []
    if holdout:
        train = [e for e in examples if not held_out(e["key"], holdout)]
        test = [e for e in examples if held_out(e["key"], holdout)]
    model, info = retrain(wf, store, train)
    release, new = register(wf, store, model=model, by=by,
                            note=f"{why}: trained on {len(train):,} labels")
    out = {**info, "release": release.name, "release_id": release.id, "new_release": new,
           "champion": champion.name, "held_out": len(test)}
    if holdout:
        report = evaluate_held_out(wf, store, test, release.name, champion.name)
        out["eval"] = None if report is None else report.as_dict()
    return out


def evaluate_held_out(wf: Workflow, store: Store, examples: list[dict[str, Any]],
                      release: str, against: str) -> EvalReport | None:
    if len(examples) < MIN_HOLDOUT or release == against:
        return None
    rows: list[dict[str, Any] | None] = [dict(e["input"]) for e in examples]
    labels: list[Any] = [e["output"] for e in examples]
    digest = hashlib.sha256("\n".join(sorted(e["record_id"] for e in examples)).encode())
    data = Labelled(rows, labels, [None] * len(rows), digest.hexdigest(),
                    f"held-out labels ({len(rows)})")
    return evaluate(wf, store, data, release=release, against=against)


def _last_retrain(store: Store, workflow: str) -> dict[str, Any] | None:
    events = [ev for ev in sql.history(store, workflow) if ev["kind"] == "retrained"]
    return events[-1] if events else None


def _trigger(wf: Workflow, store: Store, now: float) -> str | None:
    """Why keel should retrain now (None: no trigger has fired)."""
    policy = wf.retrain
    assert policy is not None
    last = _last_retrain(store, wf.name)
    since = last["at"] if last else 0.0
    labels_then = int((last["evidence"] or {}).get("labels", 0)) if last else 0
    labels_now = len(training_examples(store, wf.name))
    if policy.after_labels is not None and labels_now - labels_then >= policy.after_labels:
        return f"{labels_now - labels_then:,} new labels (policy: after {policy.after_labels:,})"
    if policy.on_drift:
        fired = [a for a in alert_history(store, wf.name, limit=50)
                 if a["rule"].startswith("drift_score") and a["fired_at"] > since]
        if fired:
            return f"drift alert {fired[0]['rule']} fired"
    if policy.every_s is not None:
        # before the first candidate, the clock starts at the workflow's first release event
        first = sql.history(store, wf.name, limit=1)
        start = last["at"] if last else (first[0]["at"] if first else None)
        if start is not None and now - start >= policy.every_s:
            what = "the last candidate" if last else "the first run"
            return f"{policy.every_s:g} s since {what} (policy: every {policy.every_s:g} s)"
    return None


def tend_retraining(wf: Workflow, store: Store, *, now: float | None = None) -> dict[str, Any] | None:
    """Run the workflow's retraining policy once: when a trigger fired and no rollout is
    under way, retrain, evaluate on held-out labels, and start a rollout of a candidate that
    is not worse (a shadow step first; the canary as ``Rollout.auto_canary`` allows).
    Returns what was done (None: nothing to do)."""
    if wf.retrain is None or wf.train is None:
        return None
    now = time.time() if now is None else now
    if sql.active_rollout(store, wf.name) is not None:
        return None
    why = _trigger(wf, store, now)
    if why is None:
        return None
    out = retrain_release(wf, store, holdout=wf.retrain.holdout, by="keel",
                          why=f"retraining policy: {why}")
    report = out.get("eval")
    verdict = (report or {}).get("comparison", {}) or {}
    evidence = {"labels": out["label_examples"] + out["held_out"], "trigger": why,
                "trained_on": out["label_examples"], "held_out": out["held_out"],
                "eval_run": (report or {}).get("eval_run"),
                "verdict": verdict.get("verdict"),
                "accuracy_difference": verdict.get("accuracy_difference")}
    sql.record_event(store, wf.name, "retrained", out["release_id"], actor="keel",
                     reason=why, evidence=evidence)
    out["trigger"] = why
    if not out["new_release"]:
        out["action"] = "none: the candidate is a release registered before"
    elif report is None:
        out["action"] = (f"none: fewer than {MIN_HOLDOUT} held-out labels to evaluate on; "
                         "waiting for more")
    elif verdict.get("verdict") == "worse":
        sql.record_event(store, wf.name, "candidate_rejected", out["release_id"], actor="keel",
                         reason="worse than the champion on held-out labels", evidence=verdict)
        out["action"] = "rejected: worse than the champion on held-out labels"
    else:
        try:
            start(wf, store, out["release"], shadow=wf.retrain.shadow,
                  canary=None if not wf.retrain.shadow else wf.rollout.steps, by="keel",
                  reason=f"retrained ({why}); not worse on {out['held_out']} held-out labels")
        except ReleaseError as exc:
            out["action"] = f"not rolled out: {exc.message}"
        else:
            out["action"] = "rollout started"
    return out
