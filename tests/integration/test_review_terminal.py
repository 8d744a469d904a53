"""`keel review` in a real pseudo-terminal: single keys accept / correct / reject / skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect
import pytest
from tests._workflows import write_csv, write_workflow

import keel
from keel.review import ReviewQueue
from keel.store import Store

# Each test drives the interactive reviewer in a pseudo-terminal for several seconds.
pytestmark = pytest.mark.slow

SRC = str(Path(__file__).resolve().parents[2] / "src")


def _spawn(db_url: str, cwd: Path) -> pexpect.spawn:
    env = {**os.environ, "PYTHONPATH": SRC, "TERM": "xterm", "COLUMNS": "160"}
    return pexpect.spawn(sys.executable, ["-m", "keel", "review", "--reviewer", "pat",
                                          "--db", db_url], cwd=str(cwd), env=env,
                         encoding="utf-8", timeout=60, dimensions=(50, 160))


def _seed(tmp_path: Path, db_url: str, n: int) -> None:
    rows = [(f"t{i}", f"unsure message {i}") for i in range(n)]
    keel.run(write_workflow(tmp_path), write_csv(tmp_path / "in.csv", rows), db=db_url)


def _decisions(db_url: str) -> dict[str, tuple[str, object]]:
    store = Store.open(db_url)
    try:
        done = ReviewQueue(store).list(status="decided")
    finally:
        store.close()
    return {t["key"]: (t["decision"], t["output"]) for t in done}


def test_accept_correct_reject_skip_in_a_terminal(tmp_path: Path, db_url: str) -> None:
    _seed(tmp_path, db_url, 4)
    child = _spawn(db_url, tmp_path)
    try:
        child.expect("reviewing as")
        # task 1: accept
        child.expect("why here")
        child.expect(r"> ")
        child.send("a")
        child.expect("accepted")
        # task 2: a wrong key is refused, then correct with a JSON object, as
        # `keel review decide --correct` takes it
        child.expect("why here")
        child.expect(r"> ")
        child.send("x")
        child.expect("unknown key")
        child.expect(r"> ")
        child.send("c")
        child.expect("a JSON object, or field by field")
        child.expect("label")
        child.sendline('{"label": "short"}')
        child.expect("corrected")
        # task 3: reject needs a reason
        child.expect("why here")
        child.expect(r"> ")
        child.send("r")
        child.expect("reason for rejecting")
        child.sendline("duplicate of another ticket")
        child.expect("rejected")
        # task 4: skip; the queue then has nothing else for this reviewer
        child.expect("why here")
        child.expect(r"> ")
        child.send("s")
        child.expect(r"decided 3, skipped 1; tasks remain open")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    outcomes = _decisions(db_url)
    assert sorted(d for d, _ in outcomes.values()) == ["accept", "correct", "reject"]
    by_decision = {d: o for d, o in outcomes.values()}
    assert by_decision["correct"] == {"label": "short"}
    assert by_decision["accept"] == {"label": "long"}
    (rec,) = [r for r in (keel.trace(k, db=db_url)[0] for k in outcomes)
              if r["decision"]["reason"].startswith("review: reject")]
    assert rec["events"][-1]["actor"] == "pat"
    assert "duplicate" in rec["decision"]["reason"]
    store = Store.open(db_url)
    try:
        (left,) = ReviewQueue(store).list()
    finally:
        store.close()
    assert left["claimed_by"] is None  # the skipped task went back to the queue


def test_quit_releases_the_task_and_an_empty_queue_says_so(tmp_path: Path, db_url: str) -> None:
    _seed(tmp_path, db_url, 1)
    child = _spawn(db_url, tmp_path)
    try:
        child.expect("why here")
        child.expect(r"> ")
        child.send("q")
        child.expect("decided 0, skipped 0; tasks remain open")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
    store = Store.open(db_url)
    try:
        (task,) = ReviewQueue(store).list()
        assert task["claimed_by"] is None
        ReviewQueue(store).decide(task["id"], "someone", "accept")
    finally:
        store.close()
    child = _spawn(db_url, tmp_path)
    try:
        child.expect("decided 0, skipped 0; the queue is empty")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 0
