"""examples/llm_triage on its simulated LLM (no logprobs, an LLM's error pattern): the same
contracts, fallback to the rules, review and calibration as any workflow; self-consistency
automates a share at the guaranteed accuracy where a confidence of 0 automates nothing."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from tests._workflows import write_csv
from tests.conftest import counts_balance

import keel
from keel.errors import CalibrationError
from keel.review import calibrate
from keel.store import realized_accuracy

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "llm_triage"


def _rows(name: str) -> list[dict[str, str]]:
    with (EXAMPLE / "data" / name).open(newline="") as fh:
        return list(csv.DictReader(fh))


def _workflow(monkeypatch: pytest.MonkeyPatch, base_url: str | None = None,
              confidence: Any = None) -> keel.Workflow:
    if base_url:
        monkeypatch.setenv("KEEL_LLM_BASE_URL", base_url)
    else:
        monkeypatch.delenv("KEEL_LLM_BASE_URL", raising=False)
    monkeypatch.delenv("KEEL_LLM_MODEL", raising=False)
    wf = keel.load_workflow(EXAMPLE / "workflow.py")
    if confidence is None:
        return wf
    m = wf.model
    assert isinstance(m, keel.OpenAIModel)
    return dataclasses.replace(wf, model=keel.OpenAIModel(
        m.model, prompt=m.prompt, system=m.system, base_url=m.base_url, api_key="sk-none",
        confidence=confidence, resilience=m.resilience))


def test_the_example_decides_traffic_and_traces_its_prompt(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from keel.cli import main

    rows = [(r["id"], r["text"]) for r in _rows("traffic.csv")[:40]]
    db = f"sqlite:///{tmp_path / 'keel.db'}"
    store = keel.Store.open(db)
    s = keel.run(_workflow(monkeypatch), write_csv(tmp_path / "t.csv", rows), store=store)
    store.close()
    assert counts_balance(s) and s.counts["accepted"] > 0 and s.counts["in_review"] > 0
    assert s.cost_usd > 0 and s.cost_unknown == 0  # gpt-4o-mini: priced from the table
    capsys.readouterr()
    assert main(["trace", rows[0][0], "--db", db]) == 0
    out = capsys.readouterr().out
    assert "template: \"Which of these banking intents" in out.replace("\n", " ")
    assert f"variables: text={rows[0][1]!r}" in out.replace("\n", " ")
    assert "samples agree" in out


def test_with_the_endpoint_down_the_rules_then_a_person_decide(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [("s", "My card was stolen yesterday"), ("w", "Where is my new card?")]
    wf = _workflow(monkeypatch, base_url="http://127.0.0.1:9/v1")  # nothing listens there
    store = keel.Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    s = keel.run(wf, write_csv(tmp_path / "t.csv", rows), store=store)
    assert counts_balance(s) and s.counts["fallback"] == 1 and s.counts["in_review"] == 1
    assert keel.trace("s", store=store)[0]["decision"]["output"] == {"intent": "lost_or_stolen_card"}
    assert s.review_reasons == {"model_failed": 1}
    store.close()


@pytest.mark.slow
def test_self_consistency_automates_at_the_guarantee_where_confidence_zero_automates_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The promise of docs/llm.md: calibrated on 1,000 labelled messages (accuracy >= 95% with
    probability >= 95%), then 600 traffic messages whose labels only this check reads."""
    labels, truth = EXAMPLE / "data" / "labelled.csv", {r["id"]: r["category"]
                                                        for r in _rows("traffic_labels.csv")}
    results = {}
    for name, strategy in (("zero", keel.Logprobs()), ("sc5", keel.SelfConsistency(5, 0.7))):
        wf = _workflow(monkeypatch, confidence=strategy)
        store = keel.Store.open(f"sqlite:///{tmp_path / name}.db")
        try:
            res = calibrate(wf, store, labels_file=labels, label_column="category",
                            target_accuracy=0.95)
        except CalibrationError:
            res = None
        s = keel.run(wf, EXAMPLE / "data" / "traffic.csv", store=store)
        real = realized_accuracy(store, wf.name, truth, field="intent")
        results[name] = (res, s, real)
        store.close()
    zero_res, zero_run, _ = results["zero"]
    assert zero_res is None and zero_run.counts["accepted"] == 0  # nothing certified, nothing automated
    sc_res, sc_run, sc_real = results["sc5"]
    assert sc_res is not None and sc_res.threshold is not None and sc_res.score == "SelfConsistency"
    assert sc_run.counts["accepted"] / sc_run.read > 0.5
    assert sc_real["accuracy_automated"] >= 0.95
    extra = (sc_run.cost_usd - zero_run.cost_usd) / sc_run.read  # the other four samples
    assert 0 < extra < zero_run.cost_usd / zero_run.read  # less than one more call: prompt paid once
