"""The reviewer's page shows the scanned document beside the fields read from it, and marks
the field whose rule broke (the invoice intake example's review)."""

from __future__ import annotations

import io
import re
from pathlib import Path

from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from pydantic import BaseModel
from tests.server._live import app_for, bearer, keys

import keel
from keel.store import Store


class Scan(BaseModel):
    id: str
    path: str


class Totals(BaseModel):
    subtotal: int
    total: int


def read_totals(scan: Scan) -> tuple[dict[str, int], float]:
    return {"subtotal": 10, "total": 12}, 0.99  # the scan says 10 + 0 = 12: a misread


def _workflow() -> keel.Workflow:
    return keel.Workflow(
        name="scans", input=Scan, output=Totals, key="id", model=keel.FunctionModel(read_totals),
        output_checks=[keel.check("subtotal is total", lambda t: t.subtotal == t.total,
                                  field="total", message="the total is not the subtotal")],
        owners=keel.Owners(business="ap@example.com", support="ml@example.com"),
        policy=keel.Policy(threshold=0.5, audit_rate=0.0))


def _login(client: TestClient, key: str) -> None:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf
    client.post("/login", data={"key": key, "csrf": csrf.group(1)}, follow_redirects=False)


def test_task_page_shows_the_document_and_the_broken_field(store: Store, tmp_path: Path) -> None:
    page_png = tmp_path / "scan.png"
    img = Image.new("L", (1700, 2200), 255)
    ImageDraw.Draw(img).text((100, 100), "Total 12.00", fill=0)
    img.save(page_png)
    k = keys(store)
    with TestClient(app_for(store, workflow=_workflow())) as client:
        sent = client.post("/v1/decisions", headers=bearer(k["submitter"]), json={
            "records": [{"id": "s1", "path": str(page_png)},
                        {"id": "s2", "path": str(tmp_path / "gone.png")}]})
        assert sent.status_code == 200, sent.text
        _login(client, k["reviewer"])
        tasks = client.get("/v1/review/tasks", headers=bearer(k["reviewer"])).json()
        pages = {}
        for task in tasks:
            where = f"/ui/review/tasks/{task['id']}"
            pages[task["key"]] = (where, client.get(where).text)
        where, text = pages["s1"]
        assert f'src="{where}/document"' in text
        assert re.search(r'<dt class="failed">total</dt>', text)
        assert "subtotal is total" in text  # the rule, beside the field
        assert '<dt class="failed">subtotal</dt>' not in text
        shown = client.get(f"{where}/document")
        assert shown.status_code == 200 and shown.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(shown.content)).width == 1000  # scaled down to read
        where2, text2 = pages["s2"]
        assert 'id="document"' not in text2  # the file is gone: no picture, no error
        assert client.get(f"{where2}/document").status_code == 404
