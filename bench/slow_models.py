"""Slow models at full concurrency: keel beside the plain code a user would write.

    python bench/slow_models.py [--records 10000] [--concurrency 64] [--repeats 3]

1. An async model that awaits 20 ms per record: `keel run` with RateLimits(max_concurrency=N)
   against `asyncio.gather` with a `Semaphore(N)`.
2. A synchronous model that takes 2 ms per record (time.sleep: it holds no lock, as an HTTP
   client or a C library would): `keel run` with Resilience(threads=N) against a
   `ThreadPoolExecutor(N)` mapping the records.

Both baselines only call the model; keel also validates, routes, checkpoints, writes every
decision with its audit trail to SQLite and counts. Runs are interleaved (keel, baseline,
keel, ...); medians of ``--repeats``. Prints one JSON line per measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ASYNC_MS = 20.0
SYNC_MS = 2.0


def workflow(kind: str, concurrency: int) -> object:
    from pydantic import BaseModel

    import keel

    class Ticket(BaseModel):
        id: str
        text: str

    class Triage(BaseModel):
        intent: str

    async def slow_async(t: Ticket) -> tuple[dict[str, str], float]:
        await asyncio.sleep(ASYNC_MS / 1000)
        return {"intent": "card_arrival"}, 0.99

    def slow_sync(t: Ticket) -> tuple[dict[str, str], float]:
        time.sleep(SYNC_MS / 1000)
        return {"intent": "card_arrival"}, 0.99

    if kind == "async":
        model = keel.FunctionModel(slow_async, name="slow-async")
        res = keel.Resilience(limits=keel.RateLimits(max_concurrency=concurrency))
    else:
        model = keel.FunctionModel(slow_sync, name="slow-sync")
        res = keel.Resilience(threads=concurrency)
    return keel.Workflow(name=f"slow_{kind}", input=Ticket, output=Triage, key="id",
                         model=model, resilience=res, policy=keel.Policy(threshold=0.5),
                         owners=keel.Owners(business="bench", support="bench"))


def records(n: int, tag: str) -> list[dict[str, str]]:
    return [{"id": f"{tag}{i}", "text": "where is my card"} for i in range(n)]


def keel_run(kind: str, n: int, concurrency: int, db: Path) -> float:
    import keel

    if db.exists():
        db.unlink()
    wf = workflow(kind, concurrency)
    t0 = time.perf_counter()
    s = keel.run(wf, records(n, "r"), db=f"sqlite:///{db}")  # type: ignore[arg-type]
    elapsed = time.perf_counter() - t0
    assert s.decided == n, s.as_dict()
    return n / elapsed


def gather_baseline(n: int, concurrency: int) -> float:
    async def main() -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one(_r: dict[str, str]) -> tuple[dict[str, str], float]:
            async with sem:
                await asyncio.sleep(ASYNC_MS / 1000)
                return {"intent": "card_arrival"}, 0.99

        await asyncio.gather(*(one(r) for r in records(n, "b")))

    t0 = time.perf_counter()
    asyncio.run(main())
    return n / (time.perf_counter() - t0)


def pool_baseline(n: int, concurrency: int) -> float:
    def one(_r: dict[str, str]) -> tuple[dict[str, str], float]:
        time.sleep(SYNC_MS / 1000)
        return {"intent": "card_arrival"}, 0.99

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, records(n, "b")))
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for kind, baseline, name in (("async", gather_baseline, "asyncio_gather_semaphore"),
                                     ("sync", pool_baseline, "thread_pool")):
            keel_run(kind, 200, args.concurrency, Path(tmp) / "warm.db")  # imports, first use
            mine, theirs = [], []
            for _ in range(args.repeats):
                mine.append(keel_run(kind, args.records, args.concurrency, Path(tmp) / "k.db"))
                theirs.append(baseline(args.records, args.concurrency))
            k, b = statistics.median(mine), statistics.median(theirs)
            print(json.dumps({"measure": f"slow_{kind}_model", "records": args.records,
                              "concurrency": args.concurrency,
                              "model_ms": ASYNC_MS if kind == "async" else SYNC_MS,
                              "keel_records_per_s": round(k, 1), f"{name}_records_per_s": round(b, 1),
                              "ratio": round(k / b, 3),
                              "keel_runs": [round(x) for x in mine],
                              "baseline_runs": [round(x) for x in theirs]}), flush=True)


if __name__ == "__main__":
    main()
