"""Observability overhead: the audit trail + tracing per record, and everything on vs all off.

    python bench/observability.py [--records 20000] [--repeats 21] [--otlp-records 60000]

Prints one JSON line per measurement.

1. ``per_record_cost``: a no-op model over ``--records`` records in batches of 500, with
   tracing to an in-memory exporter. Per batch it times the audit trail (building events,
   one hash-chained segment per record and transaction, inserting them: ``Item.log``,
   ``segment_rows`` and the ``events`` insert) and tracing (the
   hot-path hand-off plus the span worker thread's CPU clock: building and exporting), as CPU
   time, and reports the per-record cost's p50 and p95 over batches. Target: p50 <= 50 us.
2. ``demo_throughput``: the demo workflow on Banking77's 3,080-message test split, fresh
   SQLite store each run, configurations interleaved ``--repeats`` times: all off
   (``all_off``); tracing to the in-memory exporter (drained as a collector would) + metrics +
   INFO logs, with personal data redacted in logs and spans (``on_memory``, the target);
   the same plus ``storage="redacted"`` (every input scanned before it is stored), with stage
   spans copied into every record's trace, and with OTLP/HTTP to a dummy collector on
   loopback (in a process of its own; the SDK's protobuf encoding runs in Python), also
   with one record in ten traced. A run this short ends before keel's OTLP export process
   is ready, so its chunks are exported in the deciding process. Throughput counts until
   the telemetry is flushed; each configuration's loss is the median over rounds of its
   ratio to the all-off run of the same round (the target pair back to back, in
   alternating order; each store deleted after its run); CPU time (all threads) per record
   is reported too. Target: ``on_memory`` loses <= 10%.
3. ``otlp_long_run``: the demo workflow over the test split repeated to ``--otlp-records``
   records (default 60,000), OTLP/HTTP to the loopback collector from keel's export child
   process (the default with two cores) and from the deciding process, against all off;
   three interleaved rounds, throughput until the last span is exported, the deciding
   process's CPU per record, spans dropped.
4. ``demo_instructions``: ``all_off`` and ``on_memory`` once each under valgrind's callgrind
   (when installed), which counts CPU instructions the same however busy the machine is:
   the overhead in instructions, a steady companion to the throughput figure above, whose
   rounds move by +-10% on a shared machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

from opentelemetry.sdk.trace.export.in_memory_span_exporter import (  # noqa: E402
    InMemorySpanExporter,
)
from pipeline import collected, make_traffic, under_callgrind  # noqa: E402  (bench/ is the script's folder)

import keel  # noqa: E402
from keel._record import Item  # noqa: E402
from keel.sources._files import read_rows  # noqa: E402
from keel.store import Store  # noqa: E402
from keel.store import _store as store_impl  # noqa: E402
from keel.store import verify_trail as verify  # noqa: E402
from keel.store._store import Store as StoreImpl  # noqa: E402
from keel.telemetry import Telemetry, configure_logging, make_exporter  # noqa: E402
from keel.telemetry._export import SpanQueue  # noqa: E402


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


class Clock:
    """CPU seconds (of the calling thread) spent in wrapped functions, summed over threads.

    Thread CPU time, not wall time: with the GIL shared by the runner, the writer and the
    span worker, wall time would count waiting for the GIL as cost.
    """

    def __init__(self) -> None:
        self.total = 0.0
        self.lock = threading.Lock()

    def wrap(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kw: Any) -> Any:
            t0 = time.thread_time()
            try:
                return fn(*args, **kw)
            finally:
                dt = time.thread_time() - t0
                with self.lock:
                    self.total += dt
        return timed

    def take(self) -> float:
        with self.lock:
            value, self.total = self.total, 0.0
        return value


def _traffic(path: Path, n: int) -> Path:
    make_traffic(path, n)  # the pipeline bench's traffic: the test split, repeated
    return path


def _noop_workflow() -> keel.Workflow:
    from pydantic import BaseModel

    class Ticket(BaseModel):
        id: str
        text: str

    class Triage(BaseModel):
        intent: str

    return keel.Workflow(name="noop", input=Ticket, output=Triage, key="id",
                         model=keel.FakeModel({"intent": "card_arrival"}, confidence=0.99),
                         policy=keel.Policy(threshold=0.5, audit_rate=0.0),
                         owners=keel.Owners(business="bench", support="bench"))


def _log_cost_us(n: int = 200_000) -> float:
    """CPU time of one ``Item.log`` call like the stages make (an event with a small detail)."""
    item = Item(key="k", raw={}, source="bench")
    t0 = time.thread_time()
    for _ in range(n):
        item.log("predicted", model_version="fake-1", latency_ms=0.1, cost_usd=0.0,
                 detail={"step": "primary", "attempt": 1, "confidence": 0.9})
        if len(item.events) > 1000:
            item.events.clear()
    return (time.thread_time() - t0) / n * 1e6


def per_record_cost(records: int, tmp: Path, stage_spans: str) -> None:
    audit, tracing = Clock(), Clock()
    batch_costs: list[float] = []
    parts: dict[str, list[float]] = {"audit": [], "tracing_hot_path": [], "span_build_export": []}
    tmp.mkdir(parents=True, exist_ok=True)
    orig_segments, orig_insert = store_impl.segment_rows, StoreImpl._insert_rows
    orig_submit = SpanQueue.submit
    timed_insert = audit.wrap(orig_insert)

    def insert(self: StoreImpl, conn: Any, table: str, *args: Any, **kw: Any) -> None:
        (timed_insert if table == "events" else orig_insert)(self, conn, table, *args, **kw)

    store_impl.segment_rows = audit.wrap(orig_segments)  # type: ignore[assignment]
    StoreImpl._insert_rows = insert  # type: ignore[method-assign,assignment]
    SpanQueue.submit = tracing.wrap(orig_submit)  # type: ignore[method-assign]
    try:
        exporter = make_exporter("memory")
        telemetry = Telemetry(exporter=exporter, metrics=False, stage_spans=stage_spans)
        store = Store.open(f"sqlite:///{tmp / 'cost.db'}")
        src = _traffic(tmp / "cost.csv", records)
        runner = keel.Runner(_noop_workflow(), store, batch_size=500, telemetry=telemetry)
        rows = list(read_rows(src))
        runner._register()
        assert telemetry.spans is not None
        worker = time.pthread_getcpuclockid(telemetry.spans._worker.ident or 0)
        for start in range(0, len(rows), 500):
            before = time.clock_gettime(worker)
            runner.run(rows[start:start + 500], source="bench")
            telemetry.flush(30.0)
            exporter.clear()  # type: ignore[union-attr]  # a collector consumes what it receives
            n = min(500, len(rows) - start)
            costs = {"audit": audit.take(), "tracing_hot_path": tracing.take(),
                     "span_build_export": time.clock_gettime(worker) - before}
            for k, v in costs.items():
                parts[k].append(v / n * 1e6)
            batch_costs.append(sum(costs.values()) / n * 1e6)
        telemetry.shutdown()
        events = verify(store=store).events
        store.close()
    finally:
        store_impl.segment_rows = orig_segments  # type: ignore[assignment]
        StoreImpl._insert_rows = orig_insert  # type: ignore[method-assign]
        SpanQueue.submit = orig_submit  # type: ignore[method-assign]
    log_us = _log_cost_us() * events / records  # building the events, per record
    batch_costs = [c + log_us for c in batch_costs]
    parts["audit"] = [c + log_us for c in parts["audit"]]
    costs = sorted(batch_costs[1:])  # the first batch warms caches
    emit(measurement="per_record_cost", what="audit trail + tracing (in-memory exporter)",
         stage_spans=stage_spans, records=records, batches=len(costs),
         p50_us=round(statistics.median(costs), 1),
         p95_us=round(costs[int(0.95 * (len(costs) - 1))], 1), target_p50_us=50.0,
         parts_p50_us={k: round(statistics.median(v[1:]), 1) for k, v in parts.items()})


def _collect(port_out: Any) -> None:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.send(server.server_address[1])
    server.serve_forever()


@contextmanager
def dummy_collector() -> Iterator[str]:
    """A collector on loopback in a process of its own (as a real one would be), which
    answers 200 to every export and keeps nothing."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_collect, args=(there,), daemon=True)
    proc.start()
    try:
        yield f"http://127.0.0.1:{here.recv()}"
    finally:
        proc.terminate()
        proc.join(5)


def _demo_once(wf: keel.Workflow, traffic: Path, db: Path, telemetry: Telemetry | None,
               keep_open: bool = False) -> dict[str, float]:
    """One run on a fresh store, timed until its spans are exported; ``keep_open`` leaves
    the telemetry for the caller to read and shut down."""
    store = Store.open(f"sqlite:///{db}")
    try:
        c0, t0 = time.process_time(), time.perf_counter()
        summary = keel.run(wf, traffic, store=store, telemetry=telemetry)
        ran = time.perf_counter() - t0
        if telemetry is not None:
            telemetry.flush(60.0)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        if telemetry is not None and not keep_open:
            telemetry.shutdown()
    finally:
        store.close()
    return {"records": summary.read, "run_s": ran, "total_s": total, "cpu_s": cpu}


class DrainedMemoryExporter(InMemorySpanExporter):
    """The SDK's in-memory exporter, emptied after each export as a collector would consume
    it (kept whole, 30,000 spans make every later garbage collection slower)."""

    exported = 0

    def export(self, spans: Any) -> Any:
        result = super().export(spans)
        self.exported += len(spans)
        self.clear()
        return result


Config = tuple[keel.Workflow, Callable[[], Telemetry | None]]


def _configs(base: keel.Workflow, collector: str) -> dict[str, Config]:
    private = dataclasses.replace(base, storage="redacted")
    private.source_path = base.source_path
    return {
        "all_off": (base, lambda: None),
        "on_memory": (base, lambda: Telemetry(exporter=DrainedMemoryExporter())),
        "on_memory_storage_redacted": (private, lambda: Telemetry(exporter=DrainedMemoryExporter())),
        "on_memory_record_stage_spans": (base, lambda: Telemetry(
            exporter=DrainedMemoryExporter(), stage_spans="record")),
        "on_otlp_http": (base, lambda: Telemetry(exporter=make_exporter("otlp-http", collector))),
        "on_otlp_http_sample_0.1": (base, lambda: Telemetry(
            exporter=make_exporter("otlp-http", collector), sample_ratio=0.1)),
    }


def demo_throughput(repeats: int, tmp: Path) -> None:
    base = keel.load_workflow(EXAMPLE / "workflow.py")
    traffic = EXAMPLE / "data" / "test.csv"
    _demo_once(base, traffic, tmp / "warm.db", None)  # train (first time) and warm the model
    configure_logging("json", "info", stream=io.StringIO())
    with dummy_collector() as collector:
        configs = _configs(base, collector)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        for rep in range(repeats):
            # the target pair runs back to back, in alternating order, so that the machine's
            # slower and faster spells (other tenants' cache and memory traffic) hit both alike
            pair = ["all_off", "on_memory"] if rep % 2 == 0 else ["on_memory", "all_off"]
            for name in pair + [n for n in configs if n not in pair]:
                wf, make = configs[name]
                db = tmp / f"demo-{name}-{rep}.db"
                results[name].append(_demo_once(wf, traffic, db, make()))
                for path in tmp.glob(db.name + "*"):  # no dirty pages left to flush later
                    path.unlink()
    off = results["all_off"]
    for name, runs in results.items():
        rates = [r["records"] / r["total_s"] for r in runs]
        cpus = [r["cpu_s"] / r["records"] for r in runs]
        # paired with the all-off run of the same round, so slow drifts in machine load cancel
        ratios = [(r["records"] / r["total_s"]) / (o["records"] / o["total_s"])
                  for r, o in zip(runs, off, strict=True)]
        cpu_ratios = [(r["cpu_s"] / o["cpu_s"]) for r, o in zip(runs, off, strict=True)]
        emit(measurement="demo_throughput", config=name, records=int(runs[0]["records"]),
             repeats=len(runs), records_per_s=round(statistics.median(rates), 1),
             loss_pct=round(100 * (1 - statistics.median(ratios)), 1),
             loss_pct_quartiles=[round(100 * (1 - q), 1) for q in _quartiles(ratios)[::-1]],
             cpu_us_per_record=round(statistics.median(cpus) * 1e6, 1),
             cpu_overhead_pct=round(100 * (statistics.median(cpu_ratios) - 1), 1),
             target_loss_pct=10.0 if name == "on_memory" else None)


def otlp_long_run(records: int, repeats: int, tmp: Path) -> None:
    base = keel.load_workflow(EXAMPLE / "workflow.py")
    traffic = tmp / "otlp-traffic.csv"
    make_traffic(traffic, records)
    with dummy_collector() as collector:
        configs: dict[str, Callable[[], Telemetry | None]] = {
            "all_off": lambda: None,
            "otlp_http_child_process": lambda: Telemetry(
                exporter=make_exporter("otlp-http", collector, process=True)),
            "otlp_http_in_process": lambda: Telemetry(
                exporter=make_exporter("otlp-http", collector, process=False)),
        }
        results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        for rep in range(repeats):
            for name, make in configs.items():
                telemetry = make()
                db = tmp / f"otlp-{name}-{rep}.db"
                run = _demo_once(base, traffic, db, telemetry, keep_open=True)
                run["dropped"] = float(telemetry.dropped_spans) if telemetry else 0.0
                if telemetry is not None:
                    telemetry.shutdown()
                results[name].append(run)
                for path in tmp.glob(db.name + "*"):
                    path.unlink()
    off = results["all_off"]
    for name, runs in results.items():
        ratios = [(r["records"] / r["total_s"]) / (o["records"] / o["total_s"])
                  for r, o in zip(runs, off, strict=True)]
        emit(measurement="otlp_long_run", config=name, records=records, repeats=repeats,
             records_per_s=round(statistics.median(r["records"] / r["total_s"] for r in runs), 1),
             loss_pct=round(100 * (1 - statistics.median(ratios)), 1),
             deciding_process_cpu_us_per_record=round(
                 statistics.median(r["cpu_s"] / r["records"] for r in runs) * 1e6, 1),
             spans_dropped=int(sum(r["dropped"] for r in runs)))


def _quartiles(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def demo_instructions(tmp: Path) -> None:
    """The target pair's CPU instructions under valgrind's callgrind, which counts them the
    same whatever else the machine does: one run each, the two in parallel, counting from
    the run's start to the telemetry's flush (imports, training and store set-up excluded)."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        emit(measurement="demo_instructions", skipped="valgrind not installed")
        return
    procs = {name: under_callgrind(tmp / f"callgrind.{name}", [
        __file__, "--instructions-child", name, str(tmp / f"instr-{name}.db")])
        for name in ("all_off", "on_memory")}
    counts, failed = collected(procs)
    if failed:
        emit(measurement="demo_instructions", failed=failed)
        return
    off, on = counts["all_off"], counts["on_memory"]
    emit(measurement="demo_instructions", records=3080,
         instructions_per_record={k: round(v / 3080) for k, v in counts.items()},
         overhead_pct=round(100 * (on / off - 1), 2), target_loss_pct=10.0)


def _instructions_child(name: str, db: Path) -> None:
    base = keel.load_workflow(EXAMPLE / "workflow.py")
    traffic = EXAMPLE / "data" / "test.csv"
    _demo_once(base, traffic, db.with_suffix(".warm.db"), None)
    configure_logging("json", "info", stream=io.StringIO())
    wf, make = _configs(base, "http://127.0.0.1:9")[name]
    telemetry = make()
    store = Store.open(f"sqlite:///{db}")
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "--instr=on", pid], capture_output=True, check=True)
    keel.run(wf, traffic, store=store, telemetry=telemetry)
    if telemetry is not None:
        telemetry.flush(60.0)
    subprocess.run(["callgrind_control", "--instr=off", pid], capture_output=True, check=True)
    if telemetry is not None:
        telemetry.shutdown()
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--otlp-records", type=int, default=60_000)
    parser.add_argument("--instructions-child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("KEEL_ARTIFACTS", str(ROOT / ".keel" / "artifacts"))
    if args.instructions_child:
        _instructions_child(args.instructions_child[0], Path(args.instructions_child[1]))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for stage_spans in ("batch", "record"):
            per_record_cost(args.records, Path(tmp) / stage_spans, stage_spans)
        demo_throughput(args.repeats, Path(tmp))
        otlp_long_run(args.otlp_records, 3, Path(tmp))
        demo_instructions(Path(tmp))


if __name__ == "__main__":
    main()
