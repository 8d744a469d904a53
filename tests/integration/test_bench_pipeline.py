"""bench/pipeline.py still runs and reports every measurement docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_pipeline_bench_runs_small(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "pipeline.py"), "--records", "1200",
         "--memory-records", "3000", "--repeats", "1", "--instruction-records", "0"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {m["measure"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {
        "raw_model_predict", "keel_run_demo_model_sqlite", "keel_run_noop_model_sqlite",
        "keel_run_demo_model_sqlite_one_core", "keel_run_noop_model_sqlite_one_core",
        "keel_run_noop_model_sqlite_one_core_writer_process_forced", "peak_memory_noop_1m",
        "screening_overhead_demo_model_sqlite"}
    screening = lines["screening_overhead_demo_model_sqlite"]
    assert screening["records"] == 1200 and screening["time_ratio"] > 0
    assert len(screening["runs_with"]) == len(screening["runs_without"]) == 1
    for name, line in lines.items():
        if name.startswith("keel_run"):
            assert line["read"] == 1200 and line["records_per_s"] > 0
    assert lines["keel_run_demo_model_sqlite"]["ratio_to_raw_model"] > 0
    assert lines["peak_memory_noop_1m"]["decided"] == 3000
