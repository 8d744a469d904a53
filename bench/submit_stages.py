"""Where a row's time goes in `keel submit` into PostgreSQL: each stage of the submit path
timed on its own, one after another in one thread, per chunk of 2,000 rows.

    python bench/submit_stages.py [--rows 600000] [--repeats 3]

The stages are the ones `keel submit` runs (read the CSV, admit: ids, deduplication and the
`received` event; look the keys up in the store; validate the input contract; build the
record rows and their digests; build the audit segments; the COPYs of records, segments and
queue rows, with the ledger block, in one transaction per chunk). `keel submit` itself
overlaps the writing of one chunk with the reading of the next, so its rate is above the
sum's. Fresh PostgreSQL schema per repeat. Prints one JSON line per repeat (microseconds
per row by stage) and a summary line with the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workers import WORKFLOW, schema, write_csv  # the same workload

CHUNK = 2000
STAGES = ("read csv", "admit", "lookup keys", "validate", "record rows + digests",
          "audit segments", "COPY records", "COPY segments + ledger block",
          "COPY queue + commit")


def one_run(wf_path: Path, src: Path, rows: int) -> dict[str, float]:
    import keel
    from keel import _json
    from keel.runtime._api import _workflow
    from keel.runtime._speed import young_gc_only
    from keel.sources import read_rows
    from keel.stages import Admitter, InputValidator
    from keel.store._ledger import RowDigests
    from keel.store._store import _QUEUE_COLS, _RECORD_COLS, _record_rows, segment_rows

    wf = _workflow(wf_path)
    spent = dict.fromkeys(STAGES, 0.0)
    with schema() as db, young_gc_only():
        keel.submit(wf, write_csv(src.parent / "warm.csv", 1, "warm"), db=db)  # the schema
        store = keel.Store.open(db)
        try:
            admit = Admitter(wf.key, lambda keys: {}, _json.dumps)
            validate = InputValidator(wf.input_contract)
            source = iter(read_rows(src))
            while True:
                marks = [time.perf_counter()]
                batch = list(islice(source, CHUNK))
                marks.append(time.perf_counter())
                if not batch:
                    break
                items = admit(batch).items
                marks.append(time.perf_counter())
                store.lookup(wf.name, [i.key for i in items])
                marks.append(time.perf_counter())
                validate(items)
                marks.append(time.perf_counter())
                now = time.time()
                records = _record_rows(wf.name, "bench", items, now)
                digests = RowDigests().add_records(records)
                marks.append(time.perf_counter())
                segments = segment_rows(wf.name, items, digests)
                marks.append(time.perf_counter())
                with store.tx() as conn:
                    store._insert_rows(conn, "records", _RECORD_COLS, records)
                    marks.append(time.perf_counter())
                    store._insert_segments(conn, segments)
                    marks.append(time.perf_counter())
                    store._insert_rows(conn, "queue", _QUEUE_COLS, [
                        (i.record_id, wf.name, 0, now, "pending", None, None, 0) for i in items])
                marks.append(time.perf_counter())
                for name, start, end in zip(STAGES, marks, marks[1:], strict=False):
                    spent[name] += end - start
        finally:
            store.close()
    return {name: s / rows * 1e6 for name, s in spent.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=600_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    found: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wf = tmp / "workflow.py"
        wf.write_text(WORKFLOW.format(latency=0.05))
        src = write_csv(tmp / "submit.csv", args.rows, "s")
        for rep in range(args.repeats):
            us = one_run(wf, src, args.rows)
            found.append(us)
            print(json.dumps({"bench": "submit stages", "repeat": rep, "rows": args.rows,
                              "us_per_row": us, "total_us_per_row": sum(us.values())}),
                  flush=True)
    med = {name: statistics.median(f[name] for f in found) for name in STAGES}
    total = sum(med.values())
    print(json.dumps({"bench": "submit stages summary", "rows": args.rows,
                      "median_us_per_row": med, "total_us_per_row": total,
                      "rows_per_s_one_thread": 1e6 / total}), flush=True)


if __name__ == "__main__":
    main()
