"""A reviewer in a real browser (Debian's Chromium, headless): sign in, decide tasks with the
keyboard, watch the dashboard move. Screenshots land in test-artifacts/."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests._workflows import make
from tests.server._live import app_for, bearer, keys, live_server

import keel
from keel.server import Settings
from keel.server.ui import vendor_dir
from keel.store import Store

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CHROMIUM = os.environ.get("KEEL_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"


@pytest.fixture
def browser_page() -> Iterator[object]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is needed at {CHROMIUM} (.ci/run installs it with apt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(20000)
            yield page
        finally:
            browser.close()


def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


def test_reviewer_decides_with_the_keyboard_and_the_dashboard_moves(
        tmp_path: Path, browser_page: object) -> None:
    from playwright.sync_api import Page, expect

    assert vendor_dir() is not None, "Chart.js is installed from npm by .ci/run (npm ci)"
    page: Page = browser_page  # type: ignore[assignment]
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    k = keys(store)
    app = app_for(store, settings=Settings(dashboard_cache_s=0.5))
    try:
        with live_server(app) as url:
            sent = [{"id": "t-ok-1", "text": "card arrived fine"},
                    {"id": "t-ok-2", "text": "my card works now"},
                    {"id": "t-1", "text": "unsure: my card was charged twice"},
                    {"id": "t-2", "text": "unsure: where is my refund"},
                    {"id": "t-3", "text": "unsure: buy crypto now!!!"}]
            resp = httpx.post(f"{url}/v1/decisions", json={"records": sent},
                              headers=bearer(k["submitter"]))
            assert resp.json()["counts"] == {"accepted": 2, "in_review": 3}

            page.goto(f"{url}/ui/review")
            expect(page).to_have_url(re.compile(r"/login"))
            page.fill("#key", k["reviewer"])
            page.keyboard.press("Enter")
            expect(page.locator("h1")).to_have_text("Review inbox")
            expect(page.locator("main")).to_contain_text("3 waiting")
            _shot(page, "01-inbox")

            page.keyboard.press("Enter")  # start reviewing
            expect(page.locator("h1")).to_have_text("Why is this here?")
            expect(page.locator("#confidence")).to_have_text("30%")
            first = page.locator("#task").get_attribute("data-task")
            _shot(page, "02-task")
            page.keyboard.press("a")  # accept
            expect(page.locator("#task")).not_to_have_attribute("data-task", first or "")

            second = page.locator("#task").get_attribute("data-task")
            page.keyboard.press("c")  # correct: the form opens with the first field focused
            field = page.locator("#f-label")
            expect(field).to_be_focused()
            field.fill("refund_not_showing_up")
            _shot(page, "03-correct")
            page.keyboard.press("Enter")
            expect(page.locator("#task")).not_to_have_attribute("data-task", second or "")

            page.keyboard.press("r")  # reject, with a reason
            expect(page.locator("#reject-reason")).to_be_focused()
            page.keyboard.type("spam, not a customer")
            page.keyboard.press("Enter")
            expect(page.locator(".flash")).to_contain_text("Nothing left to review")

            tasks = httpx.get(f"{url}/v1/review/tasks?status=decided",
                              headers=bearer(k["admin"])).json()
            assert sorted(t["decision"] for t in tasks) == ["accept", "correct", "reject"]
            assert {t["decided_by"] for t in tasks} == {"alice"}

            page.goto(f"{url}/ui/dashboard")
            expect(page.locator("#t-decided")).to_have_text("5")
            expect(page.locator("#t-backlog")).to_have_text("0")
            assert page.evaluate("typeof Chart") == "function"
            assert page.evaluate("Chart.getChart('c-mix').data.datasets.length") == 6
            expect(page.locator("#t-ood")).to_have_text("0.0% (0)")
            expect(page.locator("#t-drift")).to_have_text("not monitored")
            expect(page.locator("#t-guarantee")).to_have_text("none (not calibrated)")
            expect(page.locator("#t-queue")).to_have_text("0 / 0 live")  # no keel worker here
            expect(page.locator("#t-budget")).to_have_text("no budget")
            more = [{"id": f"late-{i}", "text": f"hello number {i}"} for i in range(3)]
            more.append({"id": "late-unsure", "text": "unsure: is this a question"})
            httpx.post(f"{url}/v1/decisions", json={"records": more},
                       headers=bearer(k["submitter"]))
            expect(page.locator("#t-decided")).to_have_text("9")  # it refreshed by itself
            expect(page.locator("#t-backlog")).to_have_text("1")
            colours = page.evaluate(
                "Chart.getChart('c-backlog').data.datasets[0].backgroundColor")
            assert colours == ["#f79009"], colours  # low confidence, in colour (not black)
            _shot(page, "04-dashboard")

            page.goto(f"{url}/ui/records/t-2")
            expect(page.locator("h1")).to_have_text("Decided by a person.")
            expect(page.locator(".story")).to_contain_text("Sent to a person")
            _shot(page, "05-record")
    finally:
        store.close()


def test_the_dashboard_shows_spend_against_budget_net_value_and_the_projection(
        tmp_path: Path, browser_page: object) -> None:
    """A manager sees money on the dashboard: the day's budget spent, what automation nets a
    day, and what the declared target volume would cost a month (keel cost --project)."""
    from playwright.sync_api import Page, expect

    page: Page = browser_page  # type: ignore[assignment]
    store = Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    k = keys(store)
    wf = make(keel.FakeModel(lambda m: {"label": "x"}, confidence=0.95, name="llm"),
              cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=0.01)],
                             budgets=[keel.Budget("day", usd=0.05)], on_exhausted="review",
                             manual_handling_s=60, value_per_record_usd=0.5,
                             reviewer_usd_per_hour=30.0, review_s_per_task=120,
                             target_volume="50000/day"))
    app = app_for(store, workflow=wf, settings=Settings(dashboard_cache_s=0.5, cost_cache_s=0.5))
    try:
        with live_server(app) as url:
            sent = [{"id": f"m{n}", "text": "hello there"} for n in range(8)]
            httpx.post(f"{url}/v1/decisions", json={"records": sent},
                       headers=bearer(k["submitter"]))  # 5 fit the $0.05 budget, 3 to people
            page.goto(f"{url}/ui/dashboard")
            page.fill("#key", k["reviewer"])
            page.keyboard.press("Enter")
            day = page.locator("#o-budgets .budget[data-period=day]")
            expect(day.locator(".value")).to_have_text("$0.05 of $0.05")
            expect(day.locator(".muted")).to_contain_text("100.0% spent, 3 records turned away")
            expect(page.locator("#o-net")).to_have_text("$2.45")           # $2.50 - $0.05
            expect(page.locator("#o-net-parts")).to_have_text(
                "value $2.50 - model $0.05 - review $0.00 - errors unknown")
            # 30 x (50,000 x 5/8 x $0.50 value - $312.50 model - $18,750 review) a day
            expect(page.locator("#o-net-projected")).to_have_text(
                "projected: -$103,125 a month at 50,000/day")
            expect(page.locator("#o-proj-label")).to_contain_text("at 50,000/day")
            # 30 days x ($0.01 x 5/8 x 50,000 model + 625 h x $30 review) a day
            expect(page.locator("#o-proj-total")).to_have_text("$571,875")
            expect(page.locator("#o-proj-interval")).to_contain_text("(95%)")
            expect(page.locator("#o-proj-hours")).to_have_text("625 h")    # 3/8 x 50,000 x 2 min
            expect(page.locator("#o-proj-reviewers")).to_contain_text("105 (")  # 6 h a day each
            more = [{"id": f"late{n}", "text": "hello there"} for n in range(4)]
            httpx.post(f"{url}/v1/decisions", json={"records": more},
                       headers=bearer(k["submitter"]))
            expect(day.locator(".muted")).to_contain_text("7 records turned away")  # it moved
            _shot(page, "06-dashboard-money")
    finally:
        store.close()
