"""bench/calibration.py and bench/ood.py still run and report what docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _bench(name: str, args: list[str], artifacts: Path, cwd: Path) -> list[dict[str, object]]:
    env = {**os.environ, "KEEL_ARTIFACTS": str(artifacts)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / name), *args], env=env, cwd=cwd,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.slow
@pytest.mark.timeout(900)  # trains the demo model when the cache is cold: minutes on a busy machine
def test_calibration_bench_runs_small(tmp_path: Path, artifacts_dir: Path) -> None:
    lines = _bench("calibration.py", ["--splits", "3", "--resample", "20", "--skip-baseline"],
                   artifacts_dir, tmp_path)
    by = {m["measure"]: m for m in lines}
    assert set(by) == {"demo split", "random splits", "guarantee over resampled calibration sets"}
    demo = by["demo split"]
    assert demo["traffic"] == 1580 and demo["coverage"] >= 0.75  # type: ignore[operator]
    assert demo["realized_accuracy"] >= 0.98  # type: ignore[operator]
    assert by["random splits"]["splits"] == 3
    assert by["guarantee over resampled calibration sets"]["draws"] == 20


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_ood_bench_runs_small(tmp_path: Path, artifacts_dir: Path) -> None:
    # the default install's embedder, named: CI also installs MiniLM, which `auto` would pick
    out = _bench("ood.py", ["--pydoc", "200", "--repeats", "1", "--embedder", "wordllama"],
                 artifacts_dir, tmp_path)
    lines = [m for m in out if "set" in m]
    (cost,) = [m for m in out if m.get("measure") == "screening overhead, keel run traffic.csv"]
    assert cost["repeats"] == 1 and cost["ratio"] > 0  # type: ignore[operator]
    assert [(m["reference_profile"], m["set"]) for m in lines] == [
        (p, s) for p in (False, True) for s in ("in-scope traffic.csv", "ood.csv", "python docs")]
    for m in lines:
        assert 0 <= m["accepted_share"] <= 1 and 0 <= m["flagged_ood_share"] <= 1  # type: ignore[operator]
    flagged = {(m["reference_profile"], m["set"]): m["flagged_ood_share"] for m in lines}
    accepted = {(m["reference_profile"], m["set"]): m["accepted_share"] for m in lines}
    # what docs/drift.md and docs/benchmarks.md quote for the demo's profile: out-of-scope
    # messages almost never decided automatically, in-scope ones rarely sent to a person
    assert accepted[(True, "ood.csv")] <= 0.01  # type: ignore[operator]
    assert accepted[(True, "python docs")] <= 0.01  # type: ignore[operator]
    assert flagged[(True, "in-scope traffic.csv")] <= 0.02  # type: ignore[operator]
    assert accepted[(True, "in-scope traffic.csv")] >= 0.75  # type: ignore[operator]
    # and without a profile, the same messages do get through: the profile is what stops them
    assert accepted[(False, "ood.csv")] > 0.03  # type: ignore[operator]
