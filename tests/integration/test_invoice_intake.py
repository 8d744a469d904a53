"""examples/invoice_intake with real Tesseract: the demo end to end (small), every kind of bad
document ending in quarantine or review with a reason a person can act on, and a run killed
with SIGKILL mid-way that resumes without OCRing any document twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import keel
from keel.store.queries import decisions_by_key

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "invoice_intake"
SRC = Path(__file__).resolve().parents[2] / "src"
BAD = ["blank", "receipt", "cut_off", "corrupt", "encrypted_pdf", "huge_image"]

# Tesseract on a busy CI machine: a few seconds a page
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def _generate(folder: Path, count: int, kinds: list[str] | None = None, seed: int = 11) -> Path:
    sys.path.insert(0, str(EXAMPLE))
    try:
        import generate
    finally:
        sys.path.remove(str(EXAMPLE))
    return Path(generate.generate(folder, count, seed=seed, kinds=kinds))


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            **extra}


def test_demo_reads_checks_and_scores_invoices(tmp_path: Path) -> None:
    """`keel demo invoice_intake --json` on 36 generated documents: every one ends in exactly
    one disposition, the invoices it decides automatically are right field by field, and
    each document is OCRed once (the ones quarantined before OCR never)."""
    out = subprocess.run(
        [sys.executable, "-m", "keel", "demo", "invoice_intake", "--count", "36", "--json",
         "--docs", str(tmp_path / "docs"), "--db", str(tmp_path / "k.db")],
        capture_output=True, text=True, env=_env(), timeout=900, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert got["documents_read"] == 36 == sum(got["dispositions"].values())
    assert got["ocr_calls"] == 36 - got["dispositions"]["quarantined"]
    assert got["good_decided_automatically"] >= 1
    assert got["field_accuracy_automatic"] >= 0.99
    assert got["dispositions"]["failed"] == 0


def test_every_bad_document_ends_in_quarantine_or_review(tmp_path: Path) -> None:
    listing = _generate(tmp_path / "docs", len(BAD) + 1, kinds=[*BAD, "invoice"])
    store = keel.Store.open(str(tmp_path / "k.db"))
    try:
        summary = keel.run(EXAMPLE / "workflow.py", listing, store=store)
        decided = decisions_by_key(store, "invoice_intake")
        tasks = {r["key"]: r["review_tasks"] for r in
                 (keel.trace(k, store=store, raw=True)[0] for k in decided)}
    finally:
        store.close()
    assert summary.read == len(BAD) + 1 == summary.decided
    ends = {kind: decided[f"doc-{n:05d}"] for n, kind in enumerate(BAD, 1)}
    for kind in ("corrupt", "encrypted_pdf", "huge_image"):
        assert ends[kind]["disposition"] == "quarantined", (kind, ends[kind])
    assert "password-protected" in ends["encrypted_pdf"]["reason"]
    assert "rescan" in ends["huge_image"]["reason"]
    assert "send it again" in ends["corrupt"]["reason"]
    for kind in ("blank", "receipt", "cut_off"):
        assert ends[kind]["disposition"] == "in_review", (kind, ends[kind])
    detail = {kind: tasks[f"doc-{n:05d}"][0]["detail"] for n, kind in enumerate(BAD, 1)
              if kind in ("blank", "receipt", "cut_off")}
    assert "step ocr" in detail["blank"] and "no text found" in detail["blank"]
    assert "step extract" in detail["receipt"] and "not an invoice" in detail["receipt"]
    assert "step extract" in detail["cut_off"]  # a field the cut page lacks, or its rule


KILLING_RUN = textwrap.dedent("""
    import os, signal, sys
    import keel
    wf = keel.load_workflow(sys.argv[1])
    extract = wf.planned_steps[1].model
    rules, seen = extract.fn, []
    def dying(ocr):  # the third document's extraction never finishes: the process is killed
        seen.append(1)
        if len(seen) == 3:
            os.kill(os.getpid(), signal.SIGKILL)
        return rules(ocr)
    extract.fn = dying
    keel.run(wf, sys.argv[2], db=sys.argv[3], batch_size=2)
""")


def test_a_killed_run_resumes_without_ocring_twice(tmp_path: Path) -> None:
    """SIGKILL while the extraction step runs (the OCR answers of the batch are already
    checkpointed); the next run OCRs only what was never read: each document once, and each
    document ends in exactly one disposition."""
    listing = _generate(tmp_path / "docs", 8, kinds=["invoice"] * 7 + ["blank"])
    calls = tmp_path / "ocr_calls.txt"
    db = str(tmp_path / "k.db")
    script = tmp_path / "killing_run.py"
    script.write_text(KILLING_RUN)
    env = _env(INTAKE_OCR_CALLS=str(calls))
    first = subprocess.run([sys.executable, str(script), str(EXAMPLE / "workflow.py"),
                            str(listing), db], env=env, capture_output=True, text=True,
                           timeout=600, check=False)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    read_before = calls.read_text().split()
    assert 0 < len(read_before) < 8
    second = subprocess.run([sys.executable, "-m", "keel", "run", str(EXAMPLE / "workflow.py"),
                             str(listing), "--db", db], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert second.returncode == 0, second.stderr[-2000:]
    read = Counter(calls.read_text().split())
    assert sorted(read) == [f"doc-{n:05d}" for n in range(1, 9)]
    assert max(read.values()) == 1  # no document OCRed twice
    store = keel.Store.open(db)
    try:
        decided = decisions_by_key(store, "invoice_intake")
        used: list[Any] = [e for k in decided for e in keel.trace(k, store=store)[0]["events"]
                           if e["kind"] == "checkpoint_used"]
    finally:
        store.close()
    assert sorted(decided) == sorted(read)
    assert used, "the resumed run used checkpointed OCR answers"


def test_an_llm_extracts_first_and_the_rules_answer_when_it_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With INVOICE_LLM_URL set, the extraction step asks the OpenAI-compatible server for
    the Invoice JSON schema; when the server refuses a document, the rules decide it
    (``fallback``), and the trail says which link of the step answered."""
    from tests._fake_llm import completion
    from tests._loopback import Reply, Request, serve

    listing = _generate(tmp_path / "docs", 2, kinds=["invoice", "invoice"])
    truth = [json.loads(line) for line in (tmp_path / "docs" / "truth.jsonl").read_text()
             .splitlines()]
    first = truth[0]["invoice"]

    def server(req: Request) -> Reply:
        prompt = req.json()["messages"][-1]["content"]
        if first["invoice_number"] in prompt:
            return Reply(200, completion(json.dumps(first)))
        return Reply(400, {"error": {"message": "this prompt is not allowed"}})

    with serve(server) as (url, seen):
        monkeypatch.setenv("INVOICE_LLM_URL", url)
        wf = keel.load_workflow(EXAMPLE / "workflow.py")
        assert [m.name for m in (wf.planned_steps[1].model, *wf.planned_steps[1].fallbacks)] \
            == ["llm-extract", "rules-extract"]
        store = keel.Store.open(str(tmp_path / "k.db"))
        try:
            keel.run(wf, listing, store=store)
            one, two = (keel.trace(f"doc-{n:05d}", store=store, raw=True)[0] for n in (1, 2))
        finally:
            store.close()
    assert seen and "response_format" in seen[0].json()
    answered = {p["step"] for p in one["predictions"]}
    assert answered == {"ocr", "extract"}  # the LLM's answer passed the contract
    assert one["decision"]["disposition"] in ("accepted", "in_review")
    assert one["decision"]["output"]["invoice_number"] == first["invoice_number"]
    assert "extract/fallback:1" in {p["step"] for p in two["predictions"]}
    assert any(e["kind"] == "fallback_used" for e in two["events"])


def test_an_invoice_decided_in_an_earlier_run_is_a_duplicate_in_the_next(tmp_path: Path) -> None:
    """Two runs into one store over overlapping invoices: the second run's copies of invoices
    the first run decided go to review naming invoice_number and the rule (never accepted);
    its new invoices are decided as if nothing came before."""
    first = _generate(tmp_path / "a", 4, kinds=["invoice"] * 4)
    db = str(tmp_path / "k.db")
    store = keel.Store.open(db)
    try:
        keel.run(EXAMPLE / "workflow.py", first, store=store)
        decided = {k: v for k, v in decisions_by_key(store, "invoice_intake").items()
                   if v["disposition"] in ("accepted", "reviewed", "fallback")}
        assert decided, "the first run decided some invoices by itself"
        fresh = [json.loads(x) for x in _generate(tmp_path / "b", 3, kinds=["invoice"] * 3,
                                                  seed=12).read_text().splitlines()]
        rows = [json.loads(x) for x in first.read_text().splitlines()]
        again = [{**r, "id": f"again-{r['id']}"} for r in rows if r["id"] in decided]
        second = tmp_path / "second.jsonl"
        second.write_text("".join(json.dumps(r) + "\n" for r in
                                  [*again, *({**r, "id": f"new-{r['id']}"} for r in fresh)]))
        keel.run(EXAMPLE / "workflow.py", second, store=store)
        after = decisions_by_key(store, "invoice_intake")
        tasks = {r["key"]: r["review_tasks"] for r in
                 (keel.trace(k, store=store, raw=True)[0] for k in after)}
    finally:
        store.close()
    for row in again:
        assert after[row["id"]]["disposition"] == "in_review", after[row["id"]]
        detail = tasks[row["id"]][0]["detail"]
        assert "invoice_number" in detail and "no duplicate invoice number" in detail
        assert row["id"].removeprefix("again-") in detail  # the record already holding it
    new = {f"new-{r['id']}" for r in fresh}
    assert not any("duplicate" in (t[0]["detail"] or "") for k in new for t in [tasks[k]] if t)
    assert any(after[k]["disposition"] == "accepted" for k in new)
