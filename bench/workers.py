"""Workers on one PostgreSQL store: how throughput grows with workers and with concurrency,
and how fast `keel submit` fills the queue.

    python bench/workers.py [--seconds 8] [--repeats 3] [--submit-rows 200000]

1. A model that awaits 50 ms per record (an LLM-like call). Measured as a user would see it:
   the workers are started and idle, the records are submitted, and the clock runs until the
   queue is empty. Configurations, interleaved in each repeat: 1 worker at concurrency 1,
   4 workers at concurrency 1, 1 worker at concurrency 32. The record counts are sized so
   that each configuration would take ``--seconds`` at its ideal rate.
2. `keel submit` of ``--submit-rows`` CSV rows (a new process: start-up included), with its
   peak memory, beside a plain psycopg COPY of the same file into a two-column table (the
   floor: no validation, no deduplication, no audit).

Every run uses a fresh PostgreSQL schema (dropped afterwards). Prints one JSON line per
measurement and a summary line with the medians and ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)

PG = os.environ.get("KEEL_TEST_POSTGRES", "postgresql+psycopg://root@127.0.0.1:5432/test")
LATENCY_S = 0.05

WORKFLOW = ticket_workflow(
    "tickets", model='keel.FunctionModel(slow, name="slow-50ms")',
    policy="keel.Policy(threshold=0.5)", before="""
import asyncio

async def slow(t: Ticket):
    await asyncio.sleep({latency})
    return {{"intent": "card_arrival"}}, 0.99
""")


@contextmanager
def schema() -> Iterator[str]:
    """A database URL whose search_path is a fresh schema."""
    from sqlalchemy import create_engine, text

    name = f"keel_bench_{uuid.uuid4().hex[:10]}"
    engine = create_engine(PG)
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{name}"'))
    try:
        sep = "&" if "?" in PG else "?"
        yield f"{PG}{sep}options=-csearch_path%3D{name}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{name}" CASCADE'))
        engine.dispose()


def write_csv(path: Path, n: int, tag: str) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"{tag}{i}", f"where is my new card, order {i}"])
    return path


def keel_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "keel", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "src")}


def depth(db: str) -> tuple[int, int]:
    import keel
    from keel.store import queue

    store = keel.Store.open(db)
    try:
        d = queue.depth(store, "tickets")
        live = sum(1 for w in queue.workers(store, "tickets") if w["alive"])
    finally:
        store.close()
    return int(d["pending"]) + int(d["leased"]), live


def workers_run(wf: Path, workers: int, concurrency: int, n: int, tmp: Path) -> dict[str, float]:
    """Start idle workers, submit ``n`` records, time until the queue is empty."""
    import keel

    with schema() as db:
        keel.submit(wf, write_csv(tmp / "warm.csv", 1, "warm"), db=db)  # the schema exists
        batch = str(max(32, 4 * concurrency))
        procs = [subprocess.Popen(keel_cmd("worker", str(wf), "--db", db, "--concurrency",
                                           str(concurrency), "--batch-size", batch),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env())
                 for _ in range(workers)]
        try:
            end = time.monotonic() + 120
            while (depth(db)[1] < workers or depth(db)[0]) and time.monotonic() < end:
                time.sleep(0.1)  # every worker is up and has decided the warm-up record
            src = write_csv(tmp / "in.csv", n, "r")
            t0 = time.perf_counter()
            keel.submit(wf, src, db=db)
            while depth(db)[0] and time.monotonic() < end + 600:
                time.sleep(0.02)
            elapsed = time.perf_counter() - t0
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            for p in procs:
                p.wait(timeout=120)
    return {"records": n, "seconds": elapsed, "records_per_s": n / elapsed}


def submit_run(wf: Path, src: Path, rows: int) -> dict[str, float]:
    with schema() as db:
        t0 = time.perf_counter()
        proc = subprocess.Popen(keel_cmd("submit", str(wf), str(src), "--db", db),
                                stdout=subprocess.DEVNULL, env=env())
        _pid, status, usage = os.wait4(proc.pid, 0)  # this process's own peak, not the
        elapsed = time.perf_counter() - t0          # largest of every child so far
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            raise subprocess.CalledProcessError(proc.returncode, proc.args)
        peak_mb = usage.ru_maxrss / 1024
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed, "peak_rss_mb": peak_mb}


def copy_run(src: Path, rows: int) -> dict[str, float]:
    import psycopg

    with schema() as db:
        path = db.split("://", 1)[1].split("?", 1)[0]
        conninfo = f"postgresql://{path}"
        opts = db.split("options=", 1)[1].replace("%3D", "=")
        t0 = time.perf_counter()
        with psycopg.connect(conninfo, options=opts) as conn:
            conn.execute("create table plain (id text primary key, text text)")
            with conn.cursor() as cur, cur.copy("copy plain from stdin with (format csv, header)") as cp, \
                    src.open("rb") as f:
                while chunk := f.read(1 << 20):
                    cp.write(chunk)
        elapsed = time.perf_counter() - t0
    return {"rows": rows, "seconds": elapsed, "rows_per_s": rows / elapsed}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0,
                    help="How long each configuration would take at its ideal rate.")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--submit-rows", type=int, default=200_000)
    args = ap.parse_args()
    configs = {"1 worker, concurrency 1": (1, 1), "4 workers, concurrency 1": (4, 1),
               "1 worker, concurrency 32": (1, 32)}
    found: dict[str, list[float]] = {k: [] for k in configs}
    found["keel submit"], found["COPY"], mem = [], [], []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        wf = tmp / "workflow.py"
        wf.write_text(WORKFLOW.format(latency=LATENCY_S))
        src = write_csv(tmp / "submit.csv", args.submit_rows, "s")
        for rep in range(args.repeats):
            for name, (workers, conc) in configs.items():
                n = max(20, int(args.seconds * workers * conc / LATENCY_S))
                got = workers_run(wf, workers, conc, n, tmp)
                found[name].append(got["records_per_s"])
                print(json.dumps({"bench": "workers", "config": name, "repeat": rep, **got}),
                      flush=True)
            sub = submit_run(wf, src, args.submit_rows)
            cp = copy_run(src, args.submit_rows)
            found["keel submit"].append(sub["rows_per_s"])
            found["COPY"].append(cp["rows_per_s"])
            mem.append(sub["peak_rss_mb"])
            print(json.dumps({"bench": "submit", "repeat": rep, "keel": sub, "copy": cp}),
                  flush=True)
    med = {k: statistics.median(v) for k, v in found.items()}
    print(json.dumps({
        "bench": "summary", "median_per_s": med,
        "4_workers_over_1": med["4 workers, concurrency 1"] / med["1 worker, concurrency 1"],
        "concurrency_32_over_1": med["1 worker, concurrency 32"] / med["1 worker, concurrency 1"],
        "submit_over_copy": med["keel submit"] / med["COPY"],
        "submit_peak_rss_mb": max(mem)}), flush=True)


if __name__ == "__main__":
    main()
