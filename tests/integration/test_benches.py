"""Each bench/ script that docs/benchmarks.md quotes still runs, small, and prints the JSON
lines its figures come from (the figures themselves are measured on a quiet machine, not
here: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(tmp_path: Path, script: str, *args: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


@pytest.mark.slow
@pytest.mark.postgres
def test_durable_bench_runs_small(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "durable.py", "--records", "600", "--repeats", "1")
    summary = lines[-1]
    assert summary["bench"] == "durable summary"
    assert set(summary["median_records_per_s"]) == {
        "floor sqlite", "keel sqlite", "floor postgres", "keel postgres"}
    assert all(v > 0 for v in summary["median_records_per_s"].values())
    assert {"keel/floor sqlite", "keel/floor postgres", "keel postgres/sqlite"} <= set(summary)


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_bench_runs_small(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "workers.py", "--seconds", "0.5", "--repeats", "1",
                   "--submit-rows", "300")
    configs = {ln["config"] for ln in lines if ln["bench"] == "workers"}
    assert configs == {"1 worker, concurrency 1", "4 workers, concurrency 1",
                       "1 worker, concurrency 32"}
    (sub,) = [ln for ln in lines if ln["bench"] == "submit"]
    assert sub["keel"]["rows"] == sub["copy"]["rows"] == 300
    assert lines[-1]["bench"] == "summary" and lines[-1]["4_workers_over_1"] > 0


@pytest.mark.slow
@pytest.mark.postgres
def test_submit_stages_bench_runs_small(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "submit_stages.py", "--rows", "3000", "--repeats", "1")
    summary = lines[-1]
    assert summary["bench"] == "submit stages summary" and summary["rows"] == 3000
    assert len(summary["median_us_per_row"]) == 9
    assert all(v > 0 for v in summary["median_us_per_row"].values())


@pytest.mark.slow
def test_slow_models_bench_runs_small(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "slow_models.py", "--records", "200", "--concurrency", "8",
                   "--repeats", "1")
    assert [ln["measure"] for ln in lines] == ["slow_async_model", "slow_sync_model"]
    assert all(ln["records"] == 200 and ln["ratio"] > 0 for ln in lines)


@pytest.mark.slow
def test_gates_bench_runs_small(tmp_path: Path) -> None:
    (line,) = _bench(tmp_path, "gates.py", "--records", "500", "--repeats", "1")
    assert line["measure"] == "gate_report" and line["records"] == 500 and line["criteria"] >= 15


@pytest.mark.slow
def test_releases_bench_runs_small(tmp_path: Path) -> None:
    lines = _bench(tmp_path, "releases.py", "--records", "300", "--repeats", "1")
    by = {ln["measure"]: ln for ln in lines}
    assert set(by) == {"run_noop_no_rollout", "run_noop_canary_5pct",
                       "eval_two_releases_test_split"}
    assert by["run_noop_canary_5pct"]["records"] == 300
    assert by["run_noop_canary_5pct"]["ratio_to_no_rollout"] > 0
    assert by["eval_two_releases_test_split"]["records"] == 3080
