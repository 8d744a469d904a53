"""The queue workers share: records submitted and not yet decided, each claimed under a lease.

Workers coordinate only through the store. On PostgreSQL a claim takes the oldest pending
records of the highest priority with ``FOR UPDATE SKIP LOCKED`` (concurrent claims never
wait on each other and never take the same record); a lease that ran out makes its records
claimable again. A batch's decisions are committed only if its worker still holds the lease
(:func:`settle`, in the batch's own transaction): a worker that lost its lease (paused,
cut off) cannot decide a record another worker took over.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select, text, update

from keel.errors import StoreError
from keel.store import _schema as t
from keel.store._store import Store, _chunks


class StaleLease(StoreError):
    """A worker tried to commit records whose lease another worker holds now."""

    code = "keel.store.stale_lease"


def load(store: Store, record_ids: Sequence[str]) -> list[tuple[str, str, str, str | None]]:
    """(record id, key, stored input, source) of claimed records, in the order given."""
    r = t.records
    found: dict[str, tuple[str, str, str, str | None]] = {}
    with store.engine.connect() as conn:
        for part in _chunks(list(record_ids)):
            for rid, key, raw, source in conn.execute(
                    select(r.c.id, r.c.key, r.c.input, r.c.source).where(r.c.id.in_(part))):
                found[str(rid)] = (str(rid), str(key), str(raw), source)
    return [found[rid] for rid in record_ids if rid in found]


def queued(store: Store, record_ids: Sequence[str]) -> set[str]:
    """Which of these records are already in the queue (waiting, leased or done)."""
    q = t.queue
    out: set[str] = set()
    with store.engine.connect() as conn:
        for part in _chunks(list(record_ids)):
            out.update(str(r) for (r,) in conn.execute(select(q.c.record_id)
                                                       .where(q.c.record_id.in_(part))))
    return out


def claim(store: Store, workflow: str, owner: str, n: int,
          lease_s: float) -> list[tuple[str, int]]:
    """Lease up to ``n`` records (pending, or leased by a worker whose lease ran out):
    (record id, claims so far, this one included), highest priority and oldest first."""
    q = t.queue
    now = time.time()
    free = or_(q.c.status == "pending", and_(q.c.status == "leased", q.c.lease_until < now))
    pick = (select(q.c.record_id).where(q.c.workflow == workflow, free)
            .order_by(q.c.priority.desc(), q.c.enqueued_at).limit(n))
    with store.tx() as conn:
        if store.engine.dialect.name == "postgresql":
            pick = pick.with_for_update(skip_locked=True)
        else:  # SQLite: one writer at a time; take the write lock before reading
            conn.execute(text("SELECT 1"))
        ids = [r for (r,) in conn.execute(pick)]
        if not ids:
            return []
        rows = conn.execute(update(q).where(q.c.record_id.in_(ids)).values(
            status="leased", owner=owner, lease_until=now + lease_s,
            attempts=q.c.attempts + 1).returning(q.c.record_id, q.c.attempts)).all()
    order = {rid: n for n, rid in enumerate(ids)}
    return sorted(((str(r), int(a)) for r, a in rows), key=lambda x: order[x[0]])


def renew(store: Store, owner: str, record_ids: Sequence[str], lease_s: float) -> int:
    """Extend the lease on records this worker still holds; how many it still holds."""
    q = t.queue
    held = 0
    with store.tx() as conn:
        for part in _chunks(list(record_ids)):
            held += conn.execute(update(q).where(q.c.record_id.in_(part), q.c.owner == owner,
                                                 q.c.status == "leased")
                                 .values(lease_until=time.time() + lease_s)).rowcount
    return held


def release(store: Store, owner: str, record_ids: Sequence[str]) -> None:
    """Hand records back undecided (a worker stopping with a batch not begun, or whose store
    failed mid-batch): not the records' fault, so the claim does not count toward poison."""
    q = t.queue
    with store.tx() as conn:
        for part in _chunks(list(record_ids)):
            conn.execute(update(q).where(q.c.record_id.in_(part), q.c.owner == owner,
                                         q.c.status == "leased")
                         .values(status="pending", owner=None, lease_until=None,
                                 attempts=q.c.attempts - 1))  # a claim made it at least 1


def settle(conn: Connection, owner: str, record_ids: Sequence[str]) -> None:
    """In the batch's transaction: mark its records done, if this worker still holds every
    lease; else raise :class:`StaleLease` and the whole transaction is rolled back."""
    q = t.queue
    done = 0
    for part in _chunks(list(record_ids)):
        done += conn.execute(update(q).where(q.c.record_id.in_(part), q.c.owner == owner,
                                             q.c.status == "leased")
                             .values(status="done", lease_until=None)).rowcount
    if done != len(record_ids):
        raise StaleLease(f"{len(record_ids) - done} of {len(record_ids)} records of this batch "
                         "were taken over by another worker after this one's lease ran out; "
                         "its decisions are dropped (the other worker decides them)")


def hold(conn: Connection, owner: str, record_ids: Sequence[str]) -> None:
    """In a transaction writing a worker's answers before its decisions: check (and lock,
    so no claim can take them until it commits) that this worker still holds the leases."""
    q = t.queue
    held = 0
    for part in _chunks(list(record_ids)):
        query = select(q.c.record_id).where(q.c.record_id.in_(part), q.c.owner == owner,
                                            q.c.status == "leased")
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        held += len(conn.execute(query).all())
    if held != len(record_ids):
        raise StaleLease(f"{len(record_ids) - held} of {len(record_ids)} records of this batch "
                         "were taken over by another worker after this one's lease ran out; "
                         "its answers are dropped (the other worker decides them)")


def depth(store: Store, workflow: str) -> dict[str, Any]:
    """Records waiting (pending or leased) and the age of the oldest pending one."""
    q = t.queue
    with store.engine.connect() as conn:
        counts: dict[str, int] = dict(conn.execute(select(q.c.status, func.count()).where(
            q.c.workflow == workflow, q.c.status != "done").group_by(q.c.status)).all())
        oldest = conn.execute(select(func.min(q.c.enqueued_at)).where(
            q.c.workflow == workflow, q.c.status == "pending")).scalar_one()
    return {"pending": int(counts.get("pending", 0)), "leased": int(counts.get("leased", 0)),
            "oldest_pending_age_s": (time.time() - float(oldest)) if oldest else None}


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


def heartbeat(store: Store, worker: str, workflow: str, decided: int, status: str,
              started_at: float) -> None:
    w = t.workers
    now = time.time()
    with store.tx() as conn:
        hit = conn.execute(update(w).where(w.c.id == worker).values(
            heartbeat_at=now, decided=decided, status=status)).rowcount
        if not hit:
            host, pid = worker.split(":")[:2]
            conn.execute(w.insert().values(id=worker, workflow=workflow, host=host, pid=int(pid),
                                           started_at=started_at, heartbeat_at=now,
                                           decided=decided, status=status))


def workers(store: Store, workflow: str | None = None) -> list[dict[str, Any]]:
    """Workers with their last heartbeat, records decided and leases held."""
    w, q = t.workers, t.queue
    with store.engine.connect() as conn:
        query = select(w).order_by(w.c.started_at)
        if workflow:
            query = query.where(w.c.workflow == workflow)
        rows = [dict(r) for r in conn.execute(query).mappings()]
        leases: dict[str, int] = dict(conn.execute(select(q.c.owner, func.count()).where(
            q.c.status == "leased").group_by(q.c.owner)).all())
    now = time.time()
    for r in rows:
        r["leases"] = int(leases.get(r["id"], 0))
        r["alive"] = r["status"] == "working" and now - r["heartbeat_at"] < 30.0
        up = max(1e-9, r["heartbeat_at"] - r["started_at"])
        r["records_per_s"] = r["decided"] / up
    return rows
