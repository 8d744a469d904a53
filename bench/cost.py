"""What cost accounting and budget enforcement cost: the same paid model with and without a
declared price table and daily and monthly budgets (never exhausted), interleaved in one run.

Both sides use a model whose answers cost money (the adapter's price in "plain", the declared
table's in "budgeted"), so both checkpoint paid answers the same way; the difference is keel's
pricing from the table, the reservation before each batch's model call and the settlement
after it.

    python bench/cost.py [--records 10000] [--repeats 5] [--batch-size 500] [--model noop|demo]
                         [--postgres URL] [--serve --seconds 10 --clients 8]

Each repeat runs "plain" then "budgeted" on fresh stores (SQLite file; with --postgres, also
on a fresh PostgreSQL schema), so the machine's load moves both alike; the figure is the ratio
of median throughputs. Prints one JSON line per measurement.

With ``--serve`` (needs ``--postgres``), the same two workflows run under `keel serve` on a
fresh PostgreSQL schema each, driven for ``--seconds`` by ``--clients`` concurrent keep-alive
clients posting one record per request (bench/serve.py's load driver); each repeat serves
"plain" then "budgeted". It reports requests/s and p50/p99 latency for each, the CPU time
`keel serve` and its PostgreSQL backends used per request (read from /proc: it moves less with
the machine's load than requests/s), the ratios of the medians, and the load average.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(EXAMPLE))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)
from pipeline import make_traffic  # noqa: E402  (bench/ is not a package)

WORKFLOW = ticket_workflow("cost_bench", model="{model}", extra="{cost}")
NOOP = 'keel.FakeModel({"intent": "card_arrival"}, confidence=0.99, name="m", cost_usd=0.00001)'
DEMO = ('__import__("sys").path.insert(0, {example!r}) or keel.SklearnModel('
        '__import__("triage_model").load_or_train, features="text", output="intent", name="m")')
COST = ('cost=keel.Cost(prices=[keel.ModelPrice("m", input_per_mtok=0.15, output_per_mtok=0.6, '
        'per_call_usd=0.00001)], budgets=[keel.Budget("day", usd=1e9, tokens=10**15), '
        'keel.Budget("month", usd=1e10)], max_call_usd=0.001),')


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def one_run(workflow: Path, traffic: Path, url: str, batch: int) -> tuple[float, float]:
    """Records per second, and CPU microseconds per record over all of the run's threads
    (the CPU figure moves less with the machine's load than the wall-clock one)."""
    import keel

    t0, c0 = time.perf_counter(), time.process_time()
    s = keel.run(workflow, traffic, db=url, batch_size=batch)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert s.read == s.decided + s.duplicates  # nothing lost
    assert s.counts["failed"] == 0             # the budget never ran out
    return s.read / elapsed, cpu / s.read * 1e6


def fresh_pg(base: str) -> str:
    """A URL whose connections use a new schema (and name themselves after it)."""
    from sqlalchemy import create_engine, text

    schema = f"keel_bench_{uuid.uuid4().hex[:8]}"
    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine.dispose()
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}application_name={schema}&options=-csearch_path%3D{schema}"


def _schema(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 once it is gone."""
    import os

    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(base: str, url: str) -> list[int]:
    """The PostgreSQL server processes serving ``url``'s connections."""
    from sqlalchemy import create_engine, text

    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE application_name = :a"),
                            {"a": _schema(url)}).scalars().all()
    engine.dispose()
    return list(pids)


def server_cpu(proc_pid: int, base: str, url: str) -> dict[int, float]:
    """CPU seconds so far of `keel serve` and of its PostgreSQL backends, per process."""
    return {pid: cpu_s(pid) for pid in (proc_pid, *backends(base, url))}


def drop_pg(base: str, url: str) -> None:
    """Drop the schema :func:`fresh_pg` made for ``url``."""
    from sqlalchemy import create_engine, text

    schema = _schema(url)
    engine = create_engine(base.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


def compare(label: str, files: dict[str, Path], traffic: Path, urls: Any, batch: int,
            repeats: int, n: int) -> None:
    rates: dict[str, list[float]] = {"plain": [], "budgeted": []}
    cpu: dict[str, list[float]] = {"plain": [], "budgeted": []}
    for kind in ("plain", "budgeted"):  # warm-up, not counted: imports, migrations, caches
        one_run(files[kind], traffic, urls(), batch)
    for _ in range(repeats):
        for kind in ("plain", "budgeted"):  # interleaved: the load moves both alike
            rate, us = one_run(files[kind], traffic, urls(), batch)
            rates[kind].append(rate)
            cpu[kind].append(us)
    med = {k: statistics.median(v) for k, v in rates.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    for kind in ("plain", "budgeted"):
        emit(measure=f"keel_run_{label}_{kind}", records=n, records_per_s=round(med[kind], 1),
             records_per_s_runs=[round(r, 1) for r in rates[kind]],
             cpu_us_per_record=round(med_cpu[kind], 1), repeats=repeats)
    emit(measure=f"cost_overhead_{label}", records=n,
         budgeted_to_plain=round(med["budgeted"] / med["plain"], 3),
         overhead_pct=round(100 * (1 - med["budgeted"] / med["plain"]), 1),
         cpu_overhead_pct=round(100 * (med_cpu["budgeted"] / med_cpu["plain"] - 1), 1))


def serve_once(tmp: Path, workflow: Path, base: str, url: str, clients: int, seconds: float,
               tag: str) -> dict[str, Any]:
    """`keel serve` on ``workflow`` and store ``url``, driven by ``clients`` at once; with
    the CPU the server and its PostgreSQL backends used per request (it moves less with the
    machine's load than requests/s)."""
    import asyncio
    import os
    import signal

    from serve import drive, request, start_server

    from keel.server import create_key
    from keel.store import Store

    store = Store.open(url)
    key = create_key(store, "submitter", "bench")[1]
    store.close()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    port = 19000 + os.getpid() % 1000
    proc = start_server(tmp, port, env, workflow=workflow, db=url)

    def single(n: int) -> bytes:
        body = json.dumps({"id": f"{tag}-{n}", "text": "where is my card"}).encode()
        return request("POST", "/v1/decisions", key, body)

    try:
        asyncio.run(drive(port, lambda n: single(10**9 + n), clients, 1.0, 1))  # warm-up
        before = server_cpu(proc.pid, base, url)
        found: dict[str, Any] = asyncio.run(drive(port, single, clients, seconds, 1))
        after = server_cpu(proc.pid, base, url)
        used = sum(after[p] - before.get(p, 0.0) for p in after)
        found["cpu_us_per_request"] = used / max(found["requests"], 1) * 1e6
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert found["errors"] == 0, found["first_error"]  # the budget never ran out
    return found


def _load() -> float:
    import os

    return round(os.getloadavg()[0], 2)


def compare_serve(files: dict[str, Path], tmp: Path, base: str, clients: int, seconds: float,
                  repeats: int) -> None:
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "budgeted": []}
    for i in range(repeats):
        for kind in ("plain", "budgeted"):  # interleaved, a fresh schema each
            url = fresh_pg(base)
            try:
                runs[kind].append(serve_once(tmp, files[kind], base, url, clients, seconds,
                                             f"{kind}{i}"))
            finally:
                drop_pg(base, url)
    med, cpu = {}, {}
    for kind, found in runs.items():
        med[kind] = statistics.median(r["requests_per_s"] for r in found)
        cpu[kind] = statistics.median(r["cpu_us_per_request"] for r in found)
        emit(measure=f"keel_serve_postgres_{kind}", clients=clients, seconds=seconds,
             requests_per_s=round(med[kind], 1),
             requests_per_s_runs=[r["requests_per_s"] for r in found],
             p50_ms=round(statistics.median(r["p50_ms"] for r in found), 2),
             p99_ms=round(statistics.median(r["p99_ms"] for r in found), 2),
             cpu_us_per_request=round(cpu[kind], 1),
             cpu_us_per_request_runs=[round(r["cpu_us_per_request"], 1) for r in found],
             repeats=repeats)
    emit(measure="cost_overhead_serve_postgres", clients=clients,
         budgeted_to_plain=round(med["budgeted"] / med["plain"], 3),
         overhead_pct=round(100 * (1 - med["budgeted"] / med["plain"]), 1),
         cpu_overhead_pct=round(100 * (cpu["budgeted"] / cpu["plain"] - 1), 1),
         load_avg_1m=_load())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--model", choices=("noop", "demo"), default="noop")
    ap.add_argument("--postgres", default=None, help="also on PostgreSQL at this URL")
    ap.add_argument("--serve", action="store_true",
                    help="keel serve on PostgreSQL under --clients instead of keel run")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    if args.serve and not args.postgres:
        ap.error("--serve measures keel serve on PostgreSQL: pass --postgres URL")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        traffic = tmp / "traffic.csv"
        make_traffic(traffic, args.records)
        model = NOOP if args.model == "noop" else DEMO.format(example=str(EXAMPLE))
        files = {}
        for kind, cost in (("plain", ""), ("budgeted", COST)):
            files[kind] = tmp / f"{kind}.py"
            files[kind].write_text(WORKFLOW.format(model=model, cost=cost))
        if args.serve:
            compare_serve(files, tmp, args.postgres, args.clients, args.seconds, args.repeats)
            return
        counter = iter(range(10**6))
        compare(f"{args.model}_sqlite", files, traffic,
                lambda: f"sqlite:///{tmp / f'k{next(counter)}.db'}", args.batch_size,
                args.repeats, args.records)
        if args.postgres:
            compare(f"{args.model}_postgres", files, traffic, lambda: fresh_pg(args.postgres),
                    args.batch_size, args.repeats, args.records)


if __name__ == "__main__":
    main()
