"""Property-based requests generated from the OpenAPI document: keel answers no 5xx."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from tests.server._live import app_for, bearer, keys, live_server

from keel.server import Settings
from keel.store import Store


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('st') / 'keel.db'}")
    k = keys(store)
    # bodies up to 16 MiB: the generated ones run large, and a 413 is not a schema verdict
    app = app_for(store, settings=Settings(max_batch=50, max_body_bytes=16 * 1024 * 1024))
    try:
        with live_server(app) as url:
            yield {"url": url, "keys": k, "app": app}
    finally:
        store.close()


@pytest.fixture(scope="module")
def api_schema(served: dict[str, Any]) -> Any:
    return schemathesis.openapi.from_dict(served["app"].openapi())


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: Any, served: dict[str, Any]) -> None:
    """Requests that fit the schema and requests that break it (schemathesis' positive and
    negative modes): never a 5xx, every error with a stable code, and every check of the
    responses against the documented schema (status codes, bodies, headers; invalid data
    refused) passes."""
    resp = case.call_and_validate(base_url=served["url"],
                                  headers=bearer(served["keys"]["admin"]))
    assert resp.status_code < 500, f"{case.method} {case.path}: {resp.status_code} {resp.text}"
    if resp.status_code >= 400:
        assert resp.json()["error"]["code"].startswith("keel."), resp.text


def test_openapi_documents_the_workflow_input(served: dict[str, Any], tmp_path: Path) -> None:
    import httpx

    doc = httpx.get(f"{served['url']}/openapi.json",
                    headers=bearer(served["keys"]["submitter"])).json()
    assert doc["components"]["schemas"]["WorkflowInput"]["required"] == ["id", "text"]
    assert "/v1/decisions" in doc["paths"] and "/v1/review/claim" in doc["paths"]
