"""docs/observability.md runs: its workflow, every command in order, then its Python."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from tests._cli import keel_cli

DOC = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
EMAIL = "jo.baker@example.com"


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def test_observability_guide_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    workflow, program = _blocks("python")
    (tmp_path / "workflow.py").write_text(workflow)
    (tmp_path / "tickets.csv").write_text(
        "id,name,text\n"
        f"t1,Jo Baker,my card has not arrived; write to {EMAIL}\n"
        "t2,Sam Li,refund my fee\n"
        "t3,Ann Wu,refund please\n"
        "t4,Lee Ho,refund now\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    outputs = {}
    for block in _blocks("bash"):
        for line in filter(None, (x.strip() for x in block.splitlines())):
            assert line.startswith("keel "), line
            done = keel_cli(capsys, *shlex.split(line))
            assert done.returncode == 0, f"{line}\n{done.stdout}\n{done.stderr}"
            outputs[line] = done
    run = next(v for k, v in outputs.items() if k.startswith("keel run"))
    assert '"name": "keel.record"' in run.stderr  # console spans
    assert '"event":"batch decided"' in run.stderr  # JSON logs
    assert "keel_records_total" in (tmp_path / "keel.prom").read_text()
    assert "FIRING triage: fallback_rate_above_0.3" in outputs["keel alerts check"].stdout
    assert "fallback_rate_above_0.3" in outputs["keel alerts list"].stdout
    assert "audit trail intact" in outputs["keel audit verify"].stdout
    for line in ("keel trace t1", "keel trace t1 --raw"):  # storage="redacted": never stored
        assert EMAIL not in outputs[line].stdout and "Jo Baker" not in outputs[line].stdout
    assert EMAIL not in (tmp_path / "events.jsonl").read_text()
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    py = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, env=env,
                        capture_output=True, text=True, timeout=300)
    assert py.returncode == 0, py.stderr
    assert "keel_review_backlog" in py.stdout
    assert py.stdout.splitlines()[-2:] == ["1 alerts firing", "True"]
