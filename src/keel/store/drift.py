"""Store queries for drift monitoring: reference profiles, and a window of decided records
streamed in chunks (never the whole window in memory)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select

from keel._record import new_id
from keel.store import _schema as t
from keel.store._store import Store


@dataclass(frozen=True)
class WindowSpec:
    """Which records a window holds: created in [since, until), or the last N, or one run."""

    since: float | None = None
    until: float | None = None
    last: int | None = None
    run_id: str | None = None
    label: str = "all"


def save_profile(store: Store, workflow: str, name: str, source: str, profile: str) -> str:
    pid = new_id()
    with store.tx() as conn:
        conn.execute(
            t.profiles.insert().values(
                id=pid,
                workflow=workflow,
                name=name,
                source=source,
                profile=profile,
                created_at=time.time(),
            )
        )
    return pid


def load_profile(
    store: Store, workflow: str, name: str = "reference", profile_id: str | None = None
) -> tuple[str, str, float] | None:
    """(id, profile json, created_at) of the newest profile by that name, or the one asked for."""
    p = t.profiles
    q = select(p.c.id, p.c.profile, p.c.created_at).where(p.c.workflow == workflow)
    q = q.where(p.c.id == profile_id) if profile_id else q.where(p.c.name == name)
    q = q.order_by(p.c.created_at.desc()).limit(1)
    with store.engine.connect() as conn:
        row = conn.execute(q).first()
    return (row[0], row[1], row[2]) if row else None


def list_profiles(store: Store, workflow: str) -> list[dict[str, Any]]:
    p = t.profiles
    q = (
        select(p.c.id, p.c.name, p.c.source, p.c.created_at)
        .where(p.c.workflow == workflow)
        .order_by(p.c.created_at.desc())
    )
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(q).mappings()]


def window_rows(
    store: Store, workflow: str, spec: WindowSpec, chunk: int = 2000
) -> Iterator[list[dict[str, Any]]]:
    """Records of ``workflow`` in the window with their decision and quarantine violations,
    ``chunk`` rows at a time (a server-side cursor on PostgreSQL)."""
    r, d, qt = t.records, t.decisions, t.quarantine
    q = (
        select(
            r.c.key,
            r.c.input,
            r.c.created_at,
            d.c.disposition,
            d.c.reason,
            d.c.output,
            d.c.confidence,
            qt.c.violations,
        )
        .select_from(
            r.outerjoin(d, d.c.record_id == r.c.id).outerjoin(qt, qt.c.record_id == r.c.id)
        )
        .where(r.c.workflow == workflow)
    )
    conds = []
    if spec.since is not None:
        conds.append(r.c.created_at >= spec.since)
    if spec.until is not None:
        conds.append(r.c.created_at < spec.until)
    if spec.run_id is not None:
        conds.append(r.c.run_id == spec.run_id)
    if conds:
        q = q.where(and_(*conds))
    if spec.last is not None:
        q = q.order_by(r.c.created_at.desc(), r.c.id.desc()).limit(spec.last)
    with store.engine.connect() as conn:
        result = conn.execution_options(yield_per=chunk).execute(q)
        for part in result.mappings().partitions(chunk):
            yield [dict(row) for row in part]
