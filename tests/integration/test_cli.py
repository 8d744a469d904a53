"""The CLI as a user types it: exit codes, JSON output, --out files, clear errors."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests._workflows import write_csv, write_workflow

from keel.cli import main


def keel_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def wf(tmp_path: Path) -> Path:
    return write_workflow(tmp_path)


def test_run_json_summary_and_out_file(tmp_path: Path, wf: Path, db_url: str,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "a long message"), ("b", "unsure one"), ("c", "")])
    code = main(["run", str(wf), str(src), "--db", db_url, "--out", "out.jsonl", "--json"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["read"] == 3
    assert summary["dispositions"]["accepted"] == 1
    assert summary["dispositions"]["in_review"] == 1
    assert summary["dispositions"]["quarantined"] == 1
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert sorted(x["key"] for x in lines) == ["a", "b", "c"]
    assert {x["key"]: x["disposition"] for x in lines}["a"] == "accepted"
    # a second run decides nothing and writes no duplicate line
    assert main(["run", str(wf), str(src), "--db", db_url, "--out", "out.jsonl", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["already_decided"] == 3
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3


def test_out_csv_has_output_columns(tmp_path: Path, wf: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "a long message")])
    assert main(["run", str(wf), str(src), "--out", "out.csv"]) == 0
    text = (tmp_path / "out.csv").read_text().splitlines()
    assert text[0].split(",") == ["key", "record_id", "disposition", "reason", "confidence",
                                  "model_version", "output.label"]
    assert text[1].startswith("a,") and text[1].endswith(",long")


def test_failed_records_exit_2_then_replay(tmp_path: Path, wf: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "boom goes the model"), ("b", "fine message")])
    assert main(["run", str(wf), str(src), "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["dispositions"]["failed"] == 1
    wf.write_text(wf.read_text().replace('if "boom" in msg.text', 'if False'))
    assert main(["replay", "--failed", "--json"]) == 0  # the file the store last ran
    assert json.loads(capsys.readouterr().out)["dispositions"]["accepted"] == 1
    assert main(["status", "--json"]) == 0
    (st,) = json.loads(capsys.readouterr().out)
    assert st["dispositions"]["failed"] == 0 and st["dispositions"]["accepted"] == 2


def test_status_trace_quarantine(tmp_path: Path, wf: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "a long message"), ("b", "")])
    main(["run", str(wf), str(src)])
    capsys.readouterr()
    assert main(["trace", "a", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert [e["kind"] for e in rec["events"]] == ["received", "validated", "predicted", "routed"]
    assert main(["quarantine", "--json"]) == 0
    (q,) = json.loads(capsys.readouterr().out)
    assert q["key"] == "b" and q["violations"][0]["field"] == "text"
    assert main(["trace", "a"]) == 0
    text = capsys.readouterr().out
    assert "routed" in text and "confidence=0.950" in text
    assert not re.search(r"\d\.\d{4,}", text), "numbers print with sensible precision"
    assert main(["trace", "nope"]) == 1
    assert "no record with key 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(("setup", "expected"), [
    ("missing_input", "does not exist"),
    ("syntax_error", "syntax error"),
    ("no_workflow", "declares no keel.Workflow"),
    ("bad_extension", "unknown input format"),
])
def test_user_mistakes_exit_1_without_traceback(tmp_path: Path, setup: str, expected: str) -> None:
    wf = write_workflow(tmp_path)
    src = write_csv(tmp_path / "in.csv", [("a", "text")])
    if setup == "missing_input":
        src = tmp_path / "missing.csv"
    elif setup == "syntax_error":
        wf.write_text("import keel\nworkflow = keel.Workflow(\n")
    elif setup == "no_workflow":
        wf.write_text("import keel\nx = 1\n")
    else:
        src = tmp_path / "in.xlsx"
        src.write_text("x")
    res = keel_cli("run", str(wf), str(src), cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert expected in res.stderr
    assert "Traceback" not in res.stderr + res.stdout


def test_one_latency_and_one_audited_accuracy_everywhere(tmp_path: Path, wf: Path, db_url: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """The run summary, `keel status` and the dashboard report the same latency (per record,
    admission to decision) and the same audited accuracy."""
    from fastapi.testclient import TestClient
    from tests.server._live import app_for, bearer, keys

    from keel.review import ReviewQueue
    from keel.store import Store

    wf.write_text(wf.read_text().replace("audit_rate=0.0", "audit_rate=1.0"))
    rows = [(f"k{i}", "a long message" if i % 3 else "unsure one") for i in range(60)]
    src = write_csv(tmp_path / "in.csv", rows)
    assert main(["run", str(wf), str(src), "--db", db_url, "--json"]) == 0
    ran = json.loads(capsys.readouterr().out)["latency_ms"]
    assert main(["status", "--db", db_url, "--json"]) == 0
    (st,) = json.loads(capsys.readouterr().out)
    assert st["latency_ms"]["p50"] == pytest.approx(ran["p50"])
    assert st["latency_ms"]["p95"] == pytest.approx(ran["p95"])
    store = Store.open(db_url)
    try:
        q = ReviewQueue(store)
        for n, task in enumerate(q.list(reason="audit_sample", limit=3)):
            decision = ("accept", "correct", "reject")[n]
            q.decide(task["id"], "alice", decision,
                     output={"label": "short"} if decision == "correct" else None,
                     reason="spam" if decision == "reject" else None)
        k = keys(store)
        with TestClient(app_for(store, workflow=None)) as client:
            dash = client.get("/v1/dashboard", headers=bearer(k["reviewer"])).json()
        assert dash["latency_ms"]["p50"] == pytest.approx(ran["p50"])
    finally:
        store.close()
    assert main(["status", "--db", db_url, "--json"]) == 0
    (st,) = json.loads(capsys.readouterr().out)
    real = st["realized_accuracy"]
    assert real["audited"] == 3 and real["correct"] == 1 and real["rejected"] == 1
    assert dash["accuracy"]["audited"]["accuracy"] == real["accuracy"]
    assert dash["accuracy"]["audited"]["n"] == real["audited"]
    assert dash["accuracy"]["audited"]["ci95"] == real["ci95"]
