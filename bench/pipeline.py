"""Pipeline throughput: the raw demo model vs keel end to end vs keel with a no-op model.

    python bench/pipeline.py [--records 100000] [--memory-records 1000000] [--repeats 3]
                             [--instruction-records 10000] [--only screening]

(b) and (c) run twice: free to use both cores (the writer process on the second), and
pinned to one core (as in a container given one CPU).

Prints one JSON line per measurement. (b)/(a) is the cost of governance around a real model;
(c) is keel's own overhead per record; the memory run streams 1,000,000 records through the
no-op workflow in a child process and reports its peak RSS. The screening measure runs (b)
without and with a reference profile of the train split in the store (out-of-distribution
screening of every record, as docs/drift.md's demo sets it up), interleaved. With valgrind installed, (a), (b)
and (c) are also counted in CPU instructions per record (callgrind; everything in one process,
the writer thread included), a figure that does not move with the machine's load or speed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)

NOOP_WORKFLOW = ticket_workflow("noop", policy="keel.Policy(threshold=0.5)")


def emit(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def make_traffic(path: Path, n: int) -> None:
    with (EXAMPLE / "data" / "test.csv").open(newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"r{i:08d}", texts[i % len(texts)]])


def raw_model(n: int, batch: int) -> float:
    from triage_model import load_or_train

    pipe = load_or_train()
    with (EXAMPLE / "data" / "test.csv").open(newline="") as fh:
        texts = [r["text"] for r in csv.DictReader(fh)]
    data = [texts[i % len(texts)] for i in range(n)]
    t0 = time.perf_counter()
    for i in range(0, n, batch):
        proba = pipe.predict_proba(data[i:i + batch])
        pipe.classes_[proba.argmax(axis=1)]
    return n / (time.perf_counter() - t0)


def keel_run(workflow: Path, traffic: Path, db: Path, batch: int,
             one_core: bool = False, writer_process: str | None = None,
             template: Path | None = None) -> dict[str, object]:
    """One run on a fresh store: records/s, and CPU time per record over all of keel's threads
    (the deciding thread, the writer and the model's) and its writer process. With
    ``one_core`` the run and everything it starts (threads, the writer process if it
    decides to start one) may only use one CPU, as in a container given one core;
    ``writer_process`` sets ``KEEL_WRITER_PROCESS`` for the run; the store starts as a copy
    of ``template`` when one is given."""
    import keel

    if db.exists():
        db.unlink()
    if template is not None:
        shutil.copy(template, db)
    cpus = os.sched_getaffinity(0)
    was = os.environ.get("KEEL_WRITER_PROCESS")
    if writer_process is not None:
        os.environ["KEEL_WRITER_PROCESS"] = writer_process
    if one_core:
        os.sched_setaffinity(0, {min(cpus)})  # this thread, and the threads and children it starts
    t0, c0, k0 = time.perf_counter(), time.process_time(), _children_cpu()
    try:
        s = keel.run(workflow, traffic, db=f"sqlite:///{db}", batch_size=batch)
    finally:
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        os.sched_setaffinity(0, cpus)
        if writer_process is not None:
            os.environ.pop("KEEL_WRITER_PROCESS", None)
            if was is not None:
                os.environ["KEEL_WRITER_PROCESS"] = was
    child = _children_cpu() - k0  # the writer process, if the run started one
    assert s.read == s.decided + s.duplicates
    return {"records_per_s": round(s.read / elapsed, 1), "read": s.read,
            "elapsed_s": round(elapsed, 2),
            "cpu_us_per_record": round((cpu + child) / s.read * 1e6, 1),
            "writer_process_cpu_us_per_record": round(child / s.read * 1e6, 1),
            "cores_used": round((cpu + child) / elapsed, 2)}


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def best_of(repeats: int, fn: Any, *args: Any) -> dict[str, object]:
    """The run with the median throughput of ``repeats`` (the machine's load moves single runs)."""
    runs = sorted((fn(*args) for _ in range(repeats)), key=lambda r: r["records_per_s"])
    median = dict(runs[len(runs) // 2])
    median["records_per_s_range"] = [runs[0]["records_per_s"], runs[-1]["records_per_s"]]
    median["repeats"] = repeats
    return median


def screening(traffic: Path, d: Path, batch: int, repeats: int, embedder: str,
              ood_fpr: float) -> None:
    """(b) without and with a reference profile (every record screened), interleaved."""
    import keel
    from keel.monitor import build_reference

    template = d / "profile.db"
    store = keel.Store.open(f"sqlite:///{template}")
    try:
        build_reference(EXAMPLE / "workflow.py", store=store,
                        source=EXAMPLE / "data" / "train.csv", seed=0, embedder=embedder,
                        ood_fpr=ood_fpr, sample_size=10_003)
    finally:
        store.close()
    wf = EXAMPLE / "workflow.py"
    keel_run(wf, traffic, d / "sw.db", batch, template=template)  # warm: the embedder's load
    runs: dict[bool, list[dict[str, object]]] = {False: [], True: []}
    for _ in range(repeats):
        for screened in (False, True):  # interleaved: the load moves both alike
            runs[screened].append(keel_run(wf, traffic, d / f"s{screened}.db", batch,
                                           template=template if screened else None))
    med = {k: statistics.median(float(r["records_per_s"]) for r in v)  # type: ignore[arg-type]
           for k, v in runs.items()}
    emit(measure="screening_overhead_demo_model_sqlite", records=runs[False][0]["read"],
         embedder=embedder, ood_fpr=ood_fpr, repeats=repeats,
         records_per_s_without_profile=round(med[False], 1),
         records_per_s_with_profile=round(med[True], 1),
         runs_without=[r["records_per_s"] for r in runs[False]],
         runs_with=[r["records_per_s"] for r in runs[True]],
         time_ratio=round(med[False] / med[True], 3))


def child_memory(workflow: Path, traffic: Path, db: Path, batch: int) -> None:
    import keel

    s = keel.run(workflow, traffic, db=f"sqlite:///{db}", batch_size=batch)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"read": s.read, "decided": s.decided, "peak_rss_mb": round(peak_mb, 1)}))


def under_callgrind(out: Path, args: list[str]) -> subprocess.Popen[str]:
    """This script (``args`` after it) in a child under valgrind's callgrind, counting nothing
    until the child turns counting on (``callgrind_control --instr=on``)."""
    return subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}",
         os.path.realpath(sys.executable), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def collected(procs: dict[str, subprocess.Popen[str]]) -> tuple[dict[str, int], str | None]:
    """The instructions each callgrind child counted, waiting for all of them; and, if one
    failed, its name and the end of its stderr."""
    counts: dict[str, int] = {}
    failed = None
    for name, proc in procs.items():
        _out, err = proc.communicate()
        found = [line for line in err.splitlines() if "Collected :" in line]
        if proc.returncode != 0 or not found:
            failed = failed or f"{name}: {err[-2000:]}"
        else:
            counts[name] = int(found[-1].split(":")[-1].replace(",", "").strip())
    return counts, failed


def instructions(what: str, workflow: Path, traffic: Path, tmp: Path) -> None:
    """Child under callgrind: count from just before to just after one measured step."""
    os.environ["KEEL_WRITER_PROCESS"] = "off"  # one process: callgrind follows no children
    if what == "raw_model":
        from triage_model import load_or_train

        pipe = load_or_train()
        with traffic.open(newline="") as fh:
            texts = [r["text"] for r in csv.DictReader(fh)]
        pipe.predict_proba(texts[:500])

        def step() -> object:
            return [pipe.classes_[pipe.predict_proba(texts[i:i + 500]).argmax(axis=1)]
                    for i in range(0, len(texts), 500)]
    else:
        import keel

        keel.run(workflow, traffic, db=f"sqlite:///{tmp / 'warm.db'}", batch_size=500)

        def step() -> object:
            return keel.run(workflow, traffic, db=f"sqlite:///{tmp / 'x.db'}", batch_size=500)
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "--instr=on", pid], capture_output=True, check=True)
    step()
    subprocess.run(["callgrind_control", "--instr=off", pid], capture_output=True, check=True)


def count_instructions(n: int, noop: Path, tmp: Path) -> None:
    """(a), (b) and (c) in instructions per record, two valgrind processes at a time."""
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        emit(measure="instructions_per_record", skipped="valgrind not installed")
        return
    small = tmp / "instr.csv"
    make_traffic(small, n)
    todo = {"raw_model": noop, "keel_demo": EXAMPLE / "workflow.py", "keel_noop": noop}
    counts: dict[str, int] = {}
    names = list(todo)
    for pair in (names[:2], names[2:]):  # two at a time: one per core
        for name in pair:
            (tmp / name).mkdir(exist_ok=True)
        done, failed = collected({name: under_callgrind(tmp / name / "callgrind.out", [
            __file__, "--instructions-child", name, str(todo[name]), str(small),
            str(tmp / name)]) for name in pair})
        if failed:
            emit(measure="instructions_per_record", failed=failed)
            return
        counts.update(done)
    per = {k: round(v / n) for k, v in counts.items()}
    inserts = {f"sqlite_inserts_{k}": round(c / n) for k in ("keel_demo", "keel_noop")
               if (c := _inclusive(tmp / k / "callgrind.out", "pysqlite_cursor_executemany"))}
    emit(measure="instructions_per_record", records=n, **per,
         keel_own_per_record_demo=per["keel_demo"] - per["raw_model"],
         ratio_demo_to_raw_model=round(per["raw_model"] / per["keel_demo"], 3), **inserts)


def _inclusive(out: Path, function: str) -> int | None:
    """Instructions spent in ``function`` and what it called (the store's inserts: the
    sqlite3 module's executemany), from a callgrind output file."""
    if not shutil.which("callgrind_annotate"):
        return None
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)],
                          capture_output=True, text=True).stdout
    for line in text.splitlines():  # "1,234 (5.6%)  path/file.c:function [library]"
        if f".c:{function}" in line and "/clinic/" not in line:  # not the argument wrapper
            return int(line.split()[0].replace(",", ""))
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--memory-records", type=int, default=1_000_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--instruction-records", type=int, default=10_000,
                    help="records counted under callgrind (0: skip)")
    ap.add_argument("--child", nargs=3)
    ap.add_argument("--instructions-child", nargs=4)
    ap.add_argument("--only", choices=("screening",), default=None,
                    help="run one measure: screening (out-of-distribution screening's cost)")
    ap.add_argument("--embedder", default="auto", help="the reference profile's text embedder")
    ap.add_argument("--ood-fpr", type=float, default=0.015)
    args = ap.parse_args()
    if args.instructions_child:
        what, wf, traffic, tmp = args.instructions_child
        os.environ.setdefault("KEEL_ARTIFACTS", str(ROOT / ".keel" / "artifacts"))
        instructions(what, Path(wf), Path(traffic), Path(tmp))
        return
    if args.child:
        child_memory(*(Path(p) for p in args.child), args.batch_size)
        return
    os.environ.setdefault("KEEL_ARTIFACTS", str(ROOT / ".keel" / "artifacts"))
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        traffic = d / "traffic.csv"
        make_traffic(traffic, args.records)
        noop = d / "noop_workflow.py"
        noop.write_text(NOOP_WORKFLOW)
        if args.only == "screening":
            from keel.monitor._api import resolve_embedder

            screening(traffic, d, args.batch_size, args.repeats,
                      resolve_embedder(args.embedder), args.ood_fpr)
            return
        keel_run(noop, traffic, d / "warm.db", args.batch_size)  # imports, first-use training
        a = statistics.median(raw_model(args.records, args.batch_size) for _ in range(args.repeats))
        emit(measure="raw_model_predict", records=args.records, records_per_s=round(a, 1),
             us_per_record=round(1e6 / a, 1))
        b = best_of(args.repeats, keel_run, EXAMPLE / "workflow.py", traffic, d / "b.db",
                    args.batch_size)
        emit(measure="keel_run_demo_model_sqlite", **b, ratio_to_raw_model=round(b["records_per_s"] / a, 3))  # type: ignore[operator]
        c = best_of(args.repeats, keel_run, noop, traffic, d / "c.db", args.batch_size)
        emit(measure="keel_run_noop_model_sqlite", **c)
        b1 = best_of(args.repeats, keel_run, EXAMPLE / "workflow.py", traffic, d / "b1.db",
                     args.batch_size, True)
        emit(measure="keel_run_demo_model_sqlite_one_core", **b1,
             ratio_to_raw_model=round(b1["records_per_s"] / a, 3))  # type: ignore[operator]
        c1 = best_of(args.repeats, keel_run, noop, traffic, d / "c1.db", args.batch_size, True)
        emit(measure="keel_run_noop_model_sqlite_one_core", **c1)
        # what the writer process would cost on one core, were it started anyway
        c1w = best_of(args.repeats, keel_run, noop, traffic, d / "c1w.db", args.batch_size, True,
                      "20000")
        emit(measure="keel_run_noop_model_sqlite_one_core_writer_process_forced", **c1w)
        if args.memory_records:
            big = d / "big.csv"
            make_traffic(big, args.memory_records)
            out = subprocess.run([sys.executable, __file__, "--child", str(noop), str(big),
                                  str(d / "m.db"), "--batch-size", str(args.batch_size)],
                                 capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"the memory run failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
            emit(measure="peak_memory_noop_1m", records=args.memory_records, **json.loads(out.stdout))
        if args.instruction_records:
            count_instructions(args.instruction_records, noop, d)
        from keel.monitor._api import resolve_embedder

        screening(traffic, d, args.batch_size, args.repeats, resolve_embedder(args.embedder),
                  args.ood_fpr)


if __name__ == "__main__":
    main()
