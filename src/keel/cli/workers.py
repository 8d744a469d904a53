"""keel submit, keel worker, keel workers: many processes on many machines deciding one
workflow's records from a shared PostgreSQL store."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import keel
from keel.cli._common import DbOption, JsonOption, console, console_err, fmt_time, print_json

WorkflowPy = Annotated[Path, typer.Argument(help="Path to the workflow.py.")]


def submit_cmd(
    workflow_py: WorkflowPy,
    input_file: Annotated[Path, typer.Argument(
        metavar="INPUT", help="CSV, JSONL or Parquet file.")],
    priority: Annotated[int, typer.Option(help="Higher is decided first.")] = 0,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Queue INPUT's records for workers: deduplicated by key, bad rows quarantined, the
    rest pending until a `keel worker` decides them."""
    from keel.runtime import submit  # start-up: see keel.cli

    summary = submit(workflow_py, input_file, db=db, priority=priority)
    if as_json:
        print_json(summary.as_dict())
        return
    console.print(f"{summary.read:,} read: [bold]{summary.queued:,} queued[/] for workers, "
                  f"{summary.counts['quarantined']:,} quarantined, {summary.duplicates:,} "
                  f"already known ({summary.elapsed_s:.1f} s)")


def worker_cmd(
    workflow_py: WorkflowPy,
    concurrency: Annotated[int | None, typer.Option(
        help="Model calls in flight (async models; threads for sync ones).")] = None,
    batch_size: Annotated[int, typer.Option(
        "--batch-size", min=1, help="Records per claim.")] = 100,
    lease: Annotated[float, typer.Option(
        help="Seconds a claim holds before another worker may take it.")] = 60.0,
    until_empty: Annotated[bool, typer.Option(
        "--until-empty", help="Stop when no record is waiting (a batch job), not on a signal.")] = False,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Decide queued records until stopped (SIGTERM or Ctrl-C: the batches in hand finish)."""
    from keel.runtime import work  # start-up: see keel.cli

    stop = threading.Event()

    def stopping(signum: int, _frame: object) -> None:
        console_err.print(f"{signal.Signals(signum).name}: finishing the batches in hand, "
                          "then stopping")
        stop.set()

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    summary = work(workflow_py, db=db, stop=stop, batch_size=batch_size,
                   concurrency=concurrency, lease_s=lease, until_empty=until_empty)
    if as_json:
        print_json(summary.as_dict())
        return
    console.print(f"worker stopped: decided {summary.decided:,} records in "
                  f"{summary.elapsed_s:.1f} s; leases lost to other workers: {summary.lost_leases}"
                  + (f"; store outages waited out: {summary.store_outages}"
                     if summary.store_outages else ""))


def workers_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Workers: alive or not, records decided, throughput, leases held; the queue's depth."""
    from keel.store import queries  # start-up: see keel.cli
    from keel.store import queue as q  # start-up: see keel.cli

    store = keel.Store.open(db, must_exist=True)
    try:
        rows = q.workers(store)
        depth = {wf: q.depth(store, wf) for wf in queries.workflow_names(store)}
    finally:
        store.close()
    if as_json:
        print_json({"workers": rows, "queue": depth})
        return
    table = Table("worker", "workflow", "alive", "decided", "records/s", "leases", "last seen")
    for r in rows:
        table.add_row(r["id"], r["workflow"], "yes" if r["alive"] else "no", f"{r['decided']:,}",
                      f"{r['records_per_s']:.1f}", str(r["leases"]), fmt_time(r["heartbeat_at"]))
    console.print(table)
    for wf, d in depth.items():
        age = d["oldest_pending_age_s"]
        console.print(f"{wf}: {d['pending']:,} pending, {d['leased']:,} leased"
                      + (f"; oldest waiting {age:.0f} s" if age is not None else ""))


def register(app: typer.Typer) -> None:
    app.command("submit")(submit_cmd)
    app.command("worker")(worker_cmd)
    app.command("workers")(workers_cmd)
