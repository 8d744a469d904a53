"""Cost over HTTP and in /metrics: the report for any reader, prices and budgets for admins,
spend, value and budget room as Prometheus series."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests._workflows import make
from tests.server._live import app_for, bearer, keys

import keel
from keel.store import Store


@pytest.fixture
def api(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    wf = make(keel.FakeModel(lambda m: {"label": "x"}, confidence=0.95, name="llm"),
              cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.01)],
                             budgets=[keel.Budget("day", usd=0.05)], on_exhausted="review",
                             manual_handling_s=60, value_per_record_usd=0.5))
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
