"""The release story, scripted: `keel demo releases` runs it.

1. The champion (r1, declared by workflow.py) decides live traffic; reviewers work the queue.
2. `keel retrain` trains a candidate (r2) on their labels; `keel eval` compares it with the
   champion on labelled data no model has seen.
3. r2 answers live traffic in the shadow, then decides a growing canary share, step by step,
   each step on evidence, until keel promotes it.
4. A broken candidate (trained on shuffled labels) is canaried, and keel rolls it back on
   its own when reviewers' labels show it wrong, with the evidence on the audit trail.

Reviewers are simulated from Banking77's held-back labels: they decide every open task with
the true intent, as diligent people would. Nothing else is simulated: the models train on
real data, and every number comes from the store.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from triage_model import DATA, fit, read_labelled

import keel
from keel import releases
from keel.review import ReviewQueue

HERE = Path(__file__).parent
WORKFLOW = HERE / "workflow.py"
#: The demo's rollouts: small steps and samples, so the story fits in 1,580 messages. A real
#: workflow keeps the defaults (keel.Rollout()).
DEMO_ROLLOUT = keel.Rollout(steps=(10, 50, 100), min_decisions=20, min_reviewed=10,
                            canary_audit_rate=0.25, tolerance=0.1, auto_canary=True,
                            check_every_s=0)
CHUNK = 50


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _review_all(store: keel.Store, truth: dict[str, str]) -> int:
    """Decide every open task as the true label says."""
    queue = ReviewQueue(store)
    n = 0
    while (task := queue.claim(None, "rita")) is not None:
        right = {"intent": truth[task["key"]]}
        if task["model_output"] == right:
            queue.decide(task["id"], "rita", "accept")
        else:
            queue.decide(task["id"], "rita", "correct", right)
        n += 1
    return n


def _live(wf: keel.Workflow, store: keel.Store, stream: Iterator[dict[str, str]], n: int,
          truth: dict[str, str], say: Callable[[str], None],
          stop: Callable[[], bool] | None = None) -> int:
    """Decide up to ``n`` records of live traffic in chunks; reviewers keep up; keel looks at
    the rollout's evidence after each chunk. Returns how many were decided."""
    done = 0
    while done < n:
        chunk = [r for _, r in zip(range(min(CHUNK, n - done)), stream, strict=False)]
        if not chunk:
            break
        keel.run(wf, chunk, store=store)
        done += len(chunk)
        _review_all(store, truth)
        step = releases.tend(wf, store)
        if step and step["verdict"] != "hold":
            say(f"  after {done:,} records: {step['verdict']}: {step['why']}")
        if stop is not None and stop():
            break
    return done


def _ended(wf: keel.Workflow, store: keel.Store) -> bool:
    return not releases.status(wf, store)["rollout"]["active"]


def _broken_candidate(wf: keel.Workflow) -> keel.Model:
    """The same pipeline trained on shuffled labels: it learns nothing true."""
    texts, cats = read_labelled(DATA / "train.csv")
    random.Random(7).shuffle(cats)
    return keel.SklearnModel(fit(texts, cats), features="text", output="intent",
                             name="tfidf-svm-shuffled")


def tell(db: str | None = None, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole story against the store at ``db``; returns its numbers."""
    wf = keel.load_workflow(WORKFLOW)
    store = keel.Store.open(db)
    try:
        return _tell(wf, store, say)
    finally:
        store.close()


def _tell(wf: keel.Workflow, store: keel.Store, say: Callable[[str], None]) -> dict[str, Any]:
    traffic = _rows(DATA / "traffic.csv")
    truth = {r["id"]: r["category"] for r in _rows(DATA / "traffic_labels.csv")}
    stream = iter(traffic)
    out: dict[str, Any] = {}

    say("1. r1, the model workflow.py declares, decides live traffic; reviewers work the queue")
    _live(wf, store, stream, 600, truth, say)
    st = keel.status(store=store)[0]
    say(f"  600 decided, {st['dispositions'].get('accepted', 0):,} automatically; "
        f"reviewers labelled {len(keel.review.training_examples(store, wf.name)):,}")

    say("2. keel retrain: a candidate trained on their labels; keel eval against the champion")
    trained = releases.retrain_release(wf, store, why="the demo")
    say(f"  registered {trained['release']} ({trained['version']}) on "
        f"{trained['label_examples']:,} labels in {trained['train_s']:.1f} s")
    report = releases.evaluate(wf, store, DATA / "calibration.csv", release=trained["release"],
                               against="champion", label_column="category")
    c = report.comparison or {}
    say(f"  on {report.data['labelled']:,} labelled messages no model saw: {c['verdict']} "
        f"(accuracy {c['accuracy_difference']:+.1%}; only {trained['release']} right "
        f"{c['mcnemar']['release_only_right']}, only the champion right "
        f"{c['mcnemar']['against_only_right']}; McNemar p = {c['mcnemar']['p_value']:.3f})")
    out["eval"] = c

    say(f"3. {trained['release']} in the shadow, then a canary of 10%, 50%, 100%")
    releases.start(wf, store, trained["release"], shadow=True, canary=[10, 50, 100],
                   settings=DEMO_ROLLOUT, reason="the demo: retrained on reviewers' labels")
    used = _live(wf, store, stream, 700, truth, say, stop=lambda: _ended(wf, store))
    champion = releases.champion_now(store, wf.name)
    say(f"  champion now: {champion.name} (after {used:,} more records)")
    out["promoted"] = champion.name == trained["release"]

    say("4. a broken candidate (trained on shuffled labels) is canaried at 10%")
    broken, _new = releases.register(wf, store, model=_broken_candidate(wf),
                                     name="shuffled", note="the demo: trained on shuffled labels")
    releases.start(wf, store, broken.name, canary=[10, 50, 100], settings=DEMO_ROLLOUT,
                   reason="the demo: a candidate that should never go live")
    used = _live(wf, store, stream, len(traffic), truth, say, stop=lambda: _ended(wf, store))
    last = releases.status(wf, store)["rollout"]
    say(f"  rollout of {broken.name}: {last['status']} after {used:,} records; champion still "
        f"{releases.champion_now(store, wf.name).name}")
    out["broken"] = last["status"]
    out["history"] = [(ev["kind"], ev["release"]) for ev in releases.history(store, wf.name)]
    say("See it all: keel releases history; keel releases list; keel audit verify")
    return out
