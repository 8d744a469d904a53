"""Submitting records for workers, and the worker loop: claim a batch under a lease, decide
it through the same stages as `keel run`, commit it only while the lease holds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from keel import _json
from keel._record import Item, new_id
from keel.contracts import Violation
from keel.errors import StoreError, UserError
from keel.runtime._runner import ProgressFn, Runner, RunSummary, _batches, _Writer
from keel.runtime._writer import RowWriter
from keel.stages import Admitter, RawRow
from keel.store import batch_rows
from keel.store import queue as q

log = logging.getLogger("keel.worker")

#: A record that was claimed this many times without being decided crashes its workers: it is
#: quarantined with the reason instead of being tried forever.
MAX_CLAIMS = 3


def submit(runner: Runner, rows: Iterable[RawRow], *, source: str, priority: int = 0,
           progress: ProgressFn | None = None) -> RunSummary:
    """Admit rows (deduplicated by key; bad rows quarantined as `keel run` does) and queue
    the rest for workers. ``counts["pending"]`` in the summary's ``queued``."""
    runner._register()
    wf, store = runner.wf, runner.store
    summary = RunSummary(wf.name, new_id(), source)
    store.start_run(summary.run_id, wf.name, "submit", source)
    admitter = Admitter(wf.key, lambda keys: store.lookup(wf.name, keys), runner._stored_form)
    t0 = time.perf_counter()
    try:
        for batch in _batches(rows, runner.batch_size):
            admitted = admitter(batch)
            summary.read += len(batch)
            summary.duplicates += len(admitted.duplicates)
            summary.conflicts += admitted.conflicts
            seen = q.queued(store, [i.record_id for i in admitted.items if not i.is_new])
            items = [i for i in admitted.items if i.record_id not in seen]
            summary.duplicates += len(admitted.items) - len(items)  # queued before
            store.resume_state(items)
            runner.validator(items)
            bad = [i for i in items if i.disposition is not None]
            good = [i for i in items if i.disposition is None]
            if runner.scrubber is not None:
                runner.scrubber(items)
            if bad:
                store.write_rows(batch_rows(wf.name, summary.run_id, bad, runner.policy))
                summary.add(bad)
            if good:
                store.write_pending(wf.name, summary.run_id, good, priority)
                summary.queued += len(good)
            if progress:
                progress(len(batch))
    finally:
        summary.elapsed_s = time.perf_counter() - t0
        store.finish_run(summary.run_id, summary.as_dict())
    return summary


def enqueue(runner: Runner, records: list[dict[str, Any]], *,
            source: str = "api") -> list[dict[str, Any]]:
    """``keel serve --enqueue``: queue already-parsed records for workers (as `keel submit`
    does) and answer for each, in order: queued, or already known (with its disposition, if
    a worker decided it), or quarantined with the reason."""
    wf, store = runner.wf, runner.store
    keys = [str(r[wf.key]) for r in records]
    distinct = list(dict.fromkeys(keys))
    before = store.lookup(wf.name, distinct)
    submit(runner, [RawRow(source, n, dict(r)) for n, r in enumerate(records, 1)], source=source)
    after = store.lookup(wf.name, distinct)
    out = []
    for k in keys:
        found, earlier = after.get(k), before.get(k)
        disposition = found.disposition if found else None
        out.append({"key": k, "record_id": found.record_id if found else "",
                    "disposition": disposition, "queued": found is not None and disposition is None,
                    "already_decided": earlier is not None and earlier.disposition is not None,
                    "url": f"/v1/records/{k}"})
    return out


def _items(found: list[tuple[str, str, str, str | None]], claims: dict[str, int]) -> list[Item]:
    items = []
    for rid, key, raw, source in found:
        item = Item(key=key, raw=_json.loads(raw), source=source or "queue", record_id=rid,
                    is_new=False)
        if claims.get(rid, 0) > MAX_CLAIMS:
            item.violations.append(Violation("*", "poison", (
                f"claimed {claims[rid] - 1} times and never decided: it crashes or hangs its "
                "worker; quarantined for a person to look at (`keel replay --quarantined` "
                "once fixed)")))
        items.append(item)
    return items


def work(runner: Runner, *, stop: threading.Event, worker: str | None = None,
         lease_s: float = 60.0, poll_s: float = 1.0, until_empty: bool = False,
         on_batch: Callable[[RunSummary], None] | None = None) -> RunSummary:
    """Decide queued records until ``stop`` is set (or, with ``until_empty``, the queue is
    empty). Each batch is claimed under a lease renewed while it is decided, and committed
    with its decisions only while the lease holds."""
    runner._register()
    wf, store = runner.wf, runner.store
    me = worker or q.worker_id()
    if store.engine.dialect.name == "sqlite":
        others = [w for w in q.workers(store, wf.name) if w["alive"] and w["id"] != me]
        if others:
            raise UserError(f"another worker ({others[0]['id']}) is deciding {wf.name} on this "
                            "SQLite store: SQLite has one writer at a time, so run one worker "
                            "per SQLite store, or use PostgreSQL for many")
    summary = RunSummary(wf.name, new_id(), f"worker:{me}")
    store.start_run(summary.run_id, wf.name, "worker", summary.source)
    started = time.time()
    runner._writer = _Writer()
    runner.rows_writer = RowWriter(store, 10**12)  # in-process: the lease check is in its tx
    runner._defer = False  # retries stay in the batch: its lease covers exactly its records
    held: list[str] = []
    renewing = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, me, held, lease_s, renewing),
                               name="keel-lease", daemon=True)
    renewer.start()
    t0 = time.perf_counter()
    try:
        q.heartbeat(store, me, wf.name, 0, "working", started)
        while not stop.is_set():
            try:
                claimed = q.claim(store, wf.name, me, runner.batch_size, lease_s)
                if not claimed:
                    q.heartbeat(store, me, wf.name, summary.decided, "working", started)
                    if until_empty:
                        break
                    stop.wait(poll_s)
                    continue
                ids = [rid for rid, _n in claimed]
                held[:] = ids
                items = _items(q.load(store, ids), dict(claimed))
                store.resume_state(items)
                runner._load_breakers(reset=False)  # a breaker another worker opened holds here
                _decide(runner, items, summary, me, ids)
                summary.read += len(items)  # after: a batch handed back in an outage is read again
                held[:] = []
                q.heartbeat(store, me, wf.name, summary.decided, "working", started)
            except (StoreError, SQLAlchemyError) as exc:  # the store went away: wait for it
                _outage(runner, summary, me, held, stop, exc)
                continue
            if on_batch is not None:
                on_batch(summary)
    finally:
        renewing.set()
        try:
            runner._writer.close()
        finally:
            runner.rows_writer.close()
            runner.close()
            summary.elapsed_s = time.perf_counter() - t0
            q.heartbeat(store, me, wf.name, summary.decided, "stopped", started)
            store.finish_run(summary.run_id, summary.as_dict())
    return summary


def _outage(runner: Runner, summary: RunSummary, me: str, held: list[str],
            stop: threading.Event, exc: Exception) -> None:
    """The store failed mid-batch (a restart, a network cut): nothing of the batch was
    committed. Wait until the store answers again, hand the batch back so that it is
    claimed again at once (by this worker or another), and go on."""
    first = str(exc).splitlines()[0][:200]
    summary.notes.append(f"the store failed ({first}); waited for it and went on")
    log.warning("store unavailable, retrying: %s", first)
    runner._writer = _Writer()  # the failed batch's writes died with their transaction
    wait = 0.5
    while not stop.is_set():
        try:
            if held:
                q.release(runner.store, me, list(held))
            else:
                q.depth(runner.store, runner.wf.name)
            held[:] = []
            summary.store_outages += 1
            return
        except (StoreError, SQLAlchemyError):
            stop.wait(wait)
            wait = min(wait * 2, 5.0)


def _decide(runner: Runner, items: list[Item], summary: RunSummary, me: str,
            ids: list[str]) -> None:
    runner._lease = (me, ids)
    try:
        runner._process(items, summary, run_id=summary.run_id)
        runner._writer.wait()
    except q.StaleLease as exc:  # another worker took the batch over: it decides it
        summary.lost_leases += len(ids)
        summary.notes.append(exc.message)
        runner._writer = _Writer()
    finally:
        runner._lease = None


def _renew(store: Any, me: str, held: list[str], lease_s: float, done: threading.Event) -> None:
    """Keep the current batch's lease alive while it is decided."""
    while not done.wait(lease_s / 3):
        ids = list(held)
        if ids:
            try:
                q.renew(store, me, ids, lease_s)
            except Exception:
                continue
