"""Cost accounting a user can check: declared prices (per call, per token, by effective date),
unknown prices never counted as $0, review cost from measured handling time, the report,
projection and threshold trade-off, and bad input said clearly from the CLI."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from tests._cli import keel_cli
from tests._workflows import make

import keel
from keel import cost
from keel._prediction import Usage
from keel.errors import CostError
from keel.review import ReviewQueue

ROWS = [{"id": f"r{i}", "text": "unsure about this" if i % 4 == 0 else "hello there"}
        for i in range(40)]


def _wf(**kw: object) -> keel.Workflow:
    return make(keel.FakeModel(lambda m: {"label": "x"},
                               confidence=lambda m: 0.3 if "unsure" in m.text else 0.95,
                               name="llm"), **kw)


def test_every_try_is_priced_from_the_table_in_force_at_the_time() -> None:
    table = keel.Cost(prices=[
        keel.ModelPrice("llm", input_per_mtok=1.0, output_per_mtok=2.0, effective_from="2026-01-01"),
        keel.ModelPrice("llm", input_per_mtok=3.0, output_per_mtok=4.0, per_call_usd=0.5,
                        effective_from="2026-06-01")]).table()
    model = keel.FakeModel(name="llm")
    jan = cost.Pricer(table, clock=lambda: 1768000000.0)   # 2026-01-09
    jul = cost.Pricer(table, clock=lambda: 1783000000.0)   # 2026-07-02
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    assert jan(model, usage) == (3.0, True, "llm@2026-01-01")
    assert jul(model, usage) == (7.5, True, "llm@2026-06-01")
    assert cost.Pricer(table, clock=lambda: 0.0)(model, usage)[1] is False  # before any price


def test_decisions_carry_the_declared_cost_and_an_unpriced_model_is_unknown() -> None:
    store = keel.Store.open()
    try:
        priced = _wf(name="priced", cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.002)]))
        summary = keel.run(priced, ROWS, store=store)
        assert summary.cost_usd == pytest.approx(40 * 0.002)
        rep = cost.report(priced, store)
        assert rep["components"]["model_usd"] == pytest.approx(0.08)
        assert rep["unknown_cost_decisions"] == 0
        assert rep["per_decision_usd"]["p50"] == pytest.approx(0.002)

        unpriced = _wf(name="unpriced", cost=keel.Cost(prices=[keel.ModelPrice("other", per_call_usd=1)]))
        summary = keel.run(unpriced, ROWS, store=store)
        assert summary.cost_unknown == 40                 # said so, not $0
        assert cost.report(unpriced, store)["unknown_cost_decisions"] == 40
    finally:
        store.close()


def test_review_cost_is_measured_handling_time_times_the_rate() -> None:
    store = keel.Store.open()
    try:
        wf = _wf(name="reviewed", cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.001)],
                                                 reviewer_usd_per_hour=36.0))
        keel.run(wf, ROWS, store=store)
        now = [1_000_000.0]
        queue = ReviewQueue(store, wf, clock=lambda: now[0])
        for _n in range(10):                              # 10 low-confidence tasks
            task = queue.claim(None, "ana")
            assert task is not None
            now[0] += 100.0                               # 100 s claim -> decision
            queue.decide(task["id"], "ana", "accept")
        rep = cost.report(wf, store)
        assert rep["review"]["tasks_measured"] == 10
        assert rep["review"]["handling_s_mean"] == pytest.approx(100.0)
        assert rep["components"]["review_usd"] == pytest.approx(10 * 100 / 3600 * 36.0)
        reviewed = rep["by_disposition"]["reviewed"]
        assert reviewed["review_usd"] == pytest.approx(10.0)
        assert reviewed["per_decision_usd"] == pytest.approx(1.0 + 0.001)
        proj = cost.project(wf, store, "1000/day")
        # a quarter of records go to review, at 100 s each
        assert proj["review_hours_per_day"]["estimate"] == pytest.approx(250 * 100 / 3600)
        assert proj["model_usd_per_day"]["estimate"] == pytest.approx(1.0)
        assert proj["review_share"]["low"] < 0.25 < proj["review_share"]["high"]
    finally:
        store.close()


@pytest.mark.slow
def test_demo_store_projects_a_month_and_finds_the_cheapest_threshold(
        demo_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    wf = demo_env / "workflow.py"
    summary = keel.run(wf, demo_env / "data" / "traffic.csv")
    assert summary.cost_unknown == 0  # the demo prices the model it declares
    res = keel_cli(capsys, "cost", str(wf), "--project", "50000/day", "--thresholds", "--json",
                   "--html", str(tmp_path / "cost.html"))
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    proj, th = out["projection"], out["thresholds"]
    total = proj["total_usd_per_month"]
    assert total["low"] < total["estimate"] < total["high"]
    assert proj["reviewers_needed"]["estimate"] >= 1
    assert proj["wrong_decisions_per_day"]["estimate"] > 0
    assert "calibration.csv" in proj["accuracy_source"]
    certified = [r for r in th["rows"] if r["certified"]]
    best = min(certified, key=lambda r: r["total_usd_per_day"])
    assert th["cheapest"] == best["threshold"]
    assert best["guaranteed_accuracy"] >= th["target_accuracy"]
    page = (tmp_path / "cost.html").read_text()
    assert "<polyline" in page and "cheapest certified" in page
    text = keel_cli(capsys, "cost", str(wf), "--project", "50000/day")
    assert "total, USD/month" in text.stdout and "reviewers needed" in text.stdout


BAD = textwrap.dedent('''
    from pydantic import BaseModel
    import keel

    class Msg(BaseModel):
        id: str
        text: str

    class Label(BaseModel):
        label: str

    workflow = keel.Workflow(
        name="bad", input=Msg, output=Label, key="id",
        model=keel.FakeModel({"label": "x"}, name="llm"),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
        cost=keel.Cost(%s),
    )
''')


@pytest.mark.parametrize(("declared", "said"), [
    ('prices=[keel.ModelPrice("llm", per_call_usd=-1)]', "per_call_usd must be a finite number >= 0"),
    ('prices=[keel.ModelPrice("llm", input_per_mtok="cheap")]', "must be a number >= 0, got 'cheap'"),
    ('prices=[keel.ModelPrice("llm", effective_from="June")]', "not an ISO date"),
    ('budgets=[keel.Budget("day", usd=5, currency="EUR")]', "keel accounts in USD only"),
    ('budgets=[keel.Budget("day", usd=5, currency="dollars")]', "not an ISO 4217 currency code"),
    ('budgets=[keel.Budget("week", usd=5)]', "use 'day' or 'month'"),
    ('prices="missing.toml"', "price file"),
    ('budgets=[keel.Budget("day", usd=1)]', "a budget in USD needs what one call may cost"),
])
def test_bad_prices_and_budgets_are_clear_errors(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path, declared: str, said: str) -> None:
    wf = tmp_path / "workflow.py"
    wf.write_text(BAD % declared)
    (tmp_path / "in.csv").write_text("id,text\n1,hello\n")
    res = keel_cli(capsys, "run", str(wf), str(tmp_path / "in.csv"))
    assert res.returncode == 1
    assert said in res.stderr and "Traceback" not in res.stderr


@pytest.mark.parametrize(("volume", "said"), [
    ("0/day", "more than 0 records"), ("lots", "records per period"), ("-5/day", "records per period")])
def test_a_bad_projection_volume_is_a_clear_error(capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, volume: str, said: str) -> None:
    wf = tmp_path / "workflow.py"
    wf.write_text(BAD % 'prices=[keel.ModelPrice("llm", per_call_usd=0.01)]')
    (tmp_path / "in.csv").write_text("id,text\n1,hello\n")
    assert keel_cli(capsys, "run", str(wf), str(tmp_path / "in.csv")).returncode == 0
    res = keel_cli(capsys, "cost", str(wf), "--project", volume)
    assert res.returncode in (1, 2)
    assert said in res.stderr and "Traceback" not in res.stderr


def test_a_price_file_is_read_and_a_malformed_one_named(tmp_path: Path) -> None:
    good = tmp_path / "prices.toml"
    good.write_text('[[price]]\nmodel = "llm"\ninput_per_mtok = 0.15\noutput_per_mtok = 0.6\n'
                    'effective_from = "2024-07-18"\n')
    table = keel.Cost(prices=str(good)).table()
    assert table.at(["llm"], 1.9e9).input_per_mtok == 0.15
    bad = tmp_path / "bad.toml"
    bad.write_text('[[price]]\nmodel = "llm"\nper_token = 3\n')
    with pytest.raises(CostError, match=r"unknown field\(s\) \['per_token'\]"):
        keel.Cost(prices=str(bad)).table()
    (tmp_path / "broken.toml").write_text("[[price]\n")
    with pytest.raises(CostError, match="not valid TOML"):
        keel.Cost(prices=str(tmp_path / "broken.toml")).table()


def test_a_decision_costs_its_paid_bad_answer_and_its_fallback() -> None:
    store = keel.Store.open()
    try:
        wf = make(keel.FakeModel({"label": "x"}, malformed_rate=1.0, name="llm"), name="chain",
                  fallback=[keel.FakeModel({"label": "y"}, confidence=0.99, name="big")],
                  policy=keel.Policy(threshold=0.5, audit_rate=0.0),
                  cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.01),
                                         keel.ModelPrice("big", per_call_usd=0.05)]))
        summary = keel.run(wf, ROWS[:10], store=store)
        assert summary.counts["fallback"] == 10
        rep = cost.report(wf, store)
        assert rep["components"]["fallback_usd"] == pytest.approx(10 * 0.05)
        assert rep["components"]["model_usd"] == pytest.approx(10 * 0.01)  # the paid bad answers
        assert rep["per_decision_usd"]["p50"] == pytest.approx(0.06)
    finally:
        store.close()
