"""Prometheus metrics: the pipeline's counters and the store's gauges, scraped, written, pushed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from tests._cli import keel_cli
from tests._collectors import recording_server
from tests._workflows import WORKFLOW_FILE, conf_of, make, write_csv, write_workflow

import keel
from keel.review import ReviewQueue
from keel.store import Store
from keel.telemetry import Telemetry, metrics_text, register_drift_source
from keel.telemetry import _metrics as tm


def _samples(body: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    data = body.decode() if isinstance(body, bytes) else body
    out = {}
    for fam in text_string_to_metric_families(data):
        for s in fam.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def _get(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
         **labels: str) -> float:
    return samples[name, tuple(sorted(labels.items()))]


def test_decisions_errors_tokens_and_cost_are_counted(tmp_path: Path, store: Store) -> None:
    flaky = keel.FakeModel({"label": "x"}, confidence=conf_of, error_rate=0.3, cost_usd=0.001,
                           seed=3)
    wf = make(flaky, fallback=lambda m: {"label": "rules"})
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", "unsure" if i % 5 == 0 else f"m {i}")
                                          for i in range(60)] + [("e1", "")])
    telemetry = Telemetry()
    s = keel.run(wf, src, store=store, telemetry=telemetry, batch_size=16)
    m = _samples(metrics_text(store, telemetry))
    assert _get(m, "keel_records_total", workflow="tickets", disposition="quarantined",
                reason="string_too_short") == 1
    decided = sum(v for (name, _), v in m.items() if name == "keel_records_total")
    assert decided == s.decided == 61
    mv = flaky.version
    errors = _get(m, "keel_model_errors_total", workflow="tickets", model_version=mv,
                  error="keel.model.unavailable")
    ok = _get(m, "keel_model_calls_total", workflow="tickets", model_version=mv, outcome="ok")
    assert errors == _get(m, "keel_model_calls_total", workflow="tickets", model_version=mv,
                          outcome="error") > 0
    assert _get(m, "keel_model_retries_total", workflow="tickets", model_version=mv) > 0
    assert _get(m, "keel_model_tokens_total", workflow="tickets", model_version=mv,
                direction="input") == 10 * ok
    assert abs(_get(m, "keel_cost_usd_total", workflow="tickets", model_version=mv) - s.cost_usd) < 1e-9
    for stage in ("admit", "validate"):  # once per batch of 16 read
        assert _get(m, "keel_stage_duration_seconds_count", workflow="tickets", stage=stage) == 4
    # once per model round: the 4 batches, plus a round of its own for what still waits for a
    # retry when the file ends (a retry rides with the batch after next)
    for stage in ("predict", "route", "store.outcomes"):
        assert _get(m, "keel_stage_duration_seconds_count", workflow="tickets", stage=stage) in (4, 5)
    assert _get(m, "keel_review_backlog", workflow="tickets", reason="low_confidence") == \
        s.review_reasons["low_confidence"]


def test_store_gauges_show_backlog_age_accuracy_breakers_and_drift(tmp_path: Path, store: Store) -> None:
    wf = make(policy=keel.Policy(threshold=0.8, audit_rate=1.0))
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(10)])
    keel.run(wf, src, store=store)
    queue = ReviewQueue(store)
    audits = queue.list(reason="audit_sample")
    for n, task in enumerate(audits[:5]):  # five audits decided by a person: four confirmed
        queue.claim(task["id"], "rita")
        if n:
            queue.decide(task["id"], "rita", "accept")
        else:
            queue.decide(task["id"], "rita", "correct", output={"label": "other"})
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(text("update review_tasks set created_at=:c where status='open'"),
                     {"c": now - 7200})
        conn.execute(text("insert into breakers (workflow, model_version, state, failures, "
                          "updated_at) values ('tickets', 'fake-abc', 'open', 5, :t)"), {"t": now})

    def drift(_store: Store, workflow: str) -> dict[str, float]:
        return {"text_length": 0.31} if workflow == "tickets" else {}

    register_drift_source(drift)
    try:
        m = _samples(metrics_text(store))
    finally:
        tm._DRIFT_SOURCES.remove(drift)
    assert _get(m, "keel_realized_accuracy", workflow="tickets") == 0.8
    assert _get(m, "keel_audits_decided", workflow="tickets") == 5
    assert _get(m, "keel_review_backlog", workflow="tickets", reason="audit_sample") == 5
    assert 7100 < _get(m, "keel_review_oldest_task_age_seconds", workflow="tickets") < 7400
    assert _get(m, "keel_breaker_state", workflow="tickets", model_version="fake-abc",
                state="open") == 1
    assert _get(m, "keel_drift_score", workflow="tickets", feature="text_length") == 0.31
    assert _get(m, "keel_decisions_stored", workflow="tickets", disposition="accepted") == 10


def test_batch_run_writes_a_textfile_and_pushes_to_a_gateway(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf = write_workflow(tmp_path, WORKFLOW_FILE)
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", "boom" if i == 1 else f"message {i}")
                                          for i in range(12)])
    prom = tmp_path / "keel.prom"
    with recording_server() as gateway:
        done = keel_cli(capsys, "run", str(wf), str(src), "--db", db_url, "--json",
                        "--metrics-file", str(prom), "--pushgateway", gateway.url)
        pushed = list(gateway.requests)
    assert done.returncode == 2, done.stderr  # one record failed
    m = _samples(prom.read_text())
    assert _get(m, "keel_records_total", workflow="tickets", disposition="accepted",
                reason="confident") == 11
    assert _get(m, "keel_records_total", workflow="tickets", disposition="failed",
                reason="keel.model.unavailable") == 1
    assert len(pushed) == 1 and pushed[0].method == "PUT"
    assert pushed[0].path == "/metrics/job/keel"
    assert b"keel_records_total" in pushed[0].body


def test_a_gateway_that_is_down_costs_only_a_warning(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    wf = write_workflow(tmp_path, WORKFLOW_FILE)
    src = write_csv(tmp_path / "in.csv", [("k1", "message one")])
    with recording_server() as gateway:
        url = gateway.url
    done = keel_cli(capsys, "run", str(wf), str(src), "--json", "--log-format", "json",
                    "--pushgateway", url)
    assert done.returncode == 0, done.stderr
    assert '"event":"metrics push failed"' in done.stderr
