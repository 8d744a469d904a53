"""Bad requests get a clear 4xx with a stable keel error code, and nothing half-done."""

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
    with TestClient(app_for(store)) as client:  # max_batch=50, max_body_bytes=64 KiB
        yield client, k


def _post(client: TestClient, key: str, **kw: object) -> tuple[int, str]:
    resp = client.post("/v1/decisions", headers=bearer(key), **kw)  # type: ignore[arg-type]
    return resp.status_code, resp.json()["error"]["code"] if resp.status_code >= 400 else ""


CASES = [
    ("not json", {"content": b"{'id': 1"}, 400, "keel.request.invalid_json"),
    ("a list, not an object", {"json": [1, 2]}, 422, "keel.request.invalid"),
    ("records not a list", {"json": {"records": {"id": "a"}}}, 422, "keel.request.invalid"),
    ("empty batch", {"json": {"records": []}}, 422, "keel.request.invalid"),
    ("record not an object", {"json": {"records": ["x"]}}, 422, "keel.request.invalid"),
    ("no key field", {"json": {"text": "hello"}}, 422, "keel.request.missing_key"),
    ("blank key", {"json": {"id": "  ", "text": "hello"}}, 422, "keel.request.missing_key"),
    ("key too long", {"json": {"id": "k" * 501, "text": "hi"}}, 422, "keel.request.missing_key"),
    ("NUL in a field", {"json": {"id": "n1", "text": "a\x00b"}}, 422, "keel.request.invalid"),
    ("batch too large", {"json": {"records": [{"id": f"b{i}", "text": "x"} for i in range(51)]}},
     422, "keel.request.batch_too_large"),
    ("body too large", {"json": {"id": "big", "text": "x" * 70_000}}, 413,
     "keel.request.too_large"),
]


@pytest.mark.parametrize(("what", "kw", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_request_is_refused_with_a_stable_code(
        api: tuple[TestClient, dict[str, str]], what: str, kw: dict[str, object], status: int,
        code: str) -> None:
    client, k = api
    assert _post(client, k["submitter"], **kw) == (status, code)
    st = client.get("/v1/status", headers=bearer(k["submitter"])).json()
    assert st["records"] == 0  # nothing was admitted from a refused request


def test_a_record_that_breaks_the_contract_is_refused_with_its_violations(
        api: tuple[TestClient, dict[str, str]]) -> None:
    """The API admits only what its own schema (the input contract) describes."""
    client, k = api
    resp = client.post("/v1/decisions", json={"id": "q1", "text": 42},
                       headers=bearer(k["submitter"]))
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "keel.request.invalid" and "breaks the input contract" in err["message"]
    assert err["problems"][0]["field"] == "text" and err["problems"][0]["key"] == "q1"
    assert client.get("/v1/status", headers=bearer(k["submitter"])).json()["records"] == 0


def test_releasing_a_task_that_does_not_exist_is_404(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    resp = client.post("/v1/review/tasks/no-such-task/release", headers=bearer(k["reviewer"]))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "keel.not_found"


def test_unknown_route_and_method(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    nope = client.get("/v1/nothing-here", headers=bearer(k["admin"]))
    assert nope.status_code == 404 and nope.json()["error"]["code"] == "keel.not_found"
    wrong = client.delete("/v1/decisions", headers=bearer(k["admin"]))
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "keel.http.405"


def test_validation_errors_name_the_field(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    resp = client.put("/v1/routing", json={"threshold": 3}, headers=bearer(k["admin"]))
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "keel.request.invalid" and err["message"].startswith("threshold")


def test_a_browser_session_submits_through_the_documented_route(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    client.post("/login", data={"key": k["admin"], "csrf": csrf.group(1)})
    token = re.search(r'name="csrf-token" content="([^"]+)"', client.get("/ui/review").text)
    assert token
    resp = client.post("/v1/decisions", json={"id": "w1", "text": "from the browser"},
                       headers={"X-CSRF-Token": token.group(1)})
    assert resp.status_code == 200 and resp.json()["disposition"] == "accepted"
    too_many = client.post("/v1/decisions",
                           json={"records": [{"id": f"b{i}", "text": "x"} for i in range(51)]},
                           headers={"X-CSRF-Token": token.group(1)})
    assert too_many.status_code == 422
    assert too_many.json()["error"]["code"] == "keel.request.batch_too_large"


def test_decisions_before_the_pipeline_runs_answer_503(store: Store) -> None:
    k = keys(store)
    client = TestClient(app_for(store))  # no `with`: the app was never started
    resp = client.post("/v1/decisions", json={"id": "early", "text": "hello"},
                       headers=bearer(k["submitter"]))
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "keel.not_ready"
    assert client.get("/readyz").status_code == 503
    client.close()
