"""Submitting records for workers, and the worker loop: claim a batch under a lease, decide
it through the same stages as `keel run`, commit it only while the lease holds."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from keel import _json
from keel._record import Item, new_id
from keel.contracts import Violation
from keel.errors import StoreError, UserError
from keel.runtime._runner import ProgressFn, Runner, RunSummary, _batches, _Flight, _Writer
from keel.runtime._speed import young_gc_only
from keel.runtime._writer import RowWriter
from keel.stages import Admitter, RawRow
from keel.store import BatchRows, batch_rows
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
    # the writer is at most one chunk behind: when a chunk is admitted, every chunk before
    # the last one is committed, and the store answers for their keys
    admitter = Admitter(wf.key, lambda keys: store.lookup(wf.name, keys), runner._stored_form,
                        remember_calls=2)
    t0 = time.perf_counter()
    writer = _Writer()  # a chunk is written while the next one is read and admitted
    try:
        with young_gc_only():
            for batch in _batches(rows, runner.batch_size):
                bad, good = _admit(runner, admitter, batch, summary)
                writer.submit(_queue, runner, summary, bad, good, priority)
                if progress:
                    progress(len(batch))
            writer.wait()
    finally:
        try:
            writer.close()
        finally:
            summary.elapsed_s = time.perf_counter() - t0
            store.finish_run(summary.run_id, summary.as_dict())
    return summary


def _admit(runner: Runner, admitter: Admitter, batch: list[RawRow],
           summary: RunSummary) -> tuple[list[Item], list[Item]]:
    """A chunk's rows admitted and validated: (bad rows, rows to queue)."""
    store = runner.store
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
    return bad, good


def _queue(runner: Runner, summary: RunSummary, bad: list[Item], good: list[Item],
           priority: int) -> None:
    """Store a submitted chunk: its bad rows quarantined, the rest pending for workers;
    counted once committed."""
    wf, store = runner.wf, runner.store
    if bad:
        store.write_rows(batch_rows(wf.name, summary.run_id, bad, runner.policy))
        summary.add(bad)
    if good:
        store.write_pending(wf.name, summary.run_id, good, priority)
        summary.queued += len(good)


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
    with its decisions only while the lease holds.

    Two batches are in hand at a time (as `keel run` reads ahead): the next batch is claimed
    and its model calls begun while the current one's last calls finish, so the model is
    never idle at a batch's end. Both leases are renewed; on a stop both are finished."""
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
    held = _Held()
    runner._writer = _LeasedWriter(summary, held)
    runner.rows_writer = RowWriter(store, 10**12)  # in-process: the lease check is in its tx
    runner._defer = False  # retries stay in the batch: its lease covers exactly its records
    renewing = threading.Event()
    renewer = threading.Thread(target=_renew, args=(store, me, held, lease_s, renewing),
                               name="keel-lease", daemon=True)
    renewer.start()
    t0 = time.perf_counter()
    window: list[_Batch] = []  # claimed and begun, not yet landed: oldest first
    try:
        q.heartbeat(store, me, wf.name, 0, "working", started)
        while True:
            try:
                fresh = None if stop.is_set() else _start(runner, summary.run_id, me, held,
                                                          lease_s)
                if fresh is not None:
                    window.append(fresh)
                if window and (fresh is None or len(window) > 1):
                    _land(runner, window.pop(0), summary, me, held)
                    q.heartbeat(store, me, wf.name, summary.decided, "working", started)
                    if on_batch is not None:
                        on_batch(summary)
                    continue
                if fresh is not None:
                    continue  # claim the next batch while this one's calls run
                runner._writer.wait()  # nothing in hand: the last batch's commit is done
                q.heartbeat(store, me, wf.name, summary.decided, "working", started)
                if stop.is_set() or until_empty:
                    break
                stop.wait(poll_s)
            except (StoreError, SQLAlchemyError) as exc:  # the store went away: wait for it
                _outage(runner, summary, me, held, window, stop, exc)
                window.clear()
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


@dataclass(slots=True)
class _Batch:
    """A claimed batch whose model calls are under way."""

    ids: list[str]
    items: list[Item]
    flight: _Flight | None


def _start(runner: Runner, run_id: str, me: str, held: _Held, lease_s: float) -> _Batch | None:
    """Claim the next batch and begin its model calls; None when nothing is waiting."""
    store = runner.store
    claimed = q.claim(store, runner.wf.name, me, runner.batch_size, lease_s)
    if not claimed:
        return None
    ids = [rid for rid, _n in claimed]
    held.add(ids)  # renewed from now on, until it is committed or handed back
    items = _items(q.load(store, ids), dict(claimed))
    store.resume_state(items)
    runner._load_breakers(reset=False)  # a breaker another worker opened holds here
    runner._lease = (me, ids)  # checkpoints written while its calls run check this worker's lease
    return _Batch(ids, items, runner._begin(items, run_id=run_id))


def _land(runner: Runner, batch: _Batch, summary: RunSummary, me: str, held: _Held) -> None:
    """Wait for a batch's answers, route it, and hand its rows (with its lease) to the writer,
    which commits them only while this worker holds every one of the batch's leases."""
    runner._lease = (me, batch.ids)
    try:
        if batch.flight is not None:
            runner._land(batch.flight, summary)
        else:  # none of its records could be loaded: nothing to decide
            held.drop(batch.ids)
    except q.StaleLease as exc:  # a checkpoint was refused: another worker took the batch over
        _lost(summary, batch, exc)
        held.drop(batch.ids)


def _lost(summary: RunSummary, batch: _Batch | None, exc: q.StaleLease, n: int = 0) -> None:
    count = len(batch.ids) if batch is not None else n
    summary.lost_leases += count
    summary.read += len(batch.items) if batch is not None else n
    summary.notes.append(exc.message)


class _LeasedWriter(_Writer):
    """The worker's writer: a batch's commit that finds its lease taken over is dropped and
    counted (the other worker decides it), without failing the batch committed after it; a
    batch counts as read once its commit is done, so one handed back in an outage is not
    counted twice."""

    def __init__(self, summary: RunSummary, held: _Held) -> None:
        super().__init__()
        self.summary, self.held = summary, held

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        lease = args[0].lease if isinstance(args[0], BatchRows) else None
        ids: list[str] = lease[1] if lease is not None else []
        super().submit(self._guarded, fn, args, ids)

    def _guarded(self, fn: Callable[..., None], args: tuple[Any, ...], ids: list[str]) -> None:
        try:
            fn(*args)
        except q.StaleLease as exc:
            _lost(self.summary, None, exc, len(ids))
        else:
            self.summary.read += len(ids)
        self.held.drop(ids)


class _Held:
    """The record ids of the batches a worker has claimed and not yet committed or handed
    back: the lease renewer extends exactly these."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_batch: dict[int, list[str]] = {}

    def add(self, ids: list[str]) -> None:
        with self._lock:
            self._by_batch[id(ids)] = ids

    def drop(self, ids: list[str]) -> None:
        with self._lock:
            self._by_batch.pop(id(ids), None)

    def ids(self) -> list[str]:
        with self._lock:
            return [rid for ids in self._by_batch.values() for rid in ids]

    def clear(self) -> None:
        with self._lock:
            self._by_batch.clear()


def _outage(runner: Runner, summary: RunSummary, me: str, held: _Held, window: list[_Batch],
            stop: threading.Event, exc: Exception) -> None:
    """The store failed mid-batch (a restart, a network cut): what was not committed yet
    died with its transaction. Let the batches in hand stop, wait until the store answers
    again, hand every one of them back so that they are claimed again at once (by this worker
    or another), and go on."""
    first = str(exc).splitlines()[0][:200]
    summary.notes.append(f"the store failed ({first}); waited for it and went on")
    log.warning("store unavailable, retrying: %s", first)
    wait_futures([b.flight.called for b in window if b.flight is not None])
    old, runner._writer = runner._writer, _LeasedWriter(summary, held)
    if old.pending is not None:  # the failed batch's writes died with their transaction
        wait_futures([old.pending])
    wait = 0.5
    while not stop.is_set():
        try:
            ids = held.ids()
            if ids:
                q.release(runner.store, me, ids)  # a batch committed meanwhile is not touched
            else:
                q.depth(runner.store, runner.wf.name)
            held.clear()
            summary.store_outages += 1
            return
        except (StoreError, SQLAlchemyError):
            stop.wait(wait)
            wait = min(wait * 2, 5.0)


def _renew(store: Any, me: str, held: _Held, lease_s: float, done: threading.Event) -> None:
    """Keep the leases of the batches in hand alive while they are decided."""
    while not done.wait(lease_s / 3):
        ids = held.ids()
        if ids:
            try:
                q.renew(store, me, ids, lease_s)
            except Exception:
                continue
