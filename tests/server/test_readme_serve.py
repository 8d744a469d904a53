"""Docs run: the README's serve section, executed as written (on a free port)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from tests.server._live import free_port

ROOT = Path(__file__).resolve().parents[2]


def serve_block() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Serve decisions", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```shell\n(.*?)```", section, flags=re.S)
    return str(block)


@pytest.mark.slow
def test_readme_serve_section_runs(tmp_path: Path, demo_env: Path) -> None:
    port = free_port()
    script = serve_block().replace("8000", str(port))
    script = script.replace("examples/support_triage", str(demo_env))
    script += '\necho "SUBMITTER=$SUBMITTER_KEY"\n'
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out_file, err_file = tmp_path / "out.txt", tmp_path / "err.txt"
    with out_file.open("w") as out_fh, err_file.open("w") as err_fh:
        # files, not pipes: the server left running in the background keeps them open
        proc = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path,
                                env=env, stdout=out_fh, stderr=err_fh, start_new_session=True)
    try:
        proc.wait(timeout=600)
        out = out_file.read_text()
        assert proc.returncode == 0, err_file.read_text()
        decision = re.search(r'\{"already_decided".*\}', out)
        assert decision, out
        assert '"key":"web-1"' in decision.group(0)
        reviewer = re.findall(r"^(keel_\S+)$", out, flags=re.M)[0]
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, follow_redirects=True) as browser:
            csrf = re.search(r'name="csrf" value="([^"]+)"', browser.get("/login").text)
            assert csrf
            inbox = browser.post("/login", data={"key": reviewer, "csrf": csrf.group(1)})
            assert inbox.status_code == 200 and "Review inbox" in inbox.text
            waiting = re.search(r"(\d+) waiting", inbox.text)
            assert waiting and int(waiting.group(1)) > 100  # the demo's review queue
            assert browser.get("/ui/dashboard").status_code == 200
            assert browser.get("/v1/dashboard").json()["window_decided"] >= 1580
            money = browser.get("/v1/cost/outlook").json()      # the dashboard's Money panel
            assert money["volume"] == "50000/day"               # the demo's target volume
            assert money["projection"]["total_usd_per_month"]["estimate"] > 0
            assert money["projection"]["reviewers_needed"]["estimate"] >= 1
            assert money["value"]["net_usd_per_day"] is not None
    finally:
        _stop_group(proc)


def _stop_group(proc: subprocess.Popen[bytes]) -> None:
    """Stop the server the script left in the background (its process group), and wait."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    try:
        os.killpg(proc.pid, signal.SIGINT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
