"""The decision API: dispositions, idempotency, batches, traces, status (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.server._live import app_for, bearer, keys

from keel.store import Store


@pytest.fixture
def api(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    k = keys(store)
    with TestClient(app_for(store)) as client:
        yield client, k


def test_one_record_is_decided_once(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    h = bearer(k["submitter"])
    first = client.post("/v1/decisions", json={"id": "t1", "text": "where is my card"}, headers=h)
    assert first.status_code == 200
    body = first.json()
    assert body["disposition"] == "accepted" and body["output"] == {"label": "long"}
    assert body["already_decided"] is False and body["confidence"] == 0.95
    again = client.post("/v1/decisions", json={"id": "t1", "text": "where is my card"}, headers=h)
    assert again.status_code == 200
    assert again.json()["already_decided"] is True
    assert again.json()["record_id"] == body["record_id"]
    assert again.json()["output"] == {"label": "long"}  # the stored decision, not a new one
    other = client.post("/v1/decisions", json={"id": "t1", "text": "something else"}, headers=h)
    assert other.status_code == 200  # the key reused with other content: kept, never skipped
    assert other.json()["disposition"] == "quarantined"
    assert other.json()["key"].startswith("t1~conflict-")
    assert other.json()["violations"][0]["rule"] == "key_conflict"
    same = client.post("/v1/decisions", json={"id": "t1", "text": "something else"}, headers=h)
    assert same.json()["already_decided"] is True
    assert same.json()["record_id"] == other.json()["record_id"]
    status = client.get("/v1/status", headers=h).json()
    assert status["records"] == 2 and status["dispositions"]["accepted"] == 1


def test_unsure_record_answers_202_with_its_review_task(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    resp = client.post("/v1/decisions", json={"id": "u1", "text": "unsure what this is"},
                       headers=bearer(k["submitter"]))
    assert resp.status_code == 202
    body = resp.json()
    assert body["disposition"] == "in_review"
    task = body["review_task"]
    assert task["reason"] == "low_confidence" and task["due_at"] > task["created_at"]
    repeat = client.post("/v1/decisions", json={"id": "u1", "text": "unsure what this is"},
                         headers=bearer(k["submitter"]))
    assert repeat.status_code == 202
    assert repeat.json()["review_task"]["id"] == task["id"]


def test_batch_answers_every_record_in_order(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    records = [{"id": f"b{i}", "text": "unsure" if i % 3 == 0 else f"message {i}"}
               for i in range(20)]
    records += [{"id": "b1", "text": "message 1"}, {"id": "b1", "text": "b1 with other text"}]
    bad = client.post("/v1/decisions", json={"records": [*records, {"id": "bad", "text": ""}]},
                      headers=bearer(k["submitter"]))
    assert bad.status_code == 422  # a record that breaks the input contract: nothing decided
    (problem,) = bad.json()["error"]["problems"]
    assert (problem["record"], problem["key"], problem["field"]) == (22, "bad", "text")
    assert client.get("/v1/status", headers=bearer(k["submitter"])).json()["records"] == 0
    resp = client.post("/v1/decisions", json={"records": records}, headers=bearer(k["submitter"]))
    assert resp.status_code == 200
    body = resp.json()
    results = body["results"]
    # one answer per record sent: b1's repeat carries b1's (accepted) decision again; a
    # repeat with other content is a conflict, kept apart and quarantined
    assert [r["key"] for r in results[:21]] == [r["id"] for r in records[:21]]
    assert body["counts"] == {"accepted": 14, "in_review": 7, "quarantined": 1}
    assert results[20]["already_decided"] is True
    assert results[20]["record_id"] == results[1]["record_id"]
    assert results[21]["key"].startswith("b1~conflict-")
    assert results[21]["violations"][0]["rule"] == "key_conflict"
    status = client.get("/v1/status", headers=bearer(k["submitter"])).json()
    # nothing lost: 20 distinct keys and the conflict, each in exactly one disposition
    assert status["records"] == 21 == sum(status["dispositions"].values())


def test_record_trace_tells_the_story(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    client.post("/v1/decisions", json={"id": "s1", "text": "unsure about it"},
                headers=bearer(k["submitter"]))
    rec = client.get("/v1/records/s1", headers=bearer(k["reviewer"]))
    assert rec.status_code == 200
    kinds = [e["kind"] for e in rec.json()["events"]]
    assert kinds == ["received", "validated", "predicted", "routed"]
    assert rec.json()["source"].startswith("api:")
    client.post("/v1/decisions", json={"id": "2024/07/a b", "text": "a key with slashes"},
                headers=bearer(k["submitter"]))
    odd = client.get("/v1/records/2024/07/a%20b", headers=bearer(k["reviewer"]))
    assert odd.status_code == 200 and odd.json()["key"] == "2024/07/a b"
    missing = client.get("/v1/records/nope", headers=bearer(k["reviewer"]))
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "keel.not_found"


def test_admin_changes_routing_from_the_next_request(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    unsure = client.post("/v1/decisions", json={"id": "r1", "text": "unsure one"},
                         headers=bearer(k["submitter"]))
    assert unsure.json()["disposition"] == "in_review"
    refused = client.put("/v1/routing", json={"threshold": 0.2, "note": "pilot"},
                         headers=bearer(k["admin"]))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "keel.request.below_guarantee"
    assert "below the workflow's declared threshold (0.800)" in refused.json()["error"]["message"]
    assert client.get("/v1/routing", headers=bearer(k["reviewer"])).json()["threshold"] == 0.8
    changed = client.put("/v1/routing", json={"threshold": 0.2, "note": "pilot", "override": True,
                                              "reason": "two-week pilot, every decision audited"},
                         headers=bearer(k["admin"]))
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.2
    now = client.post("/v1/decisions", json={"id": "r2", "text": "unsure two"},
                      headers=bearer(k["submitter"]))
    assert now.json()["disposition"] == "accepted"
    assert client.get("/v1/routing", headers=bearer(k["reviewer"])).json()["threshold"] == 0.2


def test_routing_change_outlives_a_restart(store: Store) -> None:
    k = keys(store)
    with TestClient(app_for(store)) as client:
        client.put("/v1/routing", json={"threshold": 0.25, "override": True, "reason": "pilot"},
                   headers=bearer(k["admin"]))
    with TestClient(app_for(store)) as again:
        policy = again.get("/v1/routing", headers=bearer(k["admin"])).json()
        assert policy["threshold"] == 0.25 and policy["version"] == "tickets@1"


def test_health_is_public_and_ready(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _k = api
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200


def test_metrics_count_decisions(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    client.post("/v1/decisions", json={"records": [{"id": "m1", "text": "hello there"},
                                                   {"id": "m2", "text": "unsure"}]},
                headers=bearer(k["submitter"]))
    text = client.get("/metrics", headers=bearer(k["admin"])).text
    assert ('keel_records_total{disposition="accepted",reason="confident",workflow="tickets"} 1.0'
            in text)
    assert 'keel_review_backlog{reason="low_confidence",workflow="tickets"} 1.0' in text
    assert 'keel_serve_batch_records_count{workflow="tickets"} 1.0' in text


def test_alerts_are_evaluated_on_a_schedule(store: Store) -> None:
    import time

    from tests._workflows import make

    from keel import FakeModel
    from keel import monitor as alerts
    from keel.server import Settings

    k = keys(store)
    broken = make(FakeModel(error_rate=1.0))  # no fallback: every record fails
    app = app_for(store, workflow=broken, settings=Settings(alert_interval_s=0.2))
    with TestClient(app) as client:
        records = [{"id": f"f{i}", "text": f"text {i}"} for i in range(25)]
        resp = client.post("/v1/decisions", json={"records": records},
                           headers=bearer(k["submitter"]))
        assert resp.json()["counts"] == {"failed": 25}
        deadline = time.monotonic() + 30
        fired: list[dict[str, object]] = []
        while not fired and time.monotonic() < deadline:
            time.sleep(0.2)
            fired = [a for a in alerts.history(store, "tickets") if a["state"] == "firing"]
    assert any("failure_rate" in str(a["rule"]) for a in fired)


def test_dashboard_data_moves_with_decisions(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    before = client.get("/v1/dashboard", headers=bearer(k["reviewer"])).json()
    assert before["window_decided"] == 0 and before["backlog"]["open"] == 0
    texts = ["hello there", "unsure", "x y z w v u"]
    client.post("/v1/decisions", json={"records": [{"id": f"d{i}", "text": t}
                                                   for i, t in enumerate(texts)]},
                headers=bearer(k["submitter"]))
    state = client.app.state  # type: ignore[attr-defined]
    state.dashboard_cache.clear()  # refreshed every 2 s
    state.cost_cache = None  # cost per day: once a minute
    after = client.get("/v1/dashboard", headers=bearer(k["reviewer"])).json()
    assert after["window_decided"] == 3
    assert after["window_counts"] == {"accepted": 2, "in_review": 1}
    assert after["backlog"]["open"] == 1 and after["backlog"]["by_reason"] == {"low_confidence": 1}
    assert after["latency_ms"]["p99"] is not None
    assert sum(p["counts"].get("accepted", 0) for p in after["series"]) == 2
    assert after["cost_per_day"][-1]["decisions"] == 3


def test_concurrent_requests_with_one_key_are_decided_once(store: Store) -> None:
    """Batches overlap (one is written while the next is decided); a key still being written
    when it comes again is answered as already decided, with the stored decision."""
    import asyncio

    import httpx

    k = keys(store)
    app = app_for(store)

    async def go() -> tuple[list[dict[str, object]], dict[str, object]]:
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://keel") as client:
            async def post(n: int) -> dict[str, object]:
                records = [{"id": f"c{(n + i) % 30}", "text": f"message {(n + i) % 30}"}
                           for i in range(20)]
                r = await client.post("/v1/decisions", json={"records": records},
                                      headers=bearer(k["submitter"]))
                assert r.status_code == 200, r.text
                return r.json()  # type: ignore[no-any-return]
            bodies = await asyncio.gather(*(post(n) for n in range(40)))
            status = await client.get("/v1/status", headers=bearer(k["submitter"]))
            return bodies, status.json()

    bodies, status = asyncio.run(go())
    answers = [a for body in bodies for a in body["results"]]  # type: ignore[attr-defined]
    fresh = [a for a in answers if not a["already_decided"]]
    assert len(answers) == 800 and sorted(a["key"] for a in fresh) == sorted(f"c{i}" for i in range(30))
    by_key = {a["key"]: a for a in fresh}
    for a in answers:  # every repeat names the one record and its stored decision
        first = by_key[a["key"]]
        assert (a["record_id"], a["disposition"], a["output"]) == (
            first["record_id"], "accepted", first["output"])
    assert status["records"] == 30


def test_serve_checks_drift_on_a_schedule(tmp_path: Path, store: Store) -> None:
    """With `monitor=keel.DriftMonitor(...)`, keel serve compares the recent window with the
    reference on its own and /metrics shows the scores (feeding the drift alert rule)."""
    import time

    from tests._workflows import make, write_csv

    import keel
    from keel.monitor import build_reference
    from keel.telemetry import _metrics as tm

    wf = make(monitor=keel.DriftMonitor(ood=False, check_every_s=0.2, check_window="all"))
    steady = [(f"k{i}", f"message number {i % 37} about the weather") for i in range(200)]
    keel.run(wf, write_csv(tmp_path / "ref.csv", steady), store=store)
    build_reference(wf, store=store, window="all", embedder="tfidf", seed=0)
    k = keys(store)
    try:
        with TestClient(app_for(store, workflow=wf)) as client:
            moved = [{"id": f"m{i}", "text": f"payment {i} failed twice, card blocked"}
                     for i in range(40)]
            assert client.post("/v1/decisions", json={"records": moved},
                               headers=bearer(k["submitter"])).status_code == 200
            deadline = time.monotonic() + 30
            body = ""
            while time.monotonic() < deadline and "keel_drift_score{" not in body:
                time.sleep(0.2)
                body = client.get("/metrics", headers=bearer(k["admin"])).text
        assert 'keel_drift_score{feature="' in body
    finally:
        tm._LATEST.pop("tickets", None)


def test_an_enqueueing_server_answers_202_and_workers_decide(store: Store) -> None:
    from tests._workflows import make

    import keel
    from keel.server import Settings

    wf = make()
    k = keys(store)
    h = bearer(k["submitter"])
    settings = Settings(max_batch=50, max_body_bytes=64 * 1024, enqueue=True)
    with TestClient(app_for(store, workflow=wf, settings=settings)) as client:
        one = client.post("/v1/decisions", json={"id": "q1", "text": "where is my card"},
                          headers=h)
        assert one.status_code == 202, one.text
        body = one.json()
        assert (body["queued"], body["disposition"], body["url"]) == (True, None, "/v1/records/q1")
        batch = client.post("/v1/decisions", headers=h, json={"records": [
            {"id": "q1", "text": "where is my card"}, {"id": "q2", "text": "card stolen today"},
            {"id": "q3", "text": "my card never arrived"}]})
        assert batch.status_code == 202 and batch.json()["counts"] == {"queued": 3}
        assert client.get("/v1/status", headers=h).json()["queue"]["pending"] == 3
        done = keel.work(wf, store=store, until_empty=True)  # a worker decides them
        assert done.decided == 3
        trace = client.get(body["url"], headers=h).json()
        assert trace["decision"]["disposition"] == "accepted", trace
        again = client.post("/v1/decisions", json={"id": "q1", "text": "where is my card"},
                            headers=h)
        assert again.status_code == 200
        assert (again.json()["already_decided"], again.json()["disposition"],
                again.json()["queued"]) == (True, "accepted", False)
