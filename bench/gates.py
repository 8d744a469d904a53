"""`keel gate` on a large store: the readiness report must answer in seconds however many
records were decided (its evidence queries read indexed or small tables).

    python bench/gates.py [--records 1000000] [--repeats 3]

Fills a SQLite store with ``--records`` decided records of a no-op workflow (`keel run`, not
timed), then times the report in-process and `keel gate` as a command (a new process each
time, start-up included). Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)

WORKFLOW = ticket_workflow("gated", policy="keel.Policy(threshold=0.5)",
                           extra="gates=keel.Gates(),")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    import keel
    from keel import gates

    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        wf_path = d / "workflow.py"
        wf_path.write_text(WORKFLOW)
        rows = d / "rows.csv"
        with rows.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "text"])
            for i in range(args.records):
                w.writerow([f"r{i}", "where is my card"])
        db = f"sqlite:///{d / 'big.db'}"
        t0 = time.perf_counter()
        summary = keel.run(wf_path, rows, db=db)
        fill = time.perf_counter() - t0
        wf = keel.load_workflow(wf_path)
        store = keel.Store.open(db)
        inproc = []
        try:
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                rep = gates.report(wf, store)
                inproc.append(time.perf_counter() - t0)
        finally:
            store.close()
        cli = []
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = subprocess.run([sys.executable, "-m", "keel", "gate", str(wf_path), "--db", db,
                                  "--json"], capture_output=True, text=True, env=env)
            cli.append(time.perf_counter() - t0)
            assert out.returncode in (0, 3), out.stderr
        print(json.dumps({"measure": "gate_report", "records": summary.read,
                          "fill_s": round(fill, 1),
                          "in_process_s": round(statistics.median(inproc), 3),
                          "command_s": round(statistics.median(cli), 3),
                          "runs_command_s": [round(x, 3) for x in cli],
                          "criteria": len(rep.verdicts)}), flush=True)


if __name__ == "__main__":
    main()
