"""Token buckets in the store, so that a rate limit holds across processes and machines.

A bucket holds up to ``capacity`` units and refills at ``rate`` units a second. :func:`take`
grants ``want`` units only when they are there (all or nothing), inside one transaction that
locks the bucket's row (``FOR UPDATE`` on PostgreSQL; SQLite has one writer at a time), so
any number of processes together never take more than the bucket gives. :func:`settle`
takes or gives back the difference once a call's real size is known.
"""

from __future__ import annotations

import time

from sqlalchemy import select, update

from keel.store import _schema as t
from keel.store._engine import insert_ignore
from keel.store._store import Store


def take(store: Store, key: str, rate: float, capacity: float,
         want: float) -> tuple[float, float]:
    """Take ``want`` units from the shared bucket ``key`` if it has them. Returns what was
    granted (``want`` or 0) and, when nothing was, the seconds until there will be enough."""
    b = t.rate_buckets
    now = time.time()
    with store.tx() as conn:
        conn.execute(insert_ignore(store.engine, b).values(key=key, level=capacity, stamp=now))
        query = select(b.c.level, b.c.stamp).where(b.c.key == key)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        level, stamp = conn.execute(query).one()
        level = min(capacity, float(level) + max(0.0, now - float(stamp)) * rate)
        need = min(want, capacity)
        granted = want if level >= need else 0.0
        conn.execute(update(b).where(b.c.key == key).values(level=level - granted,
                                                            stamp=max(now, float(stamp))))
    return granted, (0.0 if granted else (need - level) / rate)


def settle(store: Store, key: str, amount: float) -> None:
    """Take ``amount`` more units (negative: give them back) without waiting."""
    b = t.rate_buckets
    with store.tx() as conn:
        conn.execute(update(b).where(b.c.key == key).values(level=b.c.level - amount))
