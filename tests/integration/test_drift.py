"""Drift monitoring on real data (Banking77 and non-banking questions), on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import EXAMPLE, counts_balance

import keel
from keel.monitor import build_reference, drift_report, load_reference, render_html
from keel.store import Store

DATA = EXAMPLE / "data"
WORKFLOW = EXAMPLE / "workflow.py"


def _subset(path: Path, out: Path, keep) -> Path:  # type: ignore[no-untyped-def]
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    picked = [r for i, r in enumerate(rows) if keep(i, r)]
    with out.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(picked)
    return out


@pytest.mark.slow
def test_banking77_train_vs_test_is_not_drift_and_ood_questions_are(
    demo_env: Path, store: Store, tmp_path: Path
) -> None:
    profile = build_reference(
        WORKFLOW, store=store, source=DATA / "train.csv", embedder="tfidf", sample_size=2048, seed=1
    )
    assert profile.rows == 10_003 and profile.kinds == {"input.text": "text"}

    test_run = keel.run(WORKFLOW, DATA / "test.csv", store=store)
    assert counts_balance(test_run)
    in_domain = drift_report(store, WORKFLOW, f"run:{test_run.run_id}")
    assert not in_domain.drifted, [c.summary for c in in_domain.alerts]

    ood_run = keel.run(WORKFLOW, DATA / "ood.csv", store=store)
    assert counts_balance(ood_run)
    report = drift_report(store, WORKFLOW, f"run:{ood_run.run_id}")
    flagged = {(c.field, c.test) for c in report.alerts}
    assert ("input.text", "ood_rate") in flagged
    assert ("input.text", "embedding_classifier") in flagged
    assert ("input.topic", "presence") in flagged  # a column production never had
    ood_alert = next(c for c in report.alerts if c.test == "ood_rate")
    assert ood_alert.examples and ood_alert.examples[0]["key"].startswith("ood-")

    # per record: out-of-distribution questions go to review far more often
    ood_rate = ood_run.review_reasons["out_of_distribution"] / ood_run.read
    test_rate = test_run.review_reasons["out_of_distribution"] / test_run.read
    assert ood_rate >= 0.5
    assert test_rate <= 0.03
    assert ood_rate >= 10 * test_rate
    (rec,) = keel.trace("ood-0001", store=store)
    task = rec["review_tasks"][0]
    if rec["decision"]["reason"] == "out_of_distribution":
        assert task["reason"] == "out_of_distribution"
        assert "out-of-distribution score" in task["detail"]


@pytest.mark.slow
def test_a_shifted_intent_mix_shows_output_drift(
    demo_env: Path, store: Store, tmp_path: Path
) -> None:
    even = _subset(DATA / "test.csv", tmp_path / "even.csv", lambda i, r: i % 2 == 0)
    odd = _subset(DATA / "test.csv", tmp_path / "odd.csv", lambda i, r: i % 2 == 1)
    first = keel.run(WORKFLOW, even, store=store)
    # named apart from "reference", so the workflow's DriftMonitor stays off in this test
    profile = build_reference(
        WORKFLOW,
        store=store,
        window=f"run:{first.run_id}",
        name="last-week",
        embedder="tfidf",
        sample_size=1024,
        seed=2,
    )
    assert {"output.intent", "output.confidence", "output.disposition"} <= set(profile.kinds)

    steady = keel.run(WORKFLOW, odd, store=store)
    calm = drift_report(store, WORKFLOW, f"run:{steady.run_id}", name="last-week")
    assert not {f for f in calm.drifted_fields() if f.startswith("output.")}

    # production shifts: card questions flood in, everything else thins out
    def card_heavy(i: int, r: dict[str, str]) -> bool:
        return i % 2 == 1 and (r["category"].startswith("card") or i % 10 == 1)

    shifted = _subset(DATA / "test.csv", tmp_path / "shifted.csv", card_heavy)
    rows = shifted.read_text(encoding="utf-8").replace("b77-", "shift-")
    shifted.write_text(rows, encoding="utf-8")
    moved = keel.run(WORKFLOW, shifted, store=store)
    assert counts_balance(moved) and moved.duplicates == 0
    report = drift_report(store, WORKFLOW, f"run:{moved.run_id}", name="last-week")
    intent = next(c for c in report.alerts if c.field == "output.intent")
    top, ref_share, cur_share = (
        intent.plot["labels"][0],
        intent.plot["reference"][0],
        intent.plot["current"][0],
    )
    assert top.startswith("card") and cur_share > ref_share
    assert "pp" in intent.summary
    assert report.rates["review_rate"]["reference"] > 0


def test_no_reference_is_a_clear_user_error(tmp_path: Path, demo_env: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"
    res = subprocess.run(
        [sys.executable, "-m", "keel", "drift", str(WORKFLOW), "--db", db, "--window", "all"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 1
    assert "no reference profile" in res.stderr and "keel drift reference" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_cli_reference_then_report_with_html(tmp_path: Path, demo_env: Path) -> None:
    db = f"sqlite:///{tmp_path / 'k.db'}"

    def keel_cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "keel", *args, "--db", db],
            capture_output=True,
            text=True,
            timeout=300,
        )

    built = keel_cli(
        "drift",
        "reference",
        str(WORKFLOW),
        "--from",
        str(DATA / "train.csv"),
        "--embedder",
        "tfidf",
        "--sample-size",
        "1500",
        "--json",
    )
    assert built.returncode == 0, built.stderr
    ref = json.loads(built.stdout)
    assert ref["rows"] == 10_003 and ref["text"]["input.text"]["ood_threshold"] > 0
    ran = keel_cli("run", str(WORKFLOW), str(DATA / "ood.csv"), "--json")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["review_reasons"]["out_of_distribution"] > 100  # of 325
    page = tmp_path / "drift.html"
    rep = keel_cli("drift", str(WORKFLOW), "--window", "all", "--html", str(page), "--json")
    assert rep.returncode == 0, rep.stderr
    out = json.loads(rep.stdout)
    assert out["drift"] is True and out["profile"]["id"] == ref["id"]
    html = page.read_text(encoding="utf-8")
    assert "<svg" in html and "ALERT" in html and "ood-0" in html
    listed = keel_cli("drift", "list", str(WORKFLOW), "--json")
    assert [p["id"] for p in json.loads(listed.stdout)] == [ref["id"]]
    failing = keel_cli("drift", str(WORKFLOW), "--window", "all", "--fail-on-drift")
    assert failing.returncode == 3 and "DRIFT" in failing.stdout


def test_profile_saved_in_the_store_loads_back(store: Store, tmp_path: Path) -> None:
    from tests._workflows import make, write_csv

    src = write_csv(
        tmp_path / "in.csv",
        [(f"k{i}", f"message number {i % 37} about the weather") for i in range(300)],
    )
    wf = make()
    keel.run(wf, src, store=store)
    built = build_reference(wf, store=store, window="all", embedder="tfidf", seed=0)
    loaded = load_reference(store, "tickets")
    assert loaded is not None and loaded.id == built.id
    assert loaded.categories["output.label"] == built.categories["output.label"]
    report = drift_report(store, wf, "all")
    assert not report.drifted
    assert "<svg" in render_html(report)
