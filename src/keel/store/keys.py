"""API keys: only hashes are stored; the key itself is shown once when created."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from sqlalchemy import select, update

from keel.store import _schema as t
from keel.store._store import Store

_PUBLIC = (t.api_keys.c.id, t.api_keys.c.name, t.api_keys.c.role, t.api_keys.c.created_at,
           t.api_keys.c.revoked_at, t.api_keys.c.last_used_at)


def hash_key(secret: str) -> str:
    """Keys are 256 random bits, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def insert_key(store: Store, key_id: str, name: str | None, role: str, key_hash: str) -> None:
    with store.tx() as conn:
        conn.execute(t.api_keys.insert().values(id=key_id, name=name, role=role, hash=key_hash,
                                                created_at=time.time()))


def list_keys(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        rows = conn.execute(select(*_PUBLIC).order_by(t.api_keys.c.created_at)).mappings()
        return [dict(r) for r in rows]


def key_by_hash(store: Store, key_hash: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(*_PUBLIC).where(t.api_keys.c.hash == key_hash)).mappings().first()
    return dict(row) if row else None


def key_by_id(store: Store, key_id: str) -> dict[str, Any] | None:
    with store.engine.connect() as conn:
        row = conn.execute(select(*_PUBLIC).where(t.api_keys.c.id == key_id)).mappings().first()
    return dict(row) if row else None


def revoke_key(store: Store, key_id: str) -> bool:
    """Revoke an active key; False when no active key has this id."""
    k = t.api_keys
    with store.tx() as conn:
        done = conn.execute(update(k).where(k.c.id == key_id, k.c.revoked_at.is_(None))
                            .values(revoked_at=time.time()))
    return bool(done.rowcount)


def touch_keys(store: Store, used: dict[str, float]) -> None:
    """Record when keys were last used (batched by the server, not once per request)."""
    k = t.api_keys
    with store.tx() as conn:
        for key_id, at in used.items():
            conn.execute(update(k).where(k.c.id == key_id).values(last_used_at=at))
