"""Deliveries: what each sink received, the dead letters, and sending them again."""

from __future__ import annotations

from typing import Any

from keel._webhook import WebhookSink
from keel.errors import NotFoundError
from keel.store import Store
from keel.store._delivery import SinkLedger


def deliveries(*, db: str | None = None, failed: bool = False, sink: str | None = None,
               store: Store | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Deliveries newest first; ``failed=True`` lists only dead letters (and pending ones)."""
    st = store or Store.open(db)
    try:
        return SinkLedger(st).listing(failed_only=failed, sink=sink, limit=limit)
    finally:
        if store is None:
            st.close()


def retry_deliveries(*, db: str | None = None, sink: str | None = None,
                     store: Store | None = None, max_attempts: int = 5,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send every dead (or pending) webhook delivery again; returns counts per sink.

    ``headers`` go with every POST (a receiver's credentials: keel never stores them, so a
    retry needs them again)."""
    st = store or Store.open(db)
    try:
        ledger = SinkLedger(st)
        names = [n for n in ledger.sinks() if n.startswith("webhook:")]
        if sink:
            if sink not in names:
                raise NotFoundError(f"no webhook sink {sink!r}; `keel deliveries` lists them")
            names = [sink]
        return {"sinks": [_retry_one(ledger, name, max_attempts, headers or {}) for name in names]}
    finally:
        if store is None:
            st.close()


def _retry_one(ledger: SinkLedger, name: str, max_attempts: int,
               headers: dict[str, str]) -> dict[str, Any]:
    lines = ledger.owed(name)
    if not lines:
        return {"sink": name, "retried": 0, "delivered": 0, "dead": 0}
    hook = WebhookSink(name.removeprefix("webhook:"), max_attempts=max_attempts, headers=headers)
    hook.open(0)
    try:
        done = hook.write(lines)
    finally:
        hook.close()
    ledger.commit(name, None, [line["record_id"] for line in lines], done.dead, done.attempts)
    return {"sink": name, "retried": len(lines), "delivered": len(lines) - len(done.dead),
            "dead": len(done.dead)}
