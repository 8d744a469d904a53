"""Every command in docs/drift.md runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import EXAMPLE

DOC = EXAMPLE.parents[1] / "docs" / "drift.md"


def _commands(block: int) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 2
    return [
        line.strip()
        for line in blocks[block].splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def _run(cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    args = cmd.split()
    assert args[0] == "keel"
    return subprocess.run(
        [sys.executable, "-m", "keel", *args[1:]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_docs_drift_commands_run(tmp_path: Path, demo_env: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLE.parent, target_is_directory=True)
    env = {
        **os.environ,
        "KEEL_DB": f"sqlite:///{tmp_path / 'keel.db'}",
        "KEEL_EMBEDDER": "wordllama",
    }  # the default install's; `auto` picks MiniLM where the extra is installed: slower
    commands = _commands(0)
    assert len(commands) == 3
    for cmd in commands:
        res = _run(cmd, tmp_path, env)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    html = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "Drift:" in html and "out-of-distribution" in html


@pytest.mark.slow
def test_docs_watch_commands_run(tmp_path: Path) -> None:
    """The monitor-only example: a Watch profiles a log, a minor shift does not fail the run,
    questions no bank gets are drift."""
    (tmp_path / "examples").symlink_to(EXAMPLE.parent, target_is_directory=True)
    env = {**os.environ, "KEEL_DB": f"sqlite:///{tmp_path / 'keel.db'}", "KEEL_EMBEDDER": "tfidf"}
    commands = _commands(1)
    assert len(commands) == 3 and all("watch_banking/watch.py" in c for c in commands)
    outs = []
    for cmd in commands:
        res = _run(cmd, tmp_path, env)
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
        outs.append(res.stdout)
    assert "no drift" in outs[1] and "minor" in outs[1]
    assert "DRIFT" in outs[2]
    html = (tmp_path / "watch.html").read_text(encoding="utf-8")
    alerts = html.split("<h2>Alerts</h2>", 1)[1].split("<h2>", 1)[0]
    for alert in ("ood_rate", "input.topic", "output.category"):
        assert alert in alerts
