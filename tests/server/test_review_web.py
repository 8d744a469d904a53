"""The review API and the reviewer pages over it (same service as `keel review`)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from tests.server._live import app_for, bearer, keys

from keel.store import Store


@pytest.fixture
def api(store: Store) -> Iterator[tuple[TestClient, dict[str, str]]]:
    k = keys(store)
    with TestClient(app_for(store)) as client:
        records = [{"id": f"q{i}", "text": f"unsure about card {i}"} for i in range(3)]
        client.post("/v1/decisions", json={"records": records}, headers=bearer(k["submitter"]))
        yield client, k


def test_reviewer_claims_and_decides_through_the_api(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    h = bearer(k["reviewer"])
    tasks = client.get("/v1/review/tasks", headers=h).json()
    assert len(tasks) == 3 and {t["reason"] for t in tasks} == {"low_confidence"}
    claimed = client.post("/v1/review/claim", json={}, headers=h)
    assert claimed.status_code == 200
    task = claimed.json()
    assert task["claimed_by"] == "alice" and task["input"]["text"].startswith("unsure")
    other = client.post("/v1/review/claim", json={"task_id": task["id"]},
                        headers=bearer(k["admin"]))
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "keel.review.lease"
    bad = client.post(f"/v1/review/tasks/{task['id']}/decision",
                      json={"decision": "correct", "output": {"wrong": 1}}, headers=h)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "keel.review.invalid"
    done = client.post(f"/v1/review/tasks/{task['id']}/decision",
                       json={"decision": "correct", "output": {"label": "card"}}, headers=h)
    assert done.status_code == 200, done.text
    rec = client.get(f"/v1/records/{task['key']}", headers=h).json()
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["output"] == {"label": "card"}
    assert len(client.get("/v1/review/tasks", headers=h).json()) == 2
    nxt = client.post("/v1/review/claim", json={}, headers=h).json()
    client.post(f"/v1/review/tasks/{nxt['id']}/decision", json={"decision": "accept"}, headers=h)
    acc = client.get("/v1/dashboard", headers=h).json()["accuracy"]["reviewed"]
    assert acc["n"] == 2 and acc["accuracy"] == 0.5  # one corrected, one accepted


def test_nothing_to_claim_answers_204(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    h = bearer(k["reviewer"])
    for _ in range(3):
        task = client.post("/v1/review/claim", json={}, headers=h).json()
        client.post(f"/v1/review/tasks/{task['id']}/decision",
                    json={"decision": "reject", "reason": "spam"}, headers=h)
    assert client.post("/v1/review/claim", headers=h).status_code == 204


def _login(client: TestClient, key: str) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    client.post("/login", data={"key": key, "csrf": csrf.group(1)}, follow_redirects=False)
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui/review").text)
    assert token
    return token.group(1)


def test_inbox_opens_the_next_task_with_what_a_reviewer_needs(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    _login(client, k["reviewer"])
    inbox = client.get("/ui/review")
    assert "3 waiting" in inbox.text and "low confidence" in inbox.text
    nxt = client.get("/ui/review/next", follow_redirects=False)
    assert nxt.status_code == 303
    page = client.get(nxt.headers["location"])
    assert page.status_code == 200
    text = page.text
    assert "unsure about card" in text  # the input
    assert "30%" in text  # the model's confidence
    assert "not sure enough" in text  # why it is here, in plain words
    assert 'id="f-label"' in text  # correction form built from the output contract
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "<script>" not in text  # no inline scripts: the CSP would block them
    task_id = nxt.headers["location"].rsplit("/", 1)[-1]
    held = client.get(f"/v1/review/tasks/{task_id}", headers=bearer(k["admin"])).json()
    assert held["claimed_by"] == "alice"  # opening the page leased the task


def test_similar_past_decisions_are_shown(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    h = bearer(k["reviewer"])
    first = client.post("/v1/review/claim", json={}, headers=h).json()
    client.post(f"/v1/review/tasks/{first['id']}/decision",
                json={"decision": "correct", "output": {"label": "card_issue"}}, headers=h)
    _login(client, k["reviewer"])
    page = client.get(client.get("/ui/review/next", follow_redirects=False).headers["location"])
    similar = page.text.split("Similar past decisions", 1)[1]
    assert first["key"] in similar and "card_issue" in similar and "correct" in similar


def test_record_page_reads_as_a_story(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    h = bearer(k["reviewer"])
    task = client.post("/v1/review/claim", json={}, headers=h).json()
    client.post(f"/v1/review/tasks/{task['id']}/decision", json={"decision": "accept"}, headers=h)
    _login(client, k["admin"])
    page = client.get(f"/ui/records/{task['key']}").text
    assert "Decided by a person." in page
    assert "Sent to a person: confidence 0.300 vs threshold 0.800" in page
    assert "Checked against the input rules: valid." in page
    assert "alice checked the answer and accepted it." in page
    missing = client.get("/ui/records/nope")
    assert missing.status_code == 404 and "No record with key" in missing.text


def test_pages_send_strangers_to_login(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _k = api
    for url in ("/ui/review", "/ui/dashboard", "/ui/records/q1", "/docs"):
        resp = client.get(url, follow_redirects=False)
        assert resp.status_code == 303 and resp.headers["location"].startswith("/login?next=")
