"""API keys and who holds them: create (shown once), list, revoke, authenticate."""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any

from keel.errors import NotFoundError, UserError
from keel.store import Store
from keel.store import keys as sq
from keel.store.keys import hash_key

ROLES = ("submitter", "reviewer", "approver", "admin")

#: What each role may do. Admin may do everything.
PERMISSIONS: dict[str, frozenset[str]] = {
    "submit": frozenset({"submitter", "admin"}),
    "read": frozenset({"submitter", "reviewer", "approver", "admin"}),
    "sign": frozenset({"approver", "admin"}),
    "review": frozenset({"reviewer", "admin"}),
    "dashboard": frozenset({"reviewer", "approver", "admin"}),
    "admin": frozenset({"admin"}),
}

PREFIX = "keel_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id, name and role."""

    key_id: str
    name: str
    role: str

    def may(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]


def create_key(store: Store, role: str, name: str | None = None) -> tuple[dict[str, Any], str]:
    """Create a key; returns (its public record, the secret). The secret is never stored."""
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    key_id = secrets.token_hex(6)
    secret = PREFIX + secrets.token_urlsafe(32)
    sq.insert_key(store, key_id, name or f"{role}-{key_id}", role, hash_key(secret))
    record = sq.key_by_id(store, key_id)
    assert record is not None
    return record, secret


def list_keys(store: Store) -> list[dict[str, Any]]:
    return sq.list_keys(store)


def revoke_key(store: Store, key_id: str) -> None:
    if not sq.revoke_key(store, key_id):
        raise NotFoundError(f"no active API key with id {key_id!r}; `keel keys list` shows them")


class Authenticator:
    """Looks keys up by hash, with a short cache so the hot path rarely asks the database.

    A revocation through the server takes effect at once (the cache is cleared); one made
    with ``keel keys revoke`` from another process takes effect within ``ttl_s``.
    """

    def __init__(self, store: Store, ttl_s: float = 5.0) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._used: dict[str, float] = {}
        self._lock = threading.Lock()

    def by_secret(self, secret: str) -> Principal | None:
        return self._cached("h:" + hash_key(secret), lambda k: sq.key_by_hash(self.store, k[2:]))

    def by_id(self, key_id: str) -> Principal | None:
        return self._cached("i:" + key_id, lambda k: sq.key_by_id(self.store, k[2:]))

    def _cached(self, ck: str, fetch: Any) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(ck)
        if hit is not None and hit[0] > now:
            found = hit[1]
        else:
            row = fetch(ck)
            found = (Principal(row["id"], row["name"] or row["id"], row["role"])
                     if row and row["revoked_at"] is None else None)
            with self._lock:
                if len(self._cache) > 10000:
                    self._cache.clear()
                self._cache[ck] = (now + self.ttl_s, found)
        if found is not None:
            self._used[found.key_id] = time.time()
        return found

    def forget(self) -> None:
        with self._lock:
            self._cache.clear()

    def flush_usage(self) -> None:
        """Write ``last_used_at`` for keys used since the last flush."""
        with self._lock:
            used, self._used = self._used, {}
        if used:
            sq.touch_keys(self.store, used)
