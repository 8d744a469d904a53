"""bench/intake.py still runs and reports what docs/benchmarks.md quotes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_intake_bench_runs_small(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "intake.py"), "--docs", "2",
                          "--repeats", "1"], capture_output=True, text=True, timeout=1200,
                         cwd=tmp_path, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = {m["measure"]: m for m in map(json.loads, out.stdout.splitlines())}
    assert set(lines) == {"intake_plain", "intake_keel", "intake_keel_share"}
    assert lines["intake_plain"]["tesseract_cpu_ms_per_doc"] > 0
    assert lines["intake_keel"]["tesseract_cpu_ms_per_doc"] > 0
    assert lines["intake_keel_share"]["keel_share_of_ocr"] is not None
