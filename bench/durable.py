"""The durable path against its floor, on SQLite and on PostgreSQL.

    python bench/durable.py [--records 50000] [--repeats 3] [--stores sqlite,postgres]

The floor is a plain loop that does the durable work keel does for an automatically accepted
record, and nothing else: read the CSV with pyarrow, call the model per 500-record batch,
look the keys up in the store (deduplication), and write per record the record, the model's
answer, the decision and a hash-chained audit segment (SHA-256 over the previous hash and the
record's rows), with executemany in one transaction per batch. It leaves out what keel also
does: input and output contracts, routing with a calibrated policy, review tasks, the
checkpoint of answers before deciding, crash-safe resume, metrics, the run's own rows.

The model is a no-op (a constant answer), so the figures are keel's own cost and the store's.
Each repeat runs floor and keel on SQLite, then on PostgreSQL (a fresh schema each time),
interleaved. Prints one JSON line per run and a summary with medians and ratios:
keel/floor per store, and PostgreSQL/SQLite for keel and for the floor.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from _ticket import ticket_workflow  # noqa: E402  (bench/ is not a package)

BATCH = 500

NOOP_WORKFLOW = ticket_workflow("noop")

FLOOR_SCHEMA = [
    "create table records (id text primary key, key text unique, input text, created_at real)",
    "create table answers (record_id text primary key, output text, confidence real)",
    "create table decisions (record_id text primary key, disposition text, output text, "
    "decided_at real)",
    "create table events (seq integer primary key, record_id text, body text, prev text, "
    "hash text)",
]


def make_traffic(path: Path, n: int) -> None:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "text"])
        for i in range(n):
            w.writerow([f"r{i:08d}", f"where is my new card? order {i}"])


def pg_schema() -> Any:
    """A fresh PostgreSQL schema (the same helper as bench/workers.py)."""
    from workers import schema  # bench/ is on the path when a script here runs

    return schema()


def _connect(kind: str, where: str) -> tuple[Any, str]:
    """A DB-API connection as keel would open it, and its placeholder."""
    if kind == "sqlite":
        import sqlite3

        conn = sqlite3.connect(where, isolation_level=None)
        for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536"):
            conn.execute(f"PRAGMA {pragma}")
        return conn, "?"
    import psycopg

    path = where.split("://", 1)[1].split("?", 1)[0]
    opts = where.split("options=", 1)[1].replace("%3D", "=")
    return psycopg.connect(f"postgresql://{path}", options=opts, autocommit=True), "%s"


def floor(traffic: Path, kind: str, where: str) -> float:
    import pyarrow.csv as pacsv

    conn, mark = _connect(kind, where)
    try:
        cur = conn.cursor()
        for ddl in FLOOR_SCHEMA:
            cur.execute(ddl.replace("integer primary key", "bigint primary key")
                        if kind != "sqlite" else ddl)
        t0 = time.perf_counter()
        table = pacsv.read_csv(traffic)
        ids, texts = table.column("id").to_pylist(), table.column("text").to_pylist()
        prev, seq = "0" * 64, 0
        for start in range(0, len(ids), BATCH):
            keys, batch_texts = ids[start:start + BATCH], texts[start:start + BATCH]
            answers = [("card_arrival", 0.99) for _ in batch_texts]  # the no-op model
            cur.execute("begin")
            marks = ", ".join([mark] * len(keys))
            cur.execute(f"select key from records where key in ({marks})", keys)
            seen = {k for (k,) in cur.fetchall()}
            now = time.time()
            recs, outs, decs, evs = [], [], [], []
            for key, text_, (label, conf) in zip(keys, batch_texts, answers, strict=True):
                if key in seen:
                    continue
                rid = uuid.uuid4().hex
                inp = json.dumps({"id": key, "text": text_}, separators=(",", ":"))
                out = json.dumps({"intent": label}, separators=(",", ":"))
                recs.append((rid, key, inp, now))
                outs.append((rid, out, conf))
                decs.append((rid, "accepted", out, now))
                body = json.dumps([rid, inp, out, conf, "accepted"], separators=(",", ":"))
                prev = hashlib.sha256((prev + body).encode()).hexdigest()
                seq += 1
                evs.append((seq, rid, body, prev, prev))
            cur.executemany(f"insert into records values ({mark}, {mark}, {mark}, {mark})", recs)
            cur.executemany(f"insert into answers values ({mark}, {mark}, {mark})", outs)
            cur.executemany(f"insert into decisions values ({mark}, {mark}, {mark}, {mark})", decs)
            cur.executemany(f"insert into events values ({mark}, {mark}, {mark}, {mark}, {mark})",
                            evs)
            cur.execute("commit")
        return len(ids) / (time.perf_counter() - t0)
    finally:
        conn.close()


def keel_run(workflow: Path, traffic: Path, db: str) -> float:
    import keel

    t0 = time.perf_counter()
    s = keel.run(workflow, traffic, db=db, batch_size=BATCH)
    elapsed = time.perf_counter() - t0
    assert s.decided == s.read, s.as_dict()
    return s.read / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--stores", default="sqlite,postgres")
    args = ap.parse_args()
    stores = args.stores.split(",")
    found: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        traffic, wf = tmp / "traffic.csv", tmp / "workflow.py"
        make_traffic(traffic, args.records)
        wf.write_text(NOOP_WORKFLOW)
        import keel

        keel.run(wf, traffic, db=f"sqlite:///{tmp / 'warm.db'}")  # imports, first-run work
        for rep in range(args.repeats):
            for store in stores:
                for who in ("floor", "keel"):
                    if store == "sqlite":
                        path = tmp / f"{who}-{rep}.db"
                        rate = (floor(traffic, "sqlite", str(path)) if who == "floor"
                                else keel_run(wf, traffic, f"sqlite:///{path}"))
                    else:
                        with pg_schema() as url:
                            rate = (floor(traffic, "postgres", url) if who == "floor"
                                    else keel_run(wf, traffic, url))
                    found.setdefault(f"{who} {store}", []).append(rate)
                    print(json.dumps({"bench": "durable", "who": who, "store": store,
                                      "repeat": rep, "records": args.records,
                                      "records_per_s": round(rate, 1)}), flush=True)
    med = {k: round(statistics.median(v), 1) for k, v in found.items()}
    summary: dict[str, Any] = {"bench": "durable summary", "median_records_per_s": med}
    for store in stores:
        summary[f"keel/floor {store}"] = round(med[f"keel {store}"] / med[f"floor {store}"], 3)
    if len(stores) == 2:
        summary["keel postgres/sqlite"] = round(med["keel postgres"] / med["keel sqlite"], 3)
        summary["floor postgres/sqlite"] = round(med["floor postgres"] / med["floor sqlite"], 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
