"""The Python API for reading the store: status, trace, quarantine.

Kept apart from run and replay so that reading a store imports no model or runner code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from keel.errors import NotFoundError
from keel.redact import for_spec
from keel.store import queries as q
from keel.store._store import Store
from keel.store.monitoring import workflow_specs


@contextmanager
def opened(store: Store | None, db: str | None) -> Iterator[Store]:
    """The caller's store as it is, or one opened from ``db`` (and closed after)."""
    if store is not None:
        yield store
        return
    st = Store.open(db)
    try:
        yield st
    finally:
        st.close()


def status(*, db: str | None = None, workflow: str | None = None,
           store: Store | None = None) -> list[dict[str, Any]]:
    with opened(store, db) as st:
        names = [workflow] if workflow else q.workflow_names(st)
        return [q.status(st, n) for n in names]


def masked(st: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with personal data masked, per their workflow's declared sensitive fields."""
    specs = workflow_specs(st)
    out = []
    for row in rows:
        red = for_spec(specs.get(row["workflow"]))
        out.append(red.value(row, red.known_values(row.get("input"))))
    return out


def trace(key: str, *, db: str | None = None, workflow: str | None = None,
          store: Store | None = None, raw: bool = False) -> list[dict[str, Any]]:
    """A record's whole story. Personal data is masked unless ``raw`` (for admins)."""
    with opened(store, db) as st:
        found = q.trace(st, key, workflow)
        if found and not raw:
            found = masked(st, found)
    if not found:
        raise NotFoundError(f"no record with key {key!r}; `keel status` lists what the store holds")
    return found


def quarantined(*, db: str | None = None, workflow: str | None = None,
                store: Store | None = None, raw: bool = False) -> list[dict[str, Any]]:
    """Open quarantine entries; personal data is masked unless ``raw``."""
    with opened(store, db) as st:
        rows = q.quarantined(st, workflow)
        return rows if raw else masked(st, rows)
