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


def _commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    return [
        line.strip()
        for block in blocks
        for line in block.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


@pytest.mark.slow
def test_docs_drift_commands_run(tmp_path: Path, demo_env: Path) -> None:
    (tmp_path / "examples").symlink_to(EXAMPLE.parent, target_is_directory=True)
    env = {
        **os.environ,
        "KEEL_DB": f"sqlite:///{tmp_path / 'keel.db'}",
        "KEEL_EMBEDDER": "tfidf",
    }  # the doc's default picks MiniLM when installed: slower
    commands = _commands()
    assert len(commands) == 3
    for cmd in commands:
        args = cmd.split()
        assert args[0] == "keel"
        res = subprocess.run(
            [sys.executable, "-m", "keel", *args[1:]],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert res.returncode == 0, f"{cmd}\n{res.stdout}\n{res.stderr}"
    html = (tmp_path / "drift.html").read_text(encoding="utf-8")
    assert "Drift:" in html and "out-of-distribution" in html
