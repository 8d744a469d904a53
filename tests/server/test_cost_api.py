"""Cost over HTTP and in /metrics: the report for any reader, prices and budgets for admins,
spend, value and budget room as Prometheus series."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests._workflows import make
from tests.server._live import app_for, bearer, keys

import keel
from keel import cost
from keel.store import Store


def _workflow(**more: object) -> keel.Workflow:
    return make(keel.FakeModel(lambda m: {"label": "x"}, confidence=0.95, name="llm"),
                cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.01)],
                               budgets=[keel.Budget("day", usd=0.05)], on_exhausted="review",
                               manual_handling_s=60, value_per_record_usd=0.5, **more))


@pytest.fixture
def api(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    wf = _workflow(target_volume="50000/day", reviewer_usd_per_hour=30.0, review_s_per_task=120)
    k = keys(store)
    with TestClient(app_for(store, workflow=wf)) as client:
        yield client, k


def test_cost_report_budgets_and_metrics(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    for n in range(8):
        resp = client.post("/v1/decisions", json={"id": f"c{n}", "text": "hello there"},
                           headers=bearer(k["submitter"]))
        assert resp.status_code == (200 if n < 5 else 202), resp.text  # 202: to a person
    rep = client.get("/v1/cost", headers=bearer(k["reviewer"]))
    assert rep.status_code == 200, rep.text
    body = rep.json()["report"]
    assert body["components"]["model_usd"] == pytest.approx(0.05)   # 5 calls fit the budget
    assert body["by_disposition"]["in_review"]["decisions"] == 3     # the rest went to people
    assert client.get("/v1/cost/budgets", headers=bearer(k["reviewer"])).status_code == 403
    assert client.get("/v1/cost/prices", headers=bearer(k["reviewer"])).status_code == 403
    budgets = client.get("/v1/cost/budgets", headers=bearer(k["admin"])).json()
    assert budgets[0]["remaining_usd"] == pytest.approx(0.0) and budgets[0]["refused"] == 3
    dash = client.get("/v1/dashboard", headers=bearer(k["reviewer"])).json()
    assert dash["budgets"] == [{"period": "day", "limit_usd": 0.05, "spent_usd": pytest.approx(0.05),
                                "remaining_usd": pytest.approx(0.0)}]  # the dashboard's tile
    prices = client.get("/v1/cost/prices", headers=bearer(k["admin"])).json()
    assert prices["prices"][0]["per_call_usd"] == 0.01
    metrics = client.get("/metrics", headers=bearer(k["admin"])).text
    assert 'keel_budget_remaining_usd{period="day",workflow="tickets"} 0.0' in metrics
    assert 'keel_cost_component_usd_total{component="model",workflow="tickets"}' in metrics
    assert 'keel_value_net_usd{workflow="tickets"}' in metrics
    bad = client.get("/v1/cost?project=0/day", headers=bearer(k["reviewer"]))
    assert bad.status_code == 422                                   # a volume of 0: refused
    proj = client.get("/v1/cost?project=50000/day", headers=bearer(k["reviewer"])).json()
    assert proj["projection"]["model_usd_per_day"]["estimate"] == pytest.approx(5 / 8 * 0.01 * 50000)


def test_the_dashboards_cost_outlook_for_any_role(
        api: tuple[TestClient, dict[str, str]], store: Store) -> None:
    """Spend against budget, net value per day and the projection to the declared target
    volume, for a submitter too; the projection is keel cost --project's own."""
    client, k = api
    for n in range(8):  # 5 fit the $0.05 budget at $0.01 a call, 3 go to people
        client.post("/v1/decisions", json={"id": f"o{n}", "text": "hello there"},
                    headers=bearer(k["submitter"]))
    got = client.get("/v1/cost/outlook", headers=bearer(k["submitter"]))
    assert got.status_code == 200, got.text
    o = got.json()
    (day,) = o["budgets"]
    assert (day["period"], day["limit_usd"], day["refused"]) == ("day", 0.05, 3)
    assert day["spent_usd"] == pytest.approx(0.05) and day["spent_share"] == pytest.approx(1.0)
    per_day = o["value"]["per_day"]                       # a window younger than a day: 1 day
    assert per_day["value_usd"] == pytest.approx(5 * 0.5)  # 5 automatic decisions at $0.50
    assert per_day["model_usd"] == pytest.approx(0.05)
    assert per_day["errors_usd"] is None                  # no audits yet: unknown, not $0
    assert o["value"]["net_usd_per_day"] == pytest.approx(2.5 - 0.05)
    p = o["projection"]
    assert o["volume"] == "50000/day" and p["volume_per_day"] == 50000
    hours = 50000 * 3 / 8 * 120 / 3600                    # 3 of 8 routed, 120 s declared each
    assert p["review_hours_per_day"]["estimate"] == pytest.approx(hours)
    assert p["reviewers_needed"]["estimate"] == math.ceil(hours / 6.0)
    month = 30 * (50000 * 5 / 8 * 0.01 + hours * 30.0)
    assert p["total_usd_per_month"]["estimate"] == pytest.approx(month)
    assert p["total_usd_per_month"]["low"] < month < p["total_usd_per_month"]["high"]
    cli = client.get("/v1/cost?project=50000/day", headers=bearer(k["reviewer"])).json()
    assert cli["projection"]["total_usd_per_month"] == p["total_usd_per_month"]
    other = client.get("/v1/cost/outlook?project=1000/hour", headers=bearer(k["reviewer"]))
    assert other.json()["projection"]["volume_per_day"] == 24000
    assert client.get("/v1/cost/outlook?project=0/day",
                      headers=bearer(k["reviewer"])).status_code == 422
    assert client.get("/v1/cost/outlook").status_code == 401
    undeclared = cost.outlook(_workflow(), store)          # no target volume: said, not guessed
    assert undeclared["projection"] is None
    assert "target_volume" in undeclared["projection_note"]


def test_the_outlook_never_asks_the_model_to_answer_the_labels_again(
        store: Store, tmp_path: Path) -> None:
    """The dashboard refreshes the outlook every 30 s: with a labels file declared, keel cost
    --project has the model answer it again for the error rate; the outlook must not (a paid
    model would be billed at every refresh)."""
    calls: list[str] = []

    def answer(m: object) -> dict[str, str]:
        calls.append("called")
        return {"label": "x"}

    labels = tmp_path / "labels.csv"
    labels.write_text("id,text,label\n" + "".join(f"l{i},hello {i},x\n" for i in range(40)))
    wf = make(keel.FakeModel(answer, confidence=0.95, name="llm"),
              cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.01)],
                             labels=str(labels), label_column="label", wrong_decision_usd=2.0,
                             target_volume="1000/day"))
    keel.run(wf, [{"id": f"r{i}", "text": "hello there"} for i in range(5)], store=store)
    before = len(calls)
    seen = cost.outlook(wf, store)
    assert len(calls) == before                              # not asked again
    assert seen["projection"]["wrong_decisions_per_day"] is None
    assert any("not asked" in m for m in seen["projection"]["missing"])
    cli = cost.project(wf, store, "1000/day")                # keel cost --project: asked
    assert len(calls) == before + 40
    assert cli["wrong_decisions_per_day"]["estimate"] == pytest.approx(0.0)
