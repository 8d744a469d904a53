"""The web app's front-end packages: installed by the README's install command, found without a
restart, and a page whose package is missing says so and how to fix it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tests.server._live import app_for, keys

from keel.server.ui import vendor_dir, vendor_path
from keel.store import Store


def _login(client: TestClient, key: str) -> None:
    page = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf
    client.post("/login", data={"key": key, "csrf": csrf.group(1)}, follow_redirects=False)


def test_the_install_command_brought_the_packages() -> None:
    found = vendor_dir()
    assert found is not None, "pip install -e . fetches them (hatch_build.py)"
    assert (found / "chart.js" / "dist" / "chart.umd.js").is_file()
    assert (found / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file()


def test_missing_packages_are_explained_then_found_without_a_restart(
        store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    installed = vendor_path()
    empty = tmp_path / "node_modules"
    empty.mkdir()
    monkeypatch.setenv("KEEL_UI_VENDOR", str(empty))
    k = keys(store)
    with TestClient(app_for(store)) as client:
        _login(client, k["reviewer"])
        docs = client.get("/docs")
        assert docs.status_code == 503
        assert "swagger-ui-dist" in docs.text and "pip install -e ." in docs.text
        dash = client.get("/ui/dashboard")
        assert 'id="assets-missing"' in dash.text and "chart.umd.js" not in dash.text
        assert client.get("/static/vendor/chart.js/dist/chart.umd.js").status_code == 404
        for name in ("chart.js", "swagger-ui-dist", "@kurkle"):  # as if installed just now
            shutil.copytree(installed / name, empty / name)
        docs = client.get("/docs")
        assert docs.status_code == 200 and "/static/vendor/swagger-ui-dist/swagger-ui-bundle.js" in docs.text
        dash = client.get("/ui/dashboard")
        assert 'id="assets-missing"' not in dash.text and "chart.umd.js" in dash.text
        js = client.get("/static/vendor/chart.js/dist/chart.umd.js")
        assert js.status_code == 200 and "Chart" in js.text[:5000]
