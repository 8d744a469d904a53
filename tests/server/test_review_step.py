"""A review task on a multi-step workflow (the invoice example's extraction rules and contract,
OCR replaced by text the test gives): the task names the step that was unsure or invalid, the
correction form is that step's output contract pre-filled with its answer, a correction that
breaks the contract is refused naming the field, a correction of the OCR step runs extraction
again, and the audit trail keeps who corrected what."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw
from pydantic import BaseModel
from tests.server._live import app_for, bearer, keys, live_server
from tests.server.test_browser import _shot, browser_page  # noqa: F401 - the fixture

import keel
from keel.cli import main
from keel.server.ui._forms import story
from keel.store import Store, verify_trail

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoice_intake"

TEXT = """From: Acme Supplies
Invoice INV-00042
Date 2026-01-05
Currency: USD
Widget 2 5.00 10.00
Gadget 8 5.00 40.00
Subtotal 50.00
Tax 10% 5.00
Total {total}"""

#: what the "OCR" reads on each scan: (text, confidence)
PAGES = {"misread": (TEXT.format(total="55.80"), 0.97),  # 50.00 + 5.00 is not 55.80
         "smudged": (TEXT.format(total="5?.00").replace("INV-00042", "INV-00043"), 0.30)}


class Scan(BaseModel):
    id: str
    path: str


class Line(BaseModel):
    text: str
    confs: list[float]


class OcrText(BaseModel):
    pages: int
    words: int
    lines: list[Line]


def ocr_of(text: str) -> dict[str, Any]:
    lines = [{"text": t, "confs": [96.0] * len(t.split())} for t in text.splitlines()]
    return {"pages": 1, "words": sum(len(x["confs"]) for x in lines), "lines": lines}


def fake_ocr(scan: Scan) -> tuple[dict[str, Any], float]:
    text, conf = PAGES[scan.id]
    return ocr_of(text), conf


def load_extract() -> Any:
    """The invoice example's extraction module (its rules, Invoice and checks)."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import extract as module
    finally:
        sys.path.remove(str(EXAMPLE))
    return module


@pytest.fixture(scope="module")
def extract() -> Iterator[Any]:
    yield load_extract()


def workflow(extract: Any) -> keel.Workflow:
    checks = [keel.check("subtotal plus tax is total", extract.subtotal_plus_tax_is_total,
                         field="total", message="subtotal + tax is not the total (to the cent)"),
              keel.check("lines sum to subtotal", extract.lines_sum_to_subtotal,
                         field="subtotal", message="the line amounts do not sum to the subtotal")]
    return keel.Workflow(
        name="intake", input=Scan, output=extract.Invoice, key="id",
        steps=[keel.Step("ocr", keel.FunctionModel(fake_ocr), output=OcrText, threshold=0.8),
               keel.Step("extract", keel.FunctionModel(extract.rules_extract))],
        output_checks=checks, policy=keel.Policy(threshold=0.5, audit_rate=0.0),
        owners=keel.Owners(business="ap@example.com", support="ml@example.com"))


def scans(folder: Path) -> list[dict[str, str]]:
    out = []
    for name in PAGES:
        path = folder / f"{name}.png"
        img = Image.new("L", (800, 1000), 255)
        ImageDraw.Draw(img).text((40, 40), PAGES[name][0], fill=0)
        img.save(path)
        out.append({"id": name, "path": str(path)})
    return out


def _tasks(client: TestClient, key: str) -> dict[str, dict[str, Any]]:
    listed = client.get("/v1/review/tasks", headers=bearer(key)).json()
    return {t["key"]: client.get(f"/v1/review/tasks/{t['id']}", headers=bearer(key)).json()
            for t in listed}


def test_a_reviewer_corrects_the_extraction_step_and_the_ocr_step(
        store: Store, tmp_path: Path, extract: Any) -> None:
    k = keys(store)
    rev = bearer(k["reviewer"])
    with TestClient(app_for(store, workflow=workflow(extract))) as client:
        sent = client.post("/v1/decisions", headers=bearer(k["submitter"]),
                           json={"records": scans(tmp_path)})
        assert sent.json()["counts"] == {"in_review": 2}, sent.text
        tasks = _tasks(client, k["reviewer"])

        # the extraction step broke a rule: the task is about it, its form is the Invoice
        bad = tasks["misread"]
        assert bad["step"]["name"] == "extract" and bad["step"]["last"]
        schema = bad["step"]["schema"]
        assert "total" in schema["properties"] and "total" in schema["required"]
        assert bad["model_output"]["total"] == "55.80"  # pre-filled with the step's answer
        decide = f"/v1/review/tasks/{bad['id']}/decision"
        fixed = {**bad["model_output"], "total": "55.00"}
        for wrong in ("55.50", "fifty-five"):  # a broken rule, then not a number
            refused = client.post(decide, headers=rev, json={
                "decision": "correct", "step": "extract", "output": {**fixed, "total": wrong}})
            assert refused.status_code == 422, refused.text
            error = refused.json()["error"]
            assert error["code"] == "keel.review.invalid"
            assert error["message"].startswith("the corrected output breaks the output "
                                               "contract: total: ")
            assert [p["field"] for p in error["problems"]] == ["total"]
        wrong_step = client.post(decide, headers=rev, json={
            "decision": "correct", "step": "ocr", "output": fixed})
        assert wrong_step.status_code == 422 and "about step 'extract'" in wrong_step.text
        done = client.post(decide, headers=rev, json={
            "decision": "correct", "step": "extract", "output": fixed})
        assert done.status_code == 200, done.text

        # the OCR step was unsure: its form is the OCR text; extraction runs again from it
        unsure = tasks["smudged"]
        assert unsure["step"]["name"] == "ocr" and not unsure["step"]["last"]
        assert set(unsure["step"]["schema"]["properties"]) == {"pages", "words", "lines"}
        lines = unsure["model_output"]["lines"]
        assert lines[-1]["text"] == "Total 5?.00"
        decide = f"/v1/review/tasks/{unsure['id']}/decision"
        still_bad = client.post(decide, headers=rev, json={  # extraction then breaks a rule
            "decision": "correct",
            "output": {**unsure["model_output"], "lines": [*lines[:-1], {
                "text": "Total 56.00", "confs": [96.0, 96.0]}]}})
        assert still_bad.status_code == 422
        assert "step extract gives no answer within its contract" in still_bad.text
        assert "subtotal + tax is not the total" in still_bad.text
        masked = client.post(decide, headers=rev, json={  # a value the page showed masked
            "decision": "correct",
            "output": {**unsure["model_output"], "lines": [*lines[:-1], {
                "text": "Total [PHONE]", "confs": [96.0, 96.0]}]}})
        assert masked.status_code == 422 and "still holds [PHONE]" in masked.text
        read_right = {**unsure["model_output"],
                      "lines": [*lines[:-1], {"text": "Total 55.00", "confs": [96.0, 96.0]}]}
        done_ocr = client.post(decide, headers=rev, json={"decision": "correct", "step": "ocr",
                                                            "output": read_right})
        assert done_ocr.status_code == 200, done_ocr.text

    for key, number in (("misread", "INV-00042"), ("smudged", "INV-00043")):
        rec = keel.trace(key, store=store)[0]
        assert rec["decision"]["disposition"] == "reviewed"
        assert rec["decision"]["output"]["total"] == "55.00"
        assert rec["decision"]["output"]["invoice_number"] == number
        (ev,) = [e for e in rec["events"] if e["kind"] == "reviewed"]
        assert ev["actor"] == "alice" and ev["detail"]["decision"] == "correct"
    ev = next(e for e in keel.trace("smudged", store=store)[0]["events"]
              if e["kind"] == "reviewed")
    assert ev["detail"]["step"] == "ocr"
    assert ev["detail"]["step_output"]["lines"][-1]["text"] == "Total 55.00"
    assert [r["step"] for r in ev["detail"]["ran_again"]] == ["extract"]
    (said,) = [x["text"] for x in story(keel.trace("smudged", store=store)[0])
               if x["kind"] == "reviewed"]
    assert said.startswith("alice corrected step ocr's answer; extract ran again from it")
    assert verify_trail(store=store).ok


def test_the_task_page_form_is_the_step_contract(store: Store, tmp_path: Path,
                                                 extract: Any) -> None:
    k = keys(store)
    with TestClient(app_for(store, workflow=workflow(extract))) as client:
        client.post("/v1/decisions", headers=bearer(k["submitter"]),
                    json={"records": scans(tmp_path)})
        csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
        assert csrf
        client.post("/login", data={"key": k["reviewer"], "csrf": csrf.group(1)})
        tasks = _tasks(client, k["reviewer"])
        ocr_page = client.get(f"/ui/review/tasks/{tasks['smudged']['id']}").text
        extract_page = client.get(f"/ui/review/tasks/{tasks['misread']['id']}").text
    assert 'data-step="ocr"' in ocr_page and "Correct step ocr's answer" in ocr_page
    assert 'id="f-lines"' in ocr_page and 'id="f-total"' not in ocr_page
    assert 'data-step="extract"' in extract_page
    assert re.search(r'<input id="f-total" name="total" data-kind="decimal" required[^>]*'
                     r'value="55.80"', extract_page)
    assert '<dt class="failed">total</dt>' in extract_page


@pytest.mark.browser
@pytest.mark.slow
def test_a_reviewer_corrects_the_extracted_total_in_the_browser(
        tmp_path: Path, browser_page: object,  # noqa: F811 - the fixture imported above
        extract: Any) -> None:
    """Headless Chromium: the extraction step's form, pre-filled with its answer; a total that
    breaks the rule is refused naming total (the field marked); the right total is saved and
    the record ends reviewed with it."""
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    k = keys(store)
    try:
        with live_server(app_for(store, workflow=workflow(extract))) as url:
            sent = httpx.post(f"{url}/v1/decisions", headers=bearer(k["submitter"]),
                              json={"records": scans(tmp_path)[:1]})
            assert sent.json()["counts"] == {"in_review": 1}
            page.goto(f"{url}/ui/review")
            page.fill("#key", k["reviewer"])
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("Review inbox")
            page.keyboard.press("Enter")  # start reviewing
            expect(page.locator("#step")).to_contain_text("About step extract (2 of 2)")
            expect(page.locator("#document")).to_be_visible()
            task_id = page.locator("#task").get_attribute("data-task")
            page.keyboard.press("c")
            expect(page.locator("#correct-form h2")).to_have_text("Correct step extract's answer")
            total = page.locator("#f-total")
            expect(total).to_have_value("55.80")
            expect(page.locator("#f-invoice_number")).to_have_value("INV-00042")
            total.fill("55.50")
            total.press("Enter")
            expect(page.locator("#problem")).to_contain_text(
                "the corrected output breaks the output contract: total: subtotal + tax")
            expect(total).to_have_class(re.compile(r"\bfailed\b"))
            _shot(page, "10-step-correction-refused")
            total.fill("55.00")
            total.press("Enter")
            expect(page.locator(".flash")).to_contain_text("Nothing left to review")
            decided = httpx.get(f"{url}/v1/review/tasks/{task_id}",
                                headers=bearer(k["admin"])).json()
            assert decided["status"] == "decided" and decided["decided_by"] == "alice"
        rec = keel.trace("misread", store=store)[0]
        assert rec["decision"]["disposition"] == "reviewed"
        assert rec["decision"]["output"]["total"] == "55.00"
        assert verify_trail(store=store).ok
    finally:
        store.close()


def test_the_cli_corrects_the_step_the_task_names(tmp_path: Path, db_url: str,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "intake_flow.py"
    path.write_text("from tests.server.test_review_step import load_extract, workflow\n"
                    "workflow = workflow(load_extract())\n")
    keel.run(path, scans(tmp_path)[:1], db=db_url)
    capsys.readouterr()
    assert main(["review", "list", "--json", "--db", db_url]) == 0
    (task,) = json.loads(capsys.readouterr().out)
    assert main(["review", "show", task["id"], "--db", db_url]) == 0
    assert "extract (2 of 2)" in capsys.readouterr().out
    assert main(["review", "show", task["id"], "--json", "--db", db_url]) == 0
    shown = json.loads(capsys.readouterr().out)
    fixed = {**shown["model_output"], "total": "55.00"}
    assert main(["review", "decide", task["id"], "--step", "ocr", "--correct",
                 json.dumps(fixed), "--reviewer", "dana", "--db", db_url]) == 1
    assert "about step 'extract'" in capsys.readouterr().err
    assert main(["review", "decide", task["id"], "--step", "extract", "--correct",
                 json.dumps({**fixed, "total": "55.5"}), "--reviewer", "dana",
                 "--db", db_url]) == 1
    assert "total: subtotal + tax is not the total" in capsys.readouterr().err
    assert main(["review", "decide", task["id"], "--step", "extract", "--correct",
                 json.dumps(fixed), "--reviewer", "dana", "--db", db_url]) == 0
    rec = keel.trace("misread", db=db_url)[0]
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["output"]["total"] == "55.00"
    assert rec["events"][-1]["actor"] == "dana"
