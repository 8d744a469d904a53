"""bench/cost.py still runs and reports the measurements docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import PG_URL

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_cost_bench_runs_small(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cost.py"), "--records", "600", "--repeats", "1",
         "--batch-size", "100"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {m["measure"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"keel_run_noop_sqlite_plain", "keel_run_noop_sqlite_budgeted",
                          "cost_overhead_noop_sqlite"}
    assert lines["keel_run_noop_sqlite_budgeted"]["records_per_s"] > 0
    assert lines["cost_overhead_noop_sqlite"]["budgeted_to_plain"] > 0


@pytest.mark.slow
@pytest.mark.postgres
def test_cost_bench_serve_mode_runs_small(tmp_path: Path) -> None:
    """--serve: keel serve on PostgreSQL, plain and budgeted, under concurrent clients."""
    base = PG_URL.replace("postgresql+psycopg://", "postgresql://", 1)
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "cost.py"), "--serve", "--postgres", base,
         "--seconds", "1", "--repeats", "1", "--clients", "4"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {m["measure"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"keel_serve_postgres_plain", "keel_serve_postgres_budgeted",
                          "cost_overhead_serve_postgres"}
    for kind in ("plain", "budgeted"):
        found = lines[f"keel_serve_postgres_{kind}"]
        assert found["requests_per_s"] > 0 and found["clients"] == 4
        assert 0 < found["p50_ms"] <= found["p99_ms"]
    assert lines["cost_overhead_serve_postgres"]["budgeted_to_plain"] > 0
