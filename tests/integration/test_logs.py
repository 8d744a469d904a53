"""Structured logs: one JSON object per line (or a readable line), per batch and per record."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests._cli import keel_cli
from tests._workflows import WORKFLOW_FILE, make, write_csv, write_workflow

import keel
from keel.store import Store
from keel.telemetry import Telemetry, configure_logging


@pytest.fixture
def log_to() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    yield buf
    logger = logging.getLogger("keel")
    for h in list(logger.handlers):
        logger.removeHandler(h)
        h.close()
    logger.setLevel(logging.NOTSET)
    logger.propagate = True


def test_json_logs_carry_workflow_record_stage_model_disposition_latency(
        tmp_path: Path, store: Store, log_to: io.StringIO) -> None:
    configure_logging("json", "debug", stream=log_to)
    model = keel.FakeModel({"label": "x"}, confidence=lambda m: 0.3 if "unsure" in m.text else 0.95)
    src = write_csv(tmp_path / "in.csv", [("k1", "fine message"), ("k2", "unsure one"), ("k3", "")])
    keel.run(make(model), src, store=store, telemetry=Telemetry(metrics=False))
    lines = [json.loads(line) for line in log_to.getvalue().splitlines()]
    (batch,) = [x for x in lines if x["event"] == "batch decided"]
    assert batch["level"] == "info" and batch["workflow"] == "tickets" and batch["records"] == 3
    assert batch["dispositions"] == {"accepted": 1, "in_review": 1, "quarantined": 1}
    assert set(batch["stage_ms"]) >= {"validate", "predict", "route", "store.outcomes"}
    per_record = {x["key"]: x for x in lines if x["event"] == "record decided"}
    assert per_record["k1"]["disposition"] == "accepted"
    assert per_record["k1"]["stage"] == "route"
    assert per_record["k1"]["model_version"] == model.version
    assert per_record["k1"]["latency_ms"] > 0 and per_record["k1"]["record_id"]
    assert per_record["k2"]["reason"] == "low_confidence"
    assert per_record["k3"]["stage"] == "validate"
    assert per_record["k3"]["disposition"] == "quarantined"


def test_info_level_writes_one_line_per_batch_not_per_record(
        tmp_path: Path, store: Store, log_to: io.StringIO) -> None:
    configure_logging("json", "info", stream=log_to)
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(50)])
    keel.run(make(), src, store=store, batch_size=10, telemetry=Telemetry(metrics=False))
    events = [json.loads(line)["event"] for line in log_to.getvalue().splitlines()]
    assert events == ["batch decided"] * 5


def test_human_format_is_one_readable_line(tmp_path: Path, store: Store, log_to: io.StringIO) -> None:
    configure_logging("human", "info", stream=log_to)
    src = write_csv(tmp_path / "in.csv", [("k1", "message one")])
    keel.run(make(), src, store=store, telemetry=Telemetry(metrics=False))
    (line,) = log_to.getvalue().splitlines()
    assert " INFO    batch decided workflow=tickets " in line
    assert "dispositions=accepted:1" in line
    assert not line.lstrip().startswith("{")


def test_keel_run_logs_json_on_stderr_when_not_a_terminal(tmp_path: Path) -> None:
    wf = write_workflow(tmp_path, WORKFLOW_FILE)
    src = write_csv(tmp_path / "in.csv", [("k1", "message one"), ("k2", "boom")])
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_LOG")}
    done = subprocess.run([sys.executable, "-m", "keel", "run", str(wf), str(src), "--json"],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert json.loads(done.stdout)["read"] == 2  # stdout stays the summary alone
    logged = [json.loads(line) for line in done.stderr.splitlines()]
    assert [x["event"] for x in logged] == ["batch decided", "run finished"]
    assert logged[1]["dispositions"]["failed"] == 1


def test_a_bad_log_level_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write_workflow(tmp_path, WORKFLOW_FILE)
    src = write_csv(tmp_path / "in.csv", [("k1", "message one")])
    done = keel_cli(capsys, "run", str(wf), str(src), "--log-level", "chatty")
    assert done.returncode == 1
    assert "--log-level 'chatty'" in done.stderr and "Traceback" not in done.stderr
