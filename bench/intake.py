"""Invoice intake: keel's own share of the time per document, beside the same OCR and
extraction in a plain loop.

    python bench/intake.py [--docs 16] [--repeats 3]

Generates ``--docs`` good invoices once (examples/invoice_intake/generate.py), then, runs
interleaved (plain, keel, plain, keel, ...):

- plain: a ThreadPoolExecutor with one thread per core maps the documents through the example's
  Tesseract reader and rules extractor, and validates the output contract: what a user would
  write without keel.
- keel: ``keel.run`` of examples/invoice_intake/workflow.py on a fresh SQLite store (both steps
  checkpointed, the trail, routing, the decisions).

The store is opened (created, migrated) before the clock starts, as in production. Tesseract
runs in child processes, so its CPU time is counted apart (``children``) from the
Python process's own. keel's own cost per document is keel's process CPU minus the plain
loop's, and its share is that over Tesseract's CPU per document: a figure the load other
processes put on the machine moves much less than wall-clock time (also reported). Medians of
``--repeats``; one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "invoice_intake"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))


def _clock() -> tuple[float, float, float]:
    t = os.times()
    return time.perf_counter(), t.user + t.system, t.children_user + t.children_system


def _since(start: tuple[float, float, float], n: int) -> dict[str, float]:
    wall, own, kids = (b - a for a, b in zip(start, _clock(), strict=True))
    return {"wall_ms_per_doc": 1000 * wall / n, "python_cpu_ms_per_doc": 1000 * own / n,
            "tesseract_cpu_ms_per_doc": 1000 * kids / n}


def plain(docs: list[dict[str, Any]], wf: Any) -> dict[str, float]:
    from ocr import TesseractOCR, cores, problem
    from workflow import Document

    reader = TesseractOCR(calls_log="")
    ocr_contract = wf.planned_steps[0].contract
    out_contract = wf.output_contract
    extract = wf.planned_steps[1].model.fn

    def one(doc: dict[str, Any]) -> Any:
        if problem(doc["path"]) is not None:  # a file that cannot be read is set aside
            return None
        pred = reader.read(Document(**doc))
        text, _ = ocr_contract.validate(pred.output)
        if text is None:
            return None
        try:
            return out_contract.validate(extract(text).output)[0]
        except Exception:  # a page that is no invoice: the plain loop moves on
            return None

    problem.cache_clear()
    start = _clock()
    with ThreadPoolExecutor(max_workers=cores()) as pool:
        list(pool.map(one, docs))
    return _since(start, len(docs))


def with_keel(listing: Path, n: int) -> dict[str, float]:
    from ocr import cores

    import keel

    with tempfile.TemporaryDirectory() as tmp:
        wf = keel.load_workflow(EXAMPLE / "workflow.py")
        start = _clock()
        summary = keel.run(wf, listing, db=str(Path(tmp) / "k.db"), batch_size=2 * cores())
        out = _since(start, n)
    assert summary.decided == n
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import generate

    import keel

    folder = Path(tempfile.mkdtemp(prefix="keel-intake-bench-"))
    listing = generate.generate(folder, args.docs, seed=3, kinds=["invoice"] * args.docs)
    docs = [json.loads(line) for line in listing.read_text().splitlines()]
    wf = keel.load_workflow(EXAMPLE / "workflow.py")
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "keel": []}
    for _ in range(args.repeats):
        runs["plain"].append(plain(docs, wf))
        runs["keel"].append(with_keel(listing, len(docs)))
    med = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]}
           for name, rs in runs.items()}
    for name, m in med.items():
        print(json.dumps({"measure": f"intake_{name}", "docs": len(docs),
                          "repeats": args.repeats, **{k: round(v, 2) for k, v in m.items()}}))
    own = med["keel"]["python_cpu_ms_per_doc"] - med["plain"]["python_cpu_ms_per_doc"]
    ocr = med["plain"]["tesseract_cpu_ms_per_doc"]
    print(json.dumps({
        "measure": "intake_keel_share", "docs": len(docs), "cores": os.cpu_count(),
        "keel_own_cpu_ms_per_doc": round(own, 2), "tesseract_cpu_ms_per_doc": round(ocr, 2),
        "keel_share_of_ocr": round(own / ocr, 4) if ocr else None,
        "wall_ratio_keel_to_plain": round(med["keel"]["wall_ms_per_doc"]
                                          / med["plain"]["wall_ms_per_doc"], 3)}))


if __name__ == "__main__":
    main()
