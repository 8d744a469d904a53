"""Out-of-scope messages decided automatically by the support_triage demo, default install.

The demo workflow calibrated as the README says (`keel calibrate` on calibration.csv: target
0.98, delta 0.05), then `keel run` on in-scope traffic (traffic.csv, 1,580 Banking77
messages) and on out-of-scope sets: ``ood.csv`` (325 non-banking questions written for keel)
and sentences of Python's own documentation as shipped with CPython (``pydoc_data.topics``,
public text no part of keel was tuned on). Twice, in fresh stores: without a reference
profile, and with one built from the train split with the default embedder (what the docs
say to do). Prints one JSON line per (profile, set): the share accepted automatically and
the share flagged out-of-distribution. Then what screening costs: ``keel run`` of the 1,580
traffic messages in a fresh store without a profile and in a fresh copy of a store with one,
interleaved, ``--repeats`` times each; one line with the medians and their ratio.

    python bench/ood.py [--pydoc 500] [--repeats 3] [--embedder auto] [--ood-fpr 0.015]
                        [--sample-size 10003]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))

import keel  # noqa: E402
from keel.monitor import build_reference  # noqa: E402
from keel.monitor._api import resolve_embedder  # noqa: E402
from keel.review import calibrate  # noqa: E402


def pydoc_sentences(n: int, seed: int = 0) -> list[str]:
    """Sentences of the Python documentation's topics, as shipped with CPython."""
    from pydoc_data.topics import topics

    found = {s.strip() for text in topics.values() for s in re.split(r"(?<=[.?!])\s+", text)}
    keep = sorted(s for s in found if 20 <= len(s) <= 200 and "\n" not in s and "  " not in s)
    random.Random(seed).shuffle(keep)
    return keep[:n]


def write_set(folder: Path, name: str, texts: list[str]) -> Path:
    path = folder / f"{name}.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "text"])
        writer.writerows((f"{name}-{i:04d}", t) for i, t in enumerate(texts))
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pydoc", type=int, default=500, help="Python documentation sentences")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--embedder", default="auto",
                    help="the reference profile's text embedder (auto: what `keel drift` picks)")
    ap.add_argument("--ood-fpr", type=float, default=0.015,
                    help="the profile's calibrated share of in-scope messages flagged "
                         "(docs/drift.md's demo command uses 0.015)")
    ap.add_argument("--sample-size", type=int, default=10_003,
                    help="rows the profile keeps (10,003: the whole train split, as docs/drift.md's "
                         "demo command)")
    args = ap.parse_args()
    embedder = resolve_embedder(args.embedder)
    data = EXAMPLE / "data"
    wf_path = EXAMPLE / "workflow.py"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sets = {"in-scope traffic.csv": data / "traffic.csv", "ood.csv": data / "ood.csv",
                "python docs": write_set(folder, "pydoc", pydoc_sentences(args.pydoc))}
        for profile in (False, True):
            store = keel.Store.open(f"sqlite:///{folder / f'profile-{profile}.db'}")
            try:
                wf = keel.load_workflow(wf_path)
                cal = calibrate(wf, store, labels_file=data / "calibration.csv",
                                label_column="category")
                if profile:
                    build_reference(wf_path, store=store, source=data / "train.csv", seed=0,
                                    embedder=embedder, ood_fpr=args.ood_fpr,
                                    sample_size=args.sample_size)
                for name, path in sets.items():
                    t0 = time.perf_counter()
                    s = keel.run(wf_path, path, store=store)
                    ood = s.review_reasons.get("out_of_distribution", 0)
                    print(json.dumps({
                        "bench": "ood", "reference_profile": profile, "embedder": embedder,
                        "ood_fpr": args.ood_fpr, "sample_size": args.sample_size, "set": name,
                        "records": s.read, "threshold": cal.threshold,
                        "accepted_share": round(s.counts.get("accepted", 0) / s.read, 4),
                        "flagged_ood_share": round(ood / s.read, 4),
                        "elapsed_s": round(time.perf_counter() - t0, 2),
                        "machine": platform.machine()}), flush=True)
            finally:
                store.close()
        overhead(folder, wf_path, data, args.repeats, embedder, args.ood_fpr, args.sample_size)


def overhead(folder: Path, wf_path: Path, data: Path, repeats: int, embedder: str,
             ood_fpr: float, sample_size: int) -> None:
    """keel run of traffic.csv without and with a reference profile, interleaved."""
    template = folder / "template.db"
    store = keel.Store.open(f"sqlite:///{template}")
    try:
        build_reference(wf_path, store=store, source=data / "train.csv", seed=0,
                        embedder=embedder, ood_fpr=ood_fpr, sample_size=sample_size)
    finally:
        store.close()
    times: dict[bool, list[float]] = {False: [], True: []}
    for r in range(repeats):
        for profile in (False, True):
            db = folder / f"timing-{r}-{profile}.db"
            if profile:
                shutil.copy(template, db)
            t0 = time.perf_counter()
            keel.run(wf_path, data / "traffic.csv", db=f"sqlite:///{db}")
            times[profile].append(time.perf_counter() - t0)
    plain, screened = statistics.median(times[False]), statistics.median(times[True])
    print(json.dumps({"bench": "ood", "measure": "screening overhead, keel run traffic.csv",
                      "embedder": embedder,
                      "records": 1580, "repeats": repeats,
                      "median_s_without_profile": round(plain, 3),
                      "median_s_with_profile": round(screened, 3),
                      "ratio": round(screened / plain, 3),
                      "runs_without": [round(t, 3) for t in times[False]],
                      "runs_with": [round(t, 3) for t in times[True]],
                      "machine": platform.machine()}), flush=True)


if __name__ == "__main__":
    main()
