"""Authentication and roles: who may do what, keys shown once and revocable, CSRF on sessions."""

from __future__ import annotations

import re
import subprocess
import sys
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


DECIDE = ("POST", "/v1/review/tasks/abc/decision", {"decision": "accept"})
CLAIM = ("POST", "/v1/review/claim", {})
KEYS = ("POST", "/v1/keys", {"role": "admin", "name": "mallory"})
ROUTING = ("PUT", "/v1/routing", {"threshold": 0.1})
SUBMIT = ("POST", "/v1/decisions", {"id": "x1", "text": "hello"})


@pytest.mark.parametrize(("role", "call"), [
    ("submitter", DECIDE), ("submitter", CLAIM), ("submitter", ROUTING), ("submitter", KEYS),
    ("reviewer", KEYS), ("reviewer", ROUTING), ("reviewer", SUBMIT),
])
def test_roles_are_enforced(api: tuple[TestClient, dict[str, str]], role: str,
                            call: tuple[str, str, dict[str, object]]) -> None:
    client, k = api
    method, url, body = call
    resp = client.request(method, url, json=body, headers=bearer(k[role]))
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["code"] == "keel.auth.forbidden"


def test_submitter_cannot_see_the_dashboard_or_list_keys(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    for url in ("/v1/dashboard", "/v1/keys", "/v1/review/tasks"):
        assert client.get(url, headers=bearer(k["submitter"])).status_code == 403


def test_every_endpoint_but_health_needs_a_key(api: tuple[TestClient, dict[str, str]]) -> None:
    client, _k = api
    for method, url in (("POST", "/v1/decisions"), ("GET", "/v1/records/a"),
                        ("GET", "/v1/status"), ("GET", "/v1/dashboard"), ("GET", "/metrics"),
                        ("GET", "/v1/review/tasks"), ("GET", "/v1/keys"),
                        ("GET", "/openapi.json")):
        resp = client.request(method, url)
        assert resp.status_code == 401, url
        assert resp.json()["error"]["code"] == "keel.auth"
    wrong = client.get("/v1/status", headers=bearer("keel_not-a-real-key"))
    assert wrong.status_code == 401
    assert client.get("/healthz").status_code == 200


def test_x_api_key_header_works_too(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    assert client.get("/v1/status", headers={"X-API-Key": k["reviewer"]}).status_code == 200


def test_admin_creates_and_revokes_keys(api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    made = client.post("/v1/keys", json={"role": "reviewer", "name": "bob"},
                       headers=bearer(k["admin"]))
    assert made.status_code == 201
    secret, key_id = made.json()["key"], made.json()["id"]
    assert client.get("/v1/review/tasks", headers=bearer(secret)).status_code == 200
    listed = client.get("/v1/keys", headers=bearer(k["admin"])).json()
    assert {x["name"] for x in listed} >= {"bob", "alice"}
    assert all("key" not in x and "hash" not in x for x in listed)
    assert client.delete(f"/v1/keys/{key_id}", headers=bearer(k["admin"])).status_code == 200
    refused = client.get("/v1/review/tasks", headers=bearer(secret))
    assert refused.status_code == 401  # at once, not after a cache expires
    again = client.delete(f"/v1/keys/{key_id}", headers=bearer(k["admin"]))
    assert again.status_code == 404


def _login(client: TestClient, key: str) -> str:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    resp = client.post("/login", data={"key": key, "csrf": csrf.group(1), "next": "/ui/review"},
                       follow_redirects=False)
    assert resp.status_code == 303, resp.text
    inbox = client.get("/ui/review")
    token = re.search(r'name="csrf-token" content="([^"]+)"', inbox.text)
    assert token
    return token.group(1)


def test_browser_session_needs_csrf_token_for_changes(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    token = _login(client, k["admin"])
    assert client.get("/v1/status").status_code == 200  # the session cookie signs us in
    no_token = client.put("/v1/routing", json={"threshold": 0.9})
    assert no_token.status_code == 403
    assert no_token.json()["error"]["code"] == "keel.auth.csrf"
    ok = client.put("/v1/routing", json={"threshold": 0.9}, headers={"X-CSRF-Token": token})
    assert ok.status_code == 200


def test_login_refuses_submitter_and_unknown_keys(
        api: tuple[TestClient, dict[str, str]]) -> None:
    client, k = api
    for key, status in ((k["submitter"], 401), ("keel_nope", 401)):
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf
        resp = client.post("/login", data={"key": key, "csrf": csrf.group(1)},
                           follow_redirects=False)
        assert resp.status_code == status
    assert client.get("/ui/review", follow_redirects=False).status_code == 303
    forged = client.post("/login", data={"key": k["reviewer"], "csrf": "forged"},
                         follow_redirects=False)
    assert forged.status_code == 403


def _keel(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "keel", *args], cwd=cwd, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.slow
def test_keys_cli_shows_the_key_once_and_revokes(tmp_path: Path) -> None:
    made = _keel("keys", "create", "--role", "reviewer", "--name", "carol", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert secret.startswith("keel_") and len(secret) > 40
    listed = _keel("keys", "list", "--json", cwd=tmp_path)
    assert secret not in listed.stdout and "carol" in listed.stdout
    key_id = re.search(r'"id": "([0-9a-f]+)"', listed.stdout)
    assert key_id
    store = Store.open(str(tmp_path / ".keel" / "keel.db"))
    try:
        from keel.server._keys import Authenticator

        assert Authenticator(store).by_secret(secret) is not None
        assert _keel("keys", "revoke", key_id.group(1), cwd=tmp_path).returncode == 0
        assert Authenticator(store).by_secret(secret) is None
    finally:
        store.close()
    bad = _keel("keys", "create", "--role", "root", cwd=tmp_path)
    assert bad.returncode == 1 and "unknown role" in bad.stderr and "Traceback" not in bad.stderr
    gone = _keel("keys", "revoke", "ffff", cwd=tmp_path)
    assert gone.returncode == 1 and "no active API key" in gone.stderr
