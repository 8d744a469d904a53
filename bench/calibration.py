"""Calibration evidence on real data: Banking77's test split with the support_triage model.

Over N random calibration/evaluation halves, Learn-then-Test picks a threshold on one half
(target accuracy 0.98, delta 0.05); the other half shows the realized accuracy and coverage
of what would be automated, beside a fixed threshold of 0.5. Prints one JSON line per split
and per method, then a summary line per method.

    python bench/calibration.py [--splits 20] [--target 0.98] [--delta 0.05]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

from keel.review._risk import split_study  # noqa: E402


def demo_predictions() -> tuple[np.ndarray, np.ndarray]:
    """(top-class probability, was the top class right) for every message of the test split."""
    import triage_model  # the example's own module: trains on first use, then cached

    model = triage_model.load_or_train()
    texts, labels = triage_model.read_labelled(triage_model.DATA / "test.csv")
    proba = model.predict_proba(texts)
    best = proba.argmax(axis=1)
    conf = proba[np.arange(len(best)), best]
    correct = model.classes_[best] == np.asarray(labels)
    return conf, correct


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--splits", type=int, default=20)
    ap.add_argument("--target", type=float, default=0.98)
    ap.add_argument("--delta", type=float, default=0.05)
    ap.add_argument("--fixed", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.perf_counter()
    conf, correct = demo_predictions()
    base = {"bench": "calibration", "records": int(conf.size),
            "model_accuracy": round(float(correct.mean()), 4), "machine": platform.machine()}
    for method in ("binomial", "hb"):
        rows = split_study(conf, correct, splits=args.splits, seed=args.seed,
                           target_accuracy=args.target, delta=args.delta, method=method,
                           fixed_threshold=args.fixed)
        for row in rows:
            print(json.dumps({**base, "method": method, **row}))
        met = sum(1 for r in rows if (r["calibrated_accuracy"] or 0) >= args.target)
        summary = {
            **base, "method": method, "summary": True, "splits": args.splits,
            "target_accuracy": args.target, "delta": args.delta,
            "splits_meeting_target": met,
            "splits_refused": sum(1 for r in rows if r["threshold"] is None),
            "mean_threshold": float(np.mean([r["threshold"] for r in rows if r["threshold"]])),
            "mean_calibrated_coverage": float(np.mean([r["calibrated_coverage"] for r in rows])),
            "mean_calibrated_accuracy": float(np.nanmean(
                [r["calibrated_accuracy"] or np.nan for r in rows])),
            "min_calibrated_accuracy": float(np.nanmin(
                [r["calibrated_accuracy"] or np.nan for r in rows])),
            "fixed_threshold": args.fixed,
            "mean_fixed_coverage": float(np.mean([r["fixed_coverage"] for r in rows])),
            "mean_fixed_accuracy": float(np.mean([r["fixed_accuracy"] for r in rows])),
            "splits_fixed_meeting_target": sum(
                1 for r in rows if r["fixed_accuracy"] >= args.target),
            "elapsed_s": round(time.perf_counter() - t0, 2),
        }
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
