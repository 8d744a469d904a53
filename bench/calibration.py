"""Calibration evidence on real data: Banking77's test split with the support_triage model.

Each model scores the 3,080 test messages once. Then (a) the demo's own split: Learn-then-Test
(target accuracy 0.98, delta 0.05) certifies a threshold on ``calibration.csv`` (1,500
messages) and the other 1,580 (``traffic.csv``) show what it automates and how accurately;
(b) the same over N random splits of the same sizes, with the best coverage any threshold
reaches at the target on the evaluation part (uncertified, picked with the answers known) and
a fixed threshold of 0.5 beside it. The demo model runs beside the model it replaced (TF-IDF
+ logistic regression, confidence = top probability), fitted here on the same train split.
Prints one JSON line per model and measurement (``--each``: one per split too).

    python bench/calibration.py [--splits 200] [--target 0.98] [--delta 0.05] [--each]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

from keel.review._risk import best_coverage, learn_then_test, split_study  # noqa: E402


def _ids(name: str) -> list[str]:
    with (EXAMPLE / "data" / name).open(newline="", encoding="utf-8") as fh:
        return [row["id"] for row in csv.DictReader(fh)]


def baseline_model() -> Any:
    """The demo's model before issue 20: word TF-IDF + logistic regression (C=20)."""
    import triage_model
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts, labels = triage_model.read_labelled(triage_model.DATA / "train.csv")
    pipe = make_pipeline(TfidfVectorizer(sublinear_tf=True),
                         LogisticRegression(C=20.0, max_iter=2000))
    return pipe.fit(texts, labels)


def scores(model: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(confidence of the best class, was it right, message id) for the 3,080 test messages."""
    import triage_model

    texts, labels = triage_model.read_labelled(triage_model.DATA / "test.csv")
    proba = np.asarray(model.predict_proba(texts))
    best = proba.argmax(axis=1)
    conf = proba[np.arange(len(best)), best]
    return conf, model.classes_[best] == np.asarray(labels), _ids("test.csv")


def demo_split(conf: np.ndarray, right: np.ndarray, ids: list[str], target: float,
               delta: float) -> dict[str, Any]:
    """Calibrate on calibration.csv, run traffic.csv: what `keel calibrate` then `keel run` do."""
    where = {k: i for i, k in enumerate(ids)}
    cal = np.asarray([where[k] for k in _ids("calibration.csv")])
    ev = np.asarray([where[k] for k in _ids("traffic.csv")])
    res = learn_then_test(conf[cal], right[cal], target_accuracy=target, delta=delta)
    auto = conf[ev] >= res.threshold if res.threshold is not None else np.zeros(ev.size, bool)
    return {"threshold": res.threshold, "calibration_accepted": res.accepted,
            "calibration_errors": res.errors, "accuracy_bound": round(1 - res.bound, 4),
            "traffic": int(ev.size), "automated": int(auto.sum()),
            "coverage": round(float(auto.mean()), 4),
            "realized_accuracy": round(float(right[ev][auto].mean()), 4) if auto.any() else None,
            "uncertified_best_coverage": round(best_coverage(conf[ev], right[ev], target), 4)}


def resample(conf: np.ndarray, right: np.ndarray, draws: int, size: int, target: float,
             delta: float, seed: int) -> dict[str, Any]:
    """The guarantee on the demo's own pool: calibration sets drawn with replacement from the
    3,080 messages, whose accuracy above any threshold is known; how often the pool's accuracy
    above the certified threshold reaches the target (a refusal automates nothing: it holds)."""
    rng = np.random.default_rng(seed)
    held = refused = 0
    for _ in range(draws):
        idx = rng.integers(0, conf.size, size)
        res = learn_then_test(conf[idx], right[idx], target_accuracy=target, delta=delta)
        if res.threshold is None:
            refused += 1
            held += 1
            continue
        held += bool(right[conf >= res.threshold].mean() >= target)
    return {"draws": draws, "calibration_size": size, "refused": refused,
            "held_share": round(held / draws, 4),
            "held_share_of_certified": round((held - refused) / max(1, draws - refused), 4)}


def summary(rows: list[dict[str, Any]], target: float) -> dict[str, Any]:
    cov = np.asarray([r["calibrated_coverage"] for r in rows])
    acc = np.asarray([np.nan if r["calibrated_accuracy"] is None else r["calibrated_accuracy"]
                      for r in rows])
    best = np.asarray([r["best_coverage"] for r in rows])
    return {
        "splits": len(rows), "splits_refused": sum(r["threshold"] is None for r in rows),
        "median_coverage": round(float(np.median(cov)), 4),
        "p5_coverage": round(float(np.percentile(cov, 5)), 4),
        "p95_coverage": round(float(np.percentile(cov, 95)), 4),
        "min_coverage": round(float(cov.min()), 4), "max_coverage": round(float(cov.max()), 4),
        "median_accuracy": round(float(np.nanmedian(acc)), 4),
        "min_accuracy": round(float(np.nanmin(acc)), 4) if np.isfinite(acc).any() else None,
        "splits_meeting_target_on_evaluation": int(np.sum(acc >= target)),
        "median_uncertified_best_coverage": round(float(np.median(best)), 4),
        "mean_fixed_coverage": round(float(np.mean([r["fixed_coverage"] for r in rows])), 4),
        "mean_fixed_accuracy": round(float(np.mean([r["fixed_accuracy"] for r in rows])), 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=200)
    ap.add_argument("--calibration-size", type=int, default=1500)
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--fixed", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--each", action="store_true", help="also print one line per split")
    ap.add_argument("--skip-baseline", action="store_true")
    ap.add_argument("--resample", type=int, default=2000,
                    help="calibration sets drawn with replacement from the 3,080 (0: none)")
    args = ap.parse_args()
    import triage_model

    models = {"tfidf-svm-margin (demo)": triage_model.load_or_train}
    if not args.skip_baseline:
        models = {"tfidf-logreg (before)": baseline_model, **models}
    for name, make in models.items():
        t0 = time.perf_counter()
        conf, right, ids = scores(make())
        base = {"bench": "calibration", "model": name, "records": int(conf.size),
                "model_accuracy": round(float(right.mean()), 4), "target_accuracy": args.target,
                "delta": args.delta, "machine": platform.machine()}
        print(json.dumps({**base, "measure": "demo split",
                          **demo_split(conf, right, ids, args.target, args.delta)}), flush=True)
        rows = split_study(conf, right, splits=args.splits, seed=args.seed,
                           target_accuracy=args.target, delta=args.delta,
                           fixed_threshold=args.fixed, calibration_size=args.calibration_size)
        for row in rows if args.each else []:
            print(json.dumps({**base, **row}))
        print(json.dumps({**base, "measure": "random splits",
                          "calibration_size": args.calibration_size, **summary(rows, args.target),
                          "elapsed_s": round(time.perf_counter() - t0, 2)}), flush=True)
        if args.resample:
            print(json.dumps({**base, "measure": "guarantee over resampled calibration sets",
                              **resample(conf, right, args.resample, args.calibration_size,
                                         args.target, args.delta, args.seed)}), flush=True)


if __name__ == "__main__":
    main()
