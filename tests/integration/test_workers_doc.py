"""docs/workers.md runs: its commands, in order, against a fresh PostgreSQL schema; three
workers where it says "or three here", one of them killed; every record decided once."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import text

import keel
from keel.store import Store, verify_trail
from keel.store import queue as q

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "workers.md").read_text()


def _lines() -> list[str]:
    (block,) = re.findall(r"```bash\n(.*?)```", DOC, flags=re.S)
    return [ln.split("   #", 1)[0].strip() for ln in block.splitlines() if ln.strip()]


def _depth(db: str) -> int:
    store = Store.open(db)
    try:
        d = q.depth(store, "support_triage")
        return int(d["pending"]) + int(d["leased"])
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.postgres
def test_the_workers_page_runs_as_written(pg_url: str, tmp_path: Path) -> None:
    lines = _lines()
    assert lines[0].startswith("export KEEL_DB=postgresql")
    env = {**os.environ, "KEEL_DB": pg_url, "PYTHONPATH": str(ROOT / "src")}
    workers: list[subprocess.Popen[str]] = []
    outs = []
    try:
        for line in lines[1:]:
            background = line.endswith("&")
            args = shlex.split(line.rstrip("&").strip())
            assert args[0] == "keel", line
            cmd = [sys.executable, "-m", "keel", *args[1:]]
            if background:  # three workers here, as the page suggests
                for n in range(3):
                    out = (tmp_path / f"worker-{n}.log").open("w")
                    outs.append(out)
                    workers.append(subprocess.Popen(cmd, cwd=ROOT, env=env, text=True,
                                                    stdout=out, stderr=subprocess.STDOUT))
                time.sleep(8)  # they start and claim; then one machine is lost
                workers[0].send_signal(signal.SIGKILL)
                end = time.monotonic() + 300
                while _depth(pg_url) and time.monotonic() < end:
                    time.sleep(0.5)
                assert _depth(pg_url) == 0, "the queue did not drain"
                continue
            res = subprocess.run(cmd, cwd=ROOT, env=env, text=True, capture_output=True,
                                 timeout=600)
            assert res.returncode == 0, (line, res.stdout[-2000:], res.stderr[-2000:])
            assert "Traceback" not in res.stderr
            if args[1] == "workers":
                assert "support_triage: 0 pending, 0 leased" in res.stdout, res.stdout
            if args[1] == "status":
                assert "accepted" in res.stdout
    finally:
        for w in workers[1:]:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=120)
        for out in outs:
            out.close()
    rows = len((ROOT / "examples/support_triage/data/traffic.csv").read_text().splitlines()) - 1
    store = Store.open(pg_url)
    try:
        with store.engine.connect() as conn:
            records, decisions, undecided = conn.execute(text(
                "select (select count(*) from records), (select count(*) from decisions), "
                "(select count(*) from records r where not exists "
                "(select 1 from decisions d where d.record_id = r.id))")).one()
        st = keel.status(store=store)[0]
        assert verify_trail(store=store).ok
    finally:
        store.close()
    assert (records, decisions, undecided) == (st["records"], st["records"], 0)
    assert records <= rows and sum(st["dispositions"].values()) == records
    assert workers[0].returncode == -signal.SIGKILL
