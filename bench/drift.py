"""Drift detection on 1,000,000 rows x (20 numeric + 5 categorical): keel vs Evidently.

    python bench/drift.py [--rows 1000000] [--evidently-python /path/to/python]

Writes a reference and a current Parquet file (the current one with known shifts in 8
columns), then measures, each in its own subprocess so peak memory (ru_maxrss) is its own:

- ``keel_full``: profile the reference and count the current window, both streamed from
  Parquet in 100,000-row Arrow batches, then run every check;
- ``keel_current``: the scheduled case: load a saved reference profile, stream the current
  window, run the checks;
- ``evidently``: Evidently's ``DataDriftPreset`` on the same files loaded with pandas (its
  API takes whole DataFrames). Evidently is installed only for this script, never by keel:
  ``--evidently-python`` may point at a virtualenv that has it.

Prints one JSON line per measurement and a final comparison line (verdicts, speed-up,
memory ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

NUMERIC = [f"n{i:02d}" for i in range(20)]
CATEGORICAL = [f"c{i}" for i in range(5)]
#: What changes in the current window, and how (the ground truth the verdicts are held to).
SHIFTS = {
    "n00": "mean +0.25 sd",
    "n03": "spread x1.5",
    "n07": "log-normal, log-mean +0.3",
    "n12": "uniform range moved up by 0.1 (0.35 sd)",
    "n16": "10% of values become outliers at +4 sd",
    "c1": "one category's share +10 pp",
    "c3": "a new category in 5% of rows",
    "c4": "one category's share +4 pp",
}
CHUNK = 100_000


def _chunk(rng: np.random.Generator, n: int, shifted: bool) -> dict[str, Any]:
    cols: dict[str, Any] = {}
    for i, name in enumerate(NUMERIC):
        kind = i % 4
        if kind == 0:
            x = rng.normal(10.0 * i, 1.0 + i, n)
        elif kind == 1:
            x = rng.exponential(2.0 + i, n)
        elif kind == 2:
            x = rng.poisson(3 + i, n).astype(np.float64)
        else:
            x = rng.normal(0.0, 1.0, n)
        cols[name] = x
    cols["n07"] = rng.lognormal(1.0, 0.8, n)
    cols["n12"] = rng.uniform(0.0, 1.0, n)
    if shifted:
        cols["n00"] = cols["n00"] + 0.25 * 1.0
        cols["n03"] = cols["n03"] * 1.5
        cols["n07"] = rng.lognormal(1.3, 0.8, n)
        cols["n12"] = cols["n12"] + 0.1
        sd16 = 1.0 + 16
        out = rng.random(n) < 0.10
        cols["n16"] = np.where(out, 10.0 * 16 + 4 * sd16, cols["n16"])
    letters = np.array(list("ABCDEFGH"), dtype=object)
    base = np.array([0.30, 0.20, 0.15, 0.10, 0.10, 0.08, 0.05, 0.02])
    for name in CATEGORICAL:
        p = base.copy()
        if shifted and name == "c1":
            p[0] += 0.10
            p[1:] *= (1 - p[0]) / p[1:].sum()
        if shifted and name == "c4":
            p[1] += 0.04
            p[0] -= 0.04
        values = letters[rng.choice(8, n, p=p / p.sum())]
        if shifted and name == "c3":
            values = np.where(rng.random(n) < 0.05, "Z-new", values)
        cols[name] = values.astype(str)
    return cols


def generate(folder: Path, rows: int, seed: int = 0) -> tuple[Path, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    for label, shifted, offset in (("reference", False, 0), ("current", True, 1)):
        path = folder / f"{label}.parquet"
        rng = np.random.default_rng(seed + offset)
        writer = None
        for start in range(0, rows, CHUNK):
            table = pa.table(_chunk(rng, min(CHUNK, rows - start), shifted))
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table)
        assert writer is not None
        writer.close()
        paths.append(path)
    return paths[0], paths[1]


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _stream(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).iter_batches(batch_size=CHUNK)


def run_keel_full(ref: Path, cur: Path, profile_out: Path) -> dict[str, Any]:
    from keel import _json
    from keel.monitor import ProfileBuilder, WindowCounter, compare

    t0 = time.perf_counter()
    kinds = {n: "numeric" for n in NUMERIC} | {c: "categorical" for c in CATEGORICAL}
    builder = ProfileBuilder(kinds=kinds, seed=0)
    for batch in _stream(ref):
        builder.add(batch)
    profile = builder.build()
    t1 = time.perf_counter()
    counter = WindowCounter(profile, seed=1)
    for batch in _stream(cur):
        counter.add(batch)
    report = compare(profile, counter.window)
    t2 = time.perf_counter()
    profile_out.write_text(_json.dumps(profile.to_json()))
    return {
        "reference_s": t1 - t0,
        "current_s": t2 - t1,
        "wall_s": t2 - t0,
        "flagged": sorted(report.drifted_fields()),
        "profile_bytes": profile_out.stat().st_size,
    }


def run_keel_current(cur: Path, profile_in: Path) -> dict[str, Any]:
    from keel import _json
    from keel.monitor import Profile, WindowCounter, compare

    t0 = time.perf_counter()
    profile = Profile.from_json(_json.loads(profile_in.read_text()))
    counter = WindowCounter(profile, seed=1)
    for batch in _stream(cur):
        counter.add(batch)
    report = compare(profile, counter.window)
    return {"wall_s": time.perf_counter() - t0, "flagged": sorted(report.drifted_fields())}


def run_evidently(ref: Path, cur: Path) -> dict[str, Any]:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    t0 = time.perf_counter()
    ref_df, cur_df = pd.read_parquet(ref), pd.read_parquet(cur)
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur_df, data_definition=definition),
        Dataset.from_pandas(ref_df, data_definition=definition),
    )
    flagged = []
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            p_value = "p_value" in cfg["method"].replace("-", "_").lower()
            drift = m["value"] < cfg["threshold"] if p_value else m["value"] >= cfg["threshold"]
            if drift:
                flagged.append(cfg["column"])
    return {
        "wall_s": time.perf_counter() - t0,
        "flagged": sorted(flagged),
        "evidently_version": __import__("evidently").__version__,
    }


def _child(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    ref, cur, prof = (
        folder / "reference.parquet",
        folder / "current.parquet",
        folder / "profile.json",
    )
    if args.child == "keel_full":
        out = run_keel_full(ref, cur, prof)
    elif args.child == "keel_current":
        out = run_keel_current(cur, prof)
    else:
        out = run_evidently(ref, cur)
    out["peak_mb"] = round(_peak_mb(), 1)
    print(json.dumps(out))


def _measure(python: str, name: str, folder: Path) -> dict[str, Any]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [python, __file__, "--child", name, "--folder", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if res.returncode != 0:
        return {"measurement": name, "error": res.stderr.strip().splitlines()[-1:]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    return {"measurement": name, **out}


def _verdicts(flagged: list[str]) -> dict[str, Any]:
    truth = set(SHIFTS)
    got = set(flagged)
    return {
        "missed": sorted(truth - got),
        "false_alarms": sorted(got - truth),
        "all_shifted_flagged": truth <= got,
        "no_unshifted_flagged": got <= truth,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--evidently-python", default=sys.executable)
    ap.add_argument("--child", choices=["keel_full", "keel_current", "evidently"])
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        generate(folder, args.rows)
        print(
            json.dumps(
                {
                    "measurement": "data",
                    "rows": args.rows,
                    "numeric": len(NUMERIC),
                    "categorical": len(CATEGORICAL),
                    "shifted": SHIFTS,
                    "generate_s": round(time.perf_counter() - t0, 2),
                }
            )
        )
        results = {}
        for name, python in (
            ("keel_full", sys.executable),
            ("keel_current", sys.executable),
            ("evidently", args.evidently_python),
        ):
            r = _measure(python, name, folder)
            if "flagged" in r:
                r["verdicts"] = _verdicts(r["flagged"])
            results[name] = r
            print(json.dumps(r))
        ours, theirs = results["keel_full"], results["evidently"]
        if "wall_s" in ours and "wall_s" in theirs:
            print(
                json.dumps(
                    {
                        "measurement": "comparison",
                        "speedup_full": round(theirs["wall_s"] / ours["wall_s"], 1),
                        "speedup_current": round(
                            theirs["wall_s"] / results["keel_current"]["wall_s"], 1
                        ),
                        "memory_ratio_full": round(ours["peak_mb"] / theirs["peak_mb"], 3),
                        "memory_ratio_current": round(
                            results["keel_current"]["peak_mb"] / theirs["peak_mb"], 3
                        ),
                        "keel_current_peak_under_500mb": results["keel_current"]["peak_mb"] < 500,
                    }
                )
            )


if __name__ == "__main__":
    main()
