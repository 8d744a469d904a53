"""keel serve under load from a second process on loopback.

    python bench/serve.py [--seconds 10] [--connections 8,32,64] [--batch 1000]

Starts `keel serve` on the support_triage demo workflow (TF-IDF + logistic regression) in a
child process with a fresh SQLite store, then drives it from this process with a small
asyncio HTTP/1.1 keep-alive client (raw sockets: a few microseconds per request, so the
client is not the bottleneck). Prints one JSON line per measurement:

- `healthz`: GET /healthz, the HTTP floor of the same server (baseline, no work);
- `single`: POST /v1/decisions, one record per request, `--connections` at once;
- `batch`: POST /v1/decisions with `--batch` records per request;
- `pipeline`: the same records through `keel.run` in-process (no HTTP), for comparison.

Targets (issue 5): single >= 1,000 decisions/s with p99 <= 50 ms; batch >= 10,000 records/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "support_triage"
sys.path.insert(0, str(ROOT / "src"))


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def texts() -> list[str]:
    with (EXAMPLE / "data" / "test.csv").open(newline="") as fh:
        return [r["text"] for r in csv.DictReader(fh)]


def request(method: str, path: str, key: str, body: bytes = b"") -> bytes:
    head = (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    body = await reader.readexactly(length) if length else b""
    return status, body


async def drive(port: int, make: Any, connections: int, seconds: float,
                per_request: int) -> dict[str, Any]:
    """``connections`` keep-alive connections, each sending ``make(n)`` back to back."""
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    counter = iter(range(10**12))
    stop_at = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < stop_at:
                payload = make(next(counter))
                t0 = time.perf_counter()
                writer.write(payload)
                status, body = await _read_response(reader)
                latencies.append(time.perf_counter() - t0)
                if status >= 300:
                    errors += 1
                    if not first_error:
                        first_error.append(f"{status} {body[:300].decode('utf-8', 'replace')}")
        finally:
            writer.close()
            await writer.wait_closed()

    t0 = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(connections)))
    elapsed = time.perf_counter() - t0
    lat = np.array(latencies) * 1000.0
    return {"requests": len(latencies), "records": len(latencies) * per_request,
            "errors": errors, "first_error": first_error[0] if first_error else None,
            "elapsed_s": round(elapsed, 2),
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "records_per_s": round(len(latencies) * per_request / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 2),
            "p95_ms": round(float(np.percentile(lat, 95)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2)}


def start_server(tmp: Path, port: int, env: dict[str, str], workflow: Path | None = None,
                 db: str | None = None) -> subprocess.Popen[bytes]:
    """`keel serve` on ``workflow`` (the demo) and ``db`` (tmp/keel.db), once it is ready."""
    cmd = [sys.executable, "-m", "keel", "serve", str(workflow or EXAMPLE / "workflow.py"),
           "--port", str(port), "--db", db or f"sqlite:///{tmp / 'keel.db'}",
           "--max-batch", "2000", "--max-body-mb", "8"]
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"keel serve exited: {proc.stderr.read().decode()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("keel serve did not become ready")


def server_stats(port: int, key: str) -> dict[str, Any]:
    import httpx

    got = httpx.get(f"http://127.0.0.1:{port}/v1/status",
                    headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    return dict(got["server"])


def batching(before: dict[str, Any], after: dict[str, Any], elapsed_s: float) -> dict[str, Any]:
    """How the server grouped requests: mean records per pipeline batch, pipeline busy share."""
    batches = after["batches"] - before["batches"]
    records = after["records"] - before["records"]
    busy = after["pipeline_busy_s"] - before["pipeline_busy_s"]
    return {"mean_batch": round(records / batches, 1) if batches else None,
            "pipeline_busy_share": round(busy / elapsed_s, 2) if elapsed_s else None}


def pipeline_baseline(tmp: Path, words: list[str], n: int) -> dict[str, Any]:
    import keel

    rows = tmp / "pipeline.csv"
    with rows.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"p{i}", words[i % len(words)]])
    t0 = time.perf_counter()
    s = keel.run(EXAMPLE / "workflow.py", rows, db=f"sqlite:///{tmp / 'pipeline.db'}",
                 batch_size=1000)
    elapsed = time.perf_counter() - t0
    return {"records": s.read, "elapsed_s": round(elapsed, 2),
            "records_per_s": round(s.read / elapsed, 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--connections", default="8,32,64",
                    help="concurrent connections for the single-record runs, comma-separated")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--batch-connections", type=int, default=4)
    args = ap.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    words = texts()
    tmp = Path(tempfile.mkdtemp(prefix="keel-bench-serve-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"),
           "KEEL_ARTIFACTS": os.environ.get("KEEL_ARTIFACTS", str(ROOT / ".keel" / "artifacts"))}
    os.environ["KEEL_ARTIFACTS"] = env["KEEL_ARTIFACTS"]
    from keel.server import create_key
    from keel.store import Store

    store = Store.open(f"sqlite:///{tmp / 'keel.db'}")
    key = create_key(store, "submitter", "bench")[1]
    store.close()
    port = 18000 + os.getpid() % 1000
    proc = start_server(tmp, port, env)
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    try:
        health = request("GET", "/healthz", key)
        levels = sorted(int(x) for x in args.connections.split(","))
        emit(measurement="healthz", connections=levels[-1], **machine,
             **asyncio.run(drive(port, lambda n: health, levels[-1], args.seconds / 2, 1)))

        def single(n: int) -> bytes:
            body = json.dumps({"id": f"s{n}", "text": words[n % len(words)]}).encode()
            return request("POST", "/v1/decisions", key, body)

        asyncio.run(drive(port, single, levels[-1], 2.0, 1))  # warm-up
        for conns in levels:
            before = server_stats(port, key)
            found = asyncio.run(drive(port, single, conns, args.seconds, 1))
            emit(measurement="single", connections=conns, **machine, **found,
                 **batching(before, server_stats(port, key), found["elapsed_s"]))

        def batch(n: int) -> bytes:
            recs = [{"id": f"b{n}-{i}", "text": words[(n * args.batch + i) % len(words)]}
                    for i in range(args.batch)]
            return request("POST", "/v1/decisions", key, json.dumps({"records": recs}).encode())

        emit(measurement="batch", connections=args.batch_connections, batch=args.batch,
             **machine, **asyncio.run(drive(port, batch, args.batch_connections,
                                                 args.seconds, args.batch)))
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    emit(measurement="pipeline", batch=1000, **machine,
         **pipeline_baseline(tmp, words, 50000))


if __name__ == "__main__":
    main()
