"""bench/drift.py still runs, small, and reports every measurement docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_drift_bench_runs_small(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "drift.py"), "--rows", "20000", "--repeats", "2"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    runs = [r for r in lines if "round" in r]
    assert sorted(r["measurement"] for r in runs) == sorted(
        ["keel_cli", "keel_api", "numpy_scipy"] * 2)
    assert not [r for r in runs if "error" in r]
    summary = {r["measurement"]: r for r in lines if r.get("summary")}
    for name in ("keel_cli", "keel_api"):
        s = summary[name]
        assert s["runs"] == 2 and s["same_verdicts_every_run"]
        assert s["verdicts"]["no_unshifted_flagged"], s["verdicts"]
        assert {"c1", "c3", "n00", "n03"} <= set(s["verdicts"]["alert"])
    # the command line and the API count the same rows the same way (the command also checks
    # the schema, more checks for the false-discovery adjustment: a borderline minor may differ)
    assert summary["keel_cli"]["verdicts"]["alert"] == summary["keel_api"]["verdicts"]["alert"]
    comparison = lines[-1]
    assert comparison["measurement"] == "comparison" and comparison["cli_over_api"] > 0
