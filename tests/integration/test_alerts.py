"""Alerts: injected faults fire an alert once, recovery resolves it; brief blips page nobody."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest
from tests._cli import Result, keel_cli
from tests._collectors import recording_server
from tests._workflows import make, write_csv

import keel
from keel.monitor import _alerts as alerts
from keel.monitor._alerts import LogChannel, WebhookChannel
from keel.store import Store
from keel.workflow import DEFAULT_RULES, AlertRule

RULE = AlertRule("error_rate", above=0.2, clear=0.1, window_s=3600, min_count=20)


def _rows(prefix: str, n: int) -> list[tuple[str, str]]:
    return [(f"{prefix}{i}", f"message {i}") for i in range(n)]


def _faulty(tmp_path: Path, store: Store, n: int = 40) -> None:
    wf = make(keel.FakeModel(error_rate=0.5, seed=1), fallback=lambda m: {"label": "rules"},
              alerts=[RULE])
    keel.run(wf, write_csv(tmp_path / "bad.csv", _rows("bad", n)), store=store,
             retry=keel.RetryPolicy(base_delay_s=0.0))


def _healthy(tmp_path: Path, store: Store, n: int) -> keel.Workflow:
    """The fix deployed: a new model version (the faulty one's breaker may still be open)."""
    wf = make(keel.FakeModel(name="fixed"), alerts=[RULE])
    keel.run(wf, write_csv(tmp_path / f"good{n}.csv", _rows(f"good{n}-", n)), store=store)
    return wf


def test_injected_faults_fire_once_then_recovery_resolves(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    with recording_server() as hook:
        channels = [LogChannel(), WebhookChannel(hook.url)]
        first = alerts.evaluate(store, "tickets", channels=channels)
        (status,) = first.statuses
        assert status.state == "firing" and status.value is not None and status.value > 0.2
        again = alerts.evaluate(store, "tickets", channels=channels)
        assert again.statuses[0].state == "firing" and again.notifications == []  # deduplicated
        wf = _healthy(tmp_path, store, 600)
        resolved = alerts.evaluate(store, wf, channels=channels)
        sent = [json.loads(r.body) for r in hook.requests]
    assert resolved.statuses[0].state == "resolved"
    assert resolved.statuses[0].value is not None and resolved.statuses[0].value <= 0.1
    assert [m["text"].split()[1] for m in sent] == ["FIRING", "RESOLVED"]
    assert sent[0]["text"].startswith("[keel] FIRING tickets: error_rate_above_0.2")
    assert sent[0]["keel"]["state"] == "firing" and sent[1]["keel"]["state"] == "resolved"
    (row,) = alerts.history(store, "tickets")
    assert row["state"] == "resolved" and row["resolved_at"] >= row["fired_at"]
    assert alerts.evaluate(store, wf, channels=channels).statuses[0].state == "ok"


def test_hysteresis_keeps_firing_until_the_clear_level(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    assert alerts.evaluate(store, "tickets", rules=[RULE]).statuses[0].state == "firing"
    _healthy(tmp_path, store, 250)  # the rate falls under the threshold but not under clear
    result = alerts.evaluate(store, "tickets", rules=[RULE])
    (status,) = result.statuses
    assert status.value is not None and 0.1 < status.value < 0.2
    assert status.state == "firing" and result.notifications == []


def test_a_breach_must_last_for_s_before_it_fires(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    rule = AlertRule("error_rate", above=0.2, window_s=3600, for_s=60, min_count=20)
    t0 = time.time()
    first = alerts.evaluate(store, "tickets", rules=[rule], now=t0)
    assert first.statuses[0].state == "pending" and first.notifications == []
    assert alerts.evaluate(store, "tickets", rules=[rule], now=t0 + 30).statuses[0].state == "pending"
    fired = alerts.evaluate(store, "tickets", rules=[rule], now=t0 + 61)
    assert fired.statuses[0].state == "firing" and len(fired.notifications) == 1
    assert [r["state"] for r in alerts.history(store)] == ["firing"]


def test_a_breach_that_does_not_last_leaves_no_history(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    rule = AlertRule("error_rate", above=0.2, clear=0.1, window_s=3600, for_s=300, min_count=20)
    t0 = time.time()
    assert alerts.evaluate(store, "tickets", rules=[rule], now=t0).statuses[0].state == "pending"
    _healthy(tmp_path, store, 600)
    later = alerts.evaluate(store, "tickets", rules=[rule], now=time.time())
    assert later.statuses[0].state == "ok" and later.notifications == []
    assert alerts.history(store) == []


def test_a_handful_of_failures_is_not_enough_data(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store, n=3)
    (status,) = alerts.evaluate(store, "tickets", rules=[RULE]).statuses
    assert status.state == "insufficient_data" and status.count < 20


def test_a_webhook_that_is_down_is_retried_at_the_next_evaluation(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    with recording_server() as hook:
        hook.status = 503
        alerts.evaluate(store, "tickets", rules=[RULE], channels=[WebhookChannel(hook.url)])
        (row,) = alerts.history(store)
        assert row["detail"]["undelivered"] == ["webhook"]
        hook.status = 200
        alerts.evaluate(store, "tickets", rules=[RULE], channels=[WebhookChannel(hook.url)])
        texts = [json.loads(r.body)["text"] for r in hook.requests]
    assert len(texts) == 2 and all("FIRING" in t for t in texts)
    assert alerts.history(store)[0]["detail"]["undelivered"] == []


def test_rules_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="unknown alert signal"):
        AlertRule("errors", above=1)
    with pytest.raises(ValueError, match="exactly one of above= or below="):
        AlertRule("error_rate")
    with pytest.raises(ValueError, match="healthy side"):
        AlertRule("realized_accuracy", below=0.9, clear=0.8)
    rule = AlertRule("realized_accuracy", below=0.9)
    assert rule.clear is not None and rule.clear > 0.9
    assert AlertRule.from_dict(rule.as_dict()) == rule
    assert make().spec()["alerts"] is None  # None: the defaults apply
    assert alerts.rules_for(make()) == list(DEFAULT_RULES)


WORKFLOW = textwrap.dedent('''
    from pydantic import BaseModel
    import keel

    class Msg(BaseModel):
        id: str
        text: str

    class Label(BaseModel):
        label: str

    def answer(msg):
        if "boom" in msg.text:
            raise keel.NonRetryableModelError("upstream said 400")
        return {"label": "ok"}, 0.95

    workflow = keel.Workflow(
        name="flaky", input=Msg, output=Label, key="id", model=keel.FunctionModel(answer),
        alerts=[keel.AlertRule("failure_rate", above=0.25, min_count=5)],
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
    )
''')


def test_cli_check_uses_the_rules_the_workflow_declared(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW)
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", "boom" if i % 2 else "fine") for i in range(10)])
    monkeypatch.setenv("COLUMNS", "200")

    def cli(*args: str) -> Result:
        return keel_cli(capsys, *args, "--db", db_url)

    assert cli("run", str(wf), str(src)).returncode == 2
    with recording_server() as hook:
        checked = cli("alerts", "check", "--json", "--webhook", hook.url)
        posted = [json.loads(r.body) for r in hook.requests]
    assert checked.returncode == 0, checked.stderr
    (status,) = json.loads(checked.stdout)["statuses"]  # only the declared rule, from the store
    assert (status["rule"], status["state"], status["value"]) == ("failure_rate_above_0.25", "firing", 0.5)
    assert len(posted) == 1 and "FIRING flaky" in posted[0]["text"]
    assert '"event":"alert firing"' in checked.stderr  # the log channel
    listed = cli("alerts", "list", "--json")
    (row,) = json.loads(listed.stdout)
    assert row["rule"] == "failure_rate_above_0.25" and row["state"] == "firing"
    table = cli("alerts", "list")
    assert "failure_rate_above_0.25" in table.stdout


def test_the_scheduler_evaluates_until_stopped(tmp_path: Path, store: Store) -> None:
    _faulty(tmp_path, store)
    with recording_server() as hook:
        sched = alerts.AlertScheduler(store, make(alerts=[RULE]), channels=[WebhookChannel(hook.url)],
                                      interval_s=0.05).start()
        deadline = time.monotonic() + 20
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        sched.stop()
        sent = len(hook.requests)
    assert sent == 1  # fired once, then deduplicated on every later tick
    assert sched.last is not None and sched.last.statuses[0].state == "firing"


def test_realized_accuracy_below_target_fires_from_real_audits(tmp_path: Path, store: Store) -> None:
    from keel.review import ReviewQueue

    wf = make(policy=keel.Policy(threshold=0.8, audit_rate=1.0))
    keel.run(wf, write_csv(tmp_path / "in.csv", _rows("a", 24)), store=store)
    queue = ReviewQueue(store)
    for n, task in enumerate(queue.list(reason="audit_sample")[:20]):
        queue.claim(task["id"], "rita")
        if n % 4:
            queue.decide(task["id"], "rita", "accept")
        else:
            queue.decide(task["id"], "rita", "correct", output={"label": "other"})
    (status,) = alerts.evaluate(store, "tickets", rules=[
        AlertRule("realized_accuracy", below=0.9, window_s=86400)]).statuses
    assert (status.state, status.value, status.count) == ("firing", 0.75, 20)


def test_a_drift_report_feeds_gauges_and_the_drift_alert(tmp_path: Path, store: Store) -> None:
    from keel.monitor import build_reference, drift_report
    from keel.telemetry import _metrics as tm
    from keel.telemetry import metrics_text, record_drift

    wf = make()
    steady = [(f"k{i}", f"message number {i % 37} about the weather") for i in range(300)]
    keel.run(wf, write_csv(tmp_path / "ref.csv", steady), store=store)
    build_reference(wf, store=store, window="all", embedder="tfidf", seed=0)
    moved = [(f"m{i}", "ok" if i % 5 else f"payment {i} failed twice, card blocked")
             for i in range(300)]
    moved_run = keel.run(wf, write_csv(tmp_path / "moved.csv", moved), store=store)
    rule = AlertRule("drift_score", above=0.0, min_count=1)
    try:
        report = drift_report(store, wf, f"run:{moved_run.run_id}")
        assert report.drifted
        record_drift(report)
        body = metrics_text(store).decode()
        assert 'keel_drift_score{feature="output.label/' in body
        (status,) = alerts.evaluate(store, "tickets", rules=[rule]).statuses
        assert status.state == "firing" and status.value is not None and status.value > 0
        again = [(f"s{i}", f"message number {i % 37} about the weather") for i in range(300)]
        calm_run = keel.run(wf, write_csv(tmp_path / "again.csv", again), store=store)
        calm = drift_report(store, wf, f"run:{calm_run.run_id}")
        assert not calm.drifted
        record_drift(calm)
        (after,) = alerts.evaluate(store, "tickets", rules=[rule]).statuses
        assert after.state == "resolved" and after.value == 0.0
    finally:
        tm._LATEST.pop("tickets", None)
