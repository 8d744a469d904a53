"""Drift from files on 1,000,000 rows x (20 numeric + 5 categorical): keel's command line
beside keel's streaming API and plain NumPy/SciPy (and Evidently, when asked for).

    python bench/drift.py [--rows 1000000] [--repeats 3] [--evidently-python /path/to/python]

Writes a reference and a current Parquet file (the current one with known shifts in 13
columns, five of them small: 0.03 to 0.2 sd), then measures, interleaved, each run in its own
subprocess so peak memory (ru_maxrss) is its own:

- ``keel_cli``: ``keel drift reference watch.py --from reference.parquet`` then ``keel drift
  report watch.py --from current.parquet --json``, two processes, a fresh SQLite store;
  ``watch.py`` is a monitor-only declaration (``keel.Watch``) of the 25 columns;
- ``keel_api``: the same work in one process through keel's streaming API
  (``ProfileBuilder`` and ``WindowCounter`` over 100,000-row Arrow batches, ``compare``);
- ``numpy_scipy``: plain code: both files' columns as NumPy arrays, ``scipy.stats.ks_2samp``
  per number, ``chi2_contingency`` per category, Bonferroni at 1%;
- ``evidently`` (only with ``--evidently-python``): ``DataDriftPreset`` on the same files
  loaded with pandas. Evidently is installed only for this script, never by keel.

Prints one JSON line per run, one per measurement (the median of ``--repeats`` runs, with
verdicts against the known shifts) and a final comparison line. ``process_s`` is a whole
process as a user waits for it (start-up, imports, work; the CLI's two commands together);
``wall_s`` is the work alone, timed inside the process (for the CLI, the same as
``process_s``). ``cli_over_api`` compares whole processes; ``cli_over_api_work_only`` holds
the CLI's two processes to the API's work alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
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
    "n04": "mean +0.2 sd",
    "n07": "log-normal, log-mean +0.3",
    "n08": "mean +0.1 sd",
    "n10": "Poisson mean 13 -> 13.4 (+0.11 sd)",
    "n11": "mean +0.05 sd",
    "n12": "uniform range moved up by 0.1 (0.35 sd)",
    "n15": "mean +0.03 sd",
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
        cols["n04"] = cols["n04"] + 0.2 * (1.0 + 4)
        cols["n08"] = cols["n08"] + 0.1 * (1.0 + 8)
        cols["n10"] = rng.poisson(13.4, n).astype(np.float64)
        cols["n11"] = cols["n11"] + 0.05
        cols["n15"] = cols["n15"] + 0.03
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


WATCH = f"""import keel
from pydantic import BaseModel


class Row(BaseModel):
{chr(10).join(f"    {n}: float" for n in NUMERIC)}
{chr(10).join(f"    {c}: str" for c in CATEGORICAL)}


watch = keel.Watch(name="synthetic", input=Row)
"""


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0


def _stream(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).iter_batches(batch_size=CHUNK)


def _levels(report: Any) -> dict[str, str]:
    return {k.removeprefix("input."): v for k, v in report.levels().items()}


def run_keel_api(ref: Path, cur: Path) -> dict[str, Any]:
    from keel.monitor import ProfileBuilder, WindowCounter, compare

    t0 = time.perf_counter()
    kinds = {n: "numeric" for n in NUMERIC} | {c: "categorical" for c in CATEGORICAL}
    builder = ProfileBuilder(kinds=kinds)
    for batch in _stream(ref):
        builder.add(batch)
    profile = builder.build()
    t1 = time.perf_counter()
    counter = WindowCounter(profile)
    for batch in _stream(cur):
        counter.add(batch)
    report = compare(profile, counter.window)
    t2 = time.perf_counter()
    return {
        "reference_s": t1 - t0,
        "current_s": t2 - t1,
        "wall_s": t2 - t0,
        "levels": _levels(report),
    }


def run_keel_cli(folder: Path) -> dict[str, Any]:
    """Two processes, as a user types them; wall time includes start-up and the store."""
    db = folder / "keel.db"
    db.unlink(missing_ok=True)
    env = {**os.environ, "KEEL_DB": f"sqlite:///{db}"}
    keel = [sys.executable, "-m", "keel", "drift"]
    watch = str(folder / "watch.py")
    t0 = time.perf_counter()
    made = subprocess.run(
        [*keel, "reference", watch, "--from", str(folder / "reference.parquet"), "--json"],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    t1 = time.perf_counter()
    res = subprocess.run(
        [*keel, "report", watch, "--from", str(folder / "current.parquet"), "--json"],
        capture_output=True, text=True, env=env, timeout=3600,
    )
    t2 = time.perf_counter()
    for r in (made, res):
        if r.returncode != 0:
            raise RuntimeError(r.stderr.strip()[-2000:])
    report = json.loads(res.stdout)
    levels: dict[str, str] = {}
    order = ("alert", "minor", "none")
    for c in report["checks"]:
        name = c["field"].removeprefix("input.")
        levels[name] = min(levels.get(name, "none"), c["level"], key=order.index)
    return {
        "reference_s": t1 - t0,
        "current_s": t2 - t1,
        "wall_s": t2 - t0,
        "levels": levels,
        "peak_mb": round(_children_peak_mb(), 1),
    }


def run_numpy_scipy(ref: Path, cur: Path) -> dict[str, Any]:
    import pyarrow.parquet as pq
    from scipy import stats

    t0 = time.perf_counter()
    a, b = pq.read_table(ref), pq.read_table(cur)
    alpha = 0.01 / (len(NUMERIC) + len(CATEGORICAL))  # Bonferroni across the columns
    levels = {}
    for name in NUMERIC:
        x = a.column(name).to_numpy()
        y = b.column(name).to_numpy()
        p = stats.ks_2samp(x, y).pvalue
        levels[name] = "alert" if p < alpha else "none"
    for name in CATEGORICAL:
        x = a.column(name).to_numpy(zero_copy_only=False)
        y = b.column(name).to_numpy(zero_copy_only=False)
        cats, inv = np.unique(np.concatenate([x, y]), return_inverse=True)
        table = np.vstack([
            np.bincount(inv[: x.size], minlength=cats.size),
            np.bincount(inv[x.size :], minlength=cats.size),
        ])
        p = stats.chi2_contingency(table).pvalue
        levels[name] = "alert" if p < alpha else "none"
    return {"wall_s": time.perf_counter() - t0, "levels": levels}


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
    levels = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg.get("type", "").endswith("ValueDrift"):
            p_value = "p_value" in cfg["method"].replace("-", "_").lower()
            drift = m["value"] < cfg["threshold"] if p_value else m["value"] >= cfg["threshold"]
            levels[cfg["column"]] = "alert" if drift else "none"
    return {
        "wall_s": time.perf_counter() - t0,
        "levels": levels,
        "evidently_version": __import__("evidently").__version__,
    }


def _child(args: argparse.Namespace) -> None:
    folder = Path(args.folder)
    ref, cur = folder / "reference.parquet", folder / "current.parquet"
    if args.child == "keel_cli":
        out = run_keel_cli(folder)
    else:
        run = {"keel_api": run_keel_api, "numpy_scipy": run_numpy_scipy,
               "evidently": run_evidently}[args.child]
        out = run(ref, cur)
        out["peak_mb"] = round(_peak_mb(), 1)
    print(json.dumps(out))


def _measure(python: str, name: str, folder: Path) -> dict[str, Any]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    t0 = time.perf_counter()
    res = subprocess.run(
        [python, __file__, "--child", name, "--folder", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    process_s = time.perf_counter() - t0
    if res.returncode != 0:
        return {"measurement": name, "error": res.stderr.strip().splitlines()[-3:]}
    out = json.loads(res.stdout.strip().splitlines()[-1])
    if name == "keel_cli":  # its processes are the user's commands: their wall is the time
        process_s = out["wall_s"]
    return {"measurement": name, **out, "process_s": process_s}


def verdicts(levels: dict[str, str]) -> dict[str, Any]:
    """The levels held to the known shifts: every shifted column at least minor, no other
    column flagged at any level."""
    truth = set(SHIFTS)
    flagged = {k for k, v in levels.items() if v != "none"}
    return {
        "alert": sorted(k for k, v in levels.items() if v == "alert"),
        "minor": sorted(k for k, v in levels.items() if v == "minor"),
        "missed": sorted(truth - flagged),
        "false_alarms": sorted(flagged - truth),
        "every_shifted_flagged": truth <= flagged,
        "no_unshifted_flagged": flagged <= truth,
    }


def _summary(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in runs if "wall_s" in r]
    if not ok:
        return {"measurement": name, "error": runs[0].get("error")}
    walls = [r["wall_s"] for r in ok]
    procs = [r["process_s"] for r in ok]
    out: dict[str, Any] = {
        "measurement": name,
        "summary": True,
        "runs": len(ok),
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_range": [round(min(walls), 3), round(max(walls), 3)],
        "process_s_median": round(statistics.median(procs), 3),
        "peak_mb_median": statistics.median(r["peak_mb"] for r in ok),
    }
    out["same_verdicts_every_run"] = all(r["levels"] == ok[0]["levels"] for r in ok)
    out["verdicts"] = verdicts(ok[0]["levels"])
    for part in ("reference_s", "current_s"):
        if part in ok[0]:
            out[f"{part}_median"] = round(statistics.median(r[part] for r in ok), 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--evidently-python", default=None)
    ap.add_argument("--child", choices=["keel_cli", "keel_api", "numpy_scipy", "evidently"])
    ap.add_argument("--folder")
    args = ap.parse_args()
    if args.child:
        _child(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        generate(folder, args.rows)
        (folder / "watch.py").write_text(WATCH, encoding="utf-8")
        print(json.dumps({
            "measurement": "data",
            "rows": args.rows,
            "numeric": len(NUMERIC),
            "categorical": len(CATEGORICAL),
            "shifted": SHIFTS,
            "generate_s": round(time.perf_counter() - t0, 2),
        }))
        plan = [("keel_cli", sys.executable), ("keel_api", sys.executable),
                ("numpy_scipy", sys.executable)]
        if args.evidently_python:
            plan.append(("evidently", args.evidently_python))
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in plan}
        for i in range(args.repeats):  # interleaved, the order turning each round
            for name, python in plan[i % len(plan):] + plan[: i % len(plan)]:
                r = _measure(python, name, folder)
                r["round"] = i
                runs[name].append(r)
                print(json.dumps(r))
        summary = {name: _summary(name, rs) for name, rs in runs.items()}
        for line in summary.values():
            print(json.dumps(line))
        comparison: dict[str, Any] = {"measurement": "comparison", "rows": args.rows}
        if all("process_s_median" in summary[k] for k in ("keel_cli", "keel_api", "numpy_scipy")):
            cli = summary["keel_cli"]["process_s_median"]
            api, plain = (summary[k]["process_s_median"] for k in ("keel_api", "numpy_scipy"))
            api_work = summary["keel_api"]["wall_s_median"]
            comparison |= {
                # whole processes: start-up, imports and work, as a user waits for them
                "cli_over_api": round(cli / api, 2),
                "cli_within_1_5x_of_api": cli <= 1.5 * api,
                "cli_over_numpy_scipy": round(cli / plain, 2),
                "api_over_numpy_scipy": round(api / plain, 2),
                # stricter: the CLI's two processes against the API's work alone
                "cli_over_api_work_only": round(cli / api_work, 2),
            }
        ev = summary.get("evidently", {}).get("wall_s_median")
        if ev and cli:
            comparison["evidently_over_cli"] = round(ev / cli, 2)
        print(json.dumps(comparison))


if __name__ == "__main__":
    main()
