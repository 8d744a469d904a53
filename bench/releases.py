"""Releases: what routing records to a canary costs, and how long `keel eval` takes.

    python bench/releases.py [--records 50000] [--repeats 5]

1. Throughput of `keel run` with the no-op model, with no rollout and with a 5% canary of a
   second no-op release, interleaved run by run (medians of ``--repeats``). The canary's
   records are also answered by the champion in the shadow (the paired evidence), so a
   canary costs the routing plus one more model call per canary record.
2. `keel eval` of two releases of the support_triage demo (the demo model and one trained
   on 90% of the train split) over the 3,080-record Banking77 test split, with the plain
   model's predict_proba on the same records as the baseline.

Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)

NOOP = ticket_workflow(
    "noop", model='keel.FakeModel({"intent": "card_arrival"}, confidence=0.99, name="{name}")',
    extra="rollout=keel.Rollout(min_decisions=10**9, check_every_s=3600),")


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def traffic(path: Path, n: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"t{i}", f"message number {i} about my card"])


def one_run(wf_path: Path, rows: Path, db: Path, canary: float | None) -> float:
    """records/s of one `keel run` on a fresh store (the setup is not timed)."""
    import keel
    from keel import releases

    if db.exists():
        db.unlink()
    store = keel.Store.open(f"sqlite:///{db}")
    try:
        wf = keel.load_workflow(wf_path)
        keel.run(wf, [{"id": "warm", "text": "hello"}], store=store)
        if canary is not None:
            other = keel.load_workflow(wf_path.with_name("challenger.py"))
            rel, _ = releases.register(other, store, name="challenger")
            releases.start(wf, store, rel.name, canary=[canary])
        t0 = time.perf_counter()
        s = keel.run(wf, rows, store=store)
        elapsed = time.perf_counter() - t0
        if canary is not None:
            assert 0 < s.releases.get("challenger", 0) < s.read
    finally:
        store.close()
    return s.read / elapsed


def routing(records: int, repeats: int, d: Path) -> None:
    (d / "workflow.py").write_text(NOOP.replace("{name}", "champion"))
    (d / "challenger.py").write_text(NOOP.replace("{name}", "challenger"))
    rows = d / "traffic.csv"
    traffic(rows, records)
    plain, canary = [], []
    for _ in range(repeats):  # interleaved: the machine's drift hits both alike
        plain.append(one_run(d / "workflow.py", rows, d / "p.db", None))
        canary.append(one_run(d / "workflow.py", rows, d / "c.db", 5.0))
    p, c = statistics.median(plain), statistics.median(canary)
    emit(measure="run_noop_no_rollout", records=records, records_per_s=round(p, 1),
         runs=[round(x) for x in plain])
    emit(measure="run_noop_canary_5pct", records=records, records_per_s=round(c, 1),
         runs=[round(x) for x in canary], ratio_to_no_rollout=round(c / p, 3),
         spread_no_rollout=round((max(plain) - min(plain)) / p, 3))


def evaluation(repeats: int, d: Path) -> None:
    import numpy as np
    from triage_model import DATA, fit, read_labelled

    import keel
    from keel import releases

    wf = keel.load_workflow(EXAMPLE / "workflow.py")
    store = keel.Store.open(f"sqlite:///{d / 'eval.db'}")
    try:
        champion = releases.ensure_champion(wf, store)
        texts, cats = read_labelled(DATA / "train.csv")
        keep = [i for i in range(len(texts)) if i % 10]
        other = keel.SklearnModel(fit([texts[i] for i in keep], [cats[i] for i in keep]),
                                  features="text", output="intent", name="tfidf-logreg-90pct")
        rel, _ = releases.register(wf, store, model=other, name="ninety")
        test = DATA / "test.csv"
        test_texts, _ = read_labelled(test)
        est = wf.model.estimator  # type: ignore[attr-defined]
        base, took = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for model in (est, other.estimator):
                np.asarray(model.predict_proba(test_texts)).argmax(axis=1)
            base.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            report = releases.evaluate(wf, store, test, release=rel.name, against=champion.name,
                                       label_column="category")
            took.append(time.perf_counter() - t0)
        emit(measure="eval_two_releases_test_split", records=report.data["rows"],
             seconds=round(statistics.median(took), 2), runs=[round(x, 2) for x in took],
             plain_predict_two_models_s=round(statistics.median(base), 2),
             verdict=(report.comparison or {}).get("verdict"))
    finally:
        store.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    os.environ.setdefault("KEEL_ARTIFACTS", str(ROOT / ".keel" / "artifacts"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        routing(args.records, args.repeats, d)
        evaluation(max(3, args.repeats // 2), d)


if __name__ == "__main__":
    main()
