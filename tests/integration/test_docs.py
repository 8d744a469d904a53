"""Docs run: every command and example in the README is executed here."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
INSTALL = 'pip install -e ".[dev]" -c constraints.txt'
TEST_CMD = "python -m pytest -n 2"
FAST_CMD = 'python -m pytest -m "not slow" -n 4'


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def commands() -> list[str]:
    out = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line:
                out.append(line)
    return out


def test_ci_runs_the_readme_install_and_test_commands() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    cmds = commands()
    assert INSTALL in cmds and TEST_CMD in cmds
    assert '"${PIP[@]}" -e ".[dev]" -c constraints.txt' in ci
    assert "\npython3 -m pytest -n 2\n" in ci
    assert f"`{FAST_CMD}`" in README


def _keel(line: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = shlex.split(line)
    assert args[0] == "keel", line
    return subprocess.run([sys.executable, "-m", "keel", *args[1:]], cwd=cwd, text=True,
                          capture_output=True, timeout=600)


@pytest.mark.slow
@pytest.mark.timeout(900)  # every README command in turn: the demo, the release story, a server
def test_readme_commands_run(tmp_path: Path, demo_env: Path) -> None:
    """Every keel command in the README, in order, in a fresh directory."""
    cwd = tmp_path / "user"
    cwd.mkdir()
    (cwd / "examples").symlink_to(ROOT / "examples")  # as in a clone of the repository
    (cwd / "workflow.py").write_text(blocks("python")[0])
    (cwd / "tickets.csv").write_text(
        "id,text\nt1,my card was stolen yesterday\nt2,\nt3,where is my new card\n")
    ran = 0
    for line in commands():
        if not line.startswith("keel "):
            continue
        res = _keel(line, cwd)
        # `keel gate` answers "not yet" with exit 3, as the README says next to it
        expected = (0, 3) if line.startswith("keel gate ") and "--history" not in line else (0,)
        assert res.returncode in expected, f"{line}\n{res.stdout}\n{res.stderr}"
        assert "Traceback" not in res.stderr
        ran += 1
        if line == "keel demo":
            assert "accuracy of automated decisions" in res.stdout
        if line.startswith("keel run"):
            assert (cwd / "decisions.jsonl").read_text().count("\n") == 3
        if line == "keel quarantine":
            assert "t2" in res.stdout and "text" in res.stdout
        if line.startswith("keel gate ") and res.returncode == 3:
            assert "not yet ready" in res.stdout
        if line.startswith("keel cost ") and "--project" in line:
            assert "total, USD/month" in res.stdout and "reviewers needed" in res.stdout
        if line.startswith("keel cost ") and "--thresholds" in line:
            assert "cheapest threshold that keeps accuracy" in res.stdout
    assert ran >= 6
