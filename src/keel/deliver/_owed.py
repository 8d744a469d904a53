"""Deliveries: what each sink received, the dead letters, and sending them again."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from keel.deliver._sinks import FileSink, Sink
from keel.deliver._webhook import WebhookSink
from keel.errors import NotFoundError
from keel.redact import DEFAULT
from keel.store import SinkLedger, Store


def send(sink: Sink, ledger: SinkLedger, lines: list[dict[str, Any]]) -> tuple[int, int]:
    """Write ``lines`` to ``sink`` and record each part in the ledger as soon as the sink has
    it: (delivered, dead). A webhook's POSTs are recorded every ``commit_every`` lines, so a
    crash re-sends at most that many (with the same Idempotency-Key); a file sink's lines and
    its committed offset are recorded together."""
    step = getattr(sink, "commit_every", None) or len(lines) or 1
    delivered = dead = 0
    for i in range(0, len(lines), step):
        part = lines[i:i + step]
        done = sink.write(part)
        ledger.commit(sink.name, done.offset, [line["record_id"] for line in part], done.dead,
                      done.attempts)
        delivered += len(part) - len(done.dead)
        dead += len(done.dead)
    return delivered, dead


def deliveries(*, db: str | None = None, failed: bool = False, sink: str | None = None,
               store: Store | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    """Deliveries newest first; ``failed=True`` lists only dead letters (and pending ones)."""
    st = store or Store.open(db)
    try:
        rows = SinkLedger(st).listing(failed_only=failed, sink=sink, limit=limit)
    finally:
        if store is None:
            st.close()
    for row in rows:  # a key may hold personal data (a card number used as an id)
        row["key"] = DEFAULT.text(row["key"]) if row.get("key") else row.get("key")
    return rows


def retry_deliveries(*, db: str | None = None, sink: str | None = None,
                     store: Store | None = None, max_attempts: int = 5,
                     headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Send every sink what it is owed: dead webhook deliveries, and decisions a reviewer
    changed after the sink received them (``pending``: a file sink gets the new line
    appended). Returns counts per sink.

    ``headers`` go with every POST (a receiver's credentials: keel never stores them, so a
    retry needs them again)."""
    st = store or Store.open(db)
    try:
        ledger = SinkLedger(st)
        names = [n for n in ledger.sinks() if n.startswith(("webhook:", "file:"))]
        if sink:
            if sink not in names:
                raise NotFoundError(f"no sink {sink!r}; `keel deliveries` lists them")
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
    out: Sink
    if name.startswith("file:"):
        path = Path(name.removeprefix("file:"))
        out = FileSink(path, _output_fields(path, lines))
        out.open(ledger.offset(name, "FileSink"))
    else:
        out = WebhookSink(name.removeprefix("webhook:"), max_attempts=max_attempts,
                          headers=headers)
        out.open(0)
    try:
        delivered, dead = send(out, ledger, lines)
    finally:
        out.close()
    return {"sink": name, "retried": len(lines), "delivered": delivered, "dead": dead}


def _output_fields(path: Path, lines: list[dict[str, Any]]) -> list[str]:
    """A CSV file's output columns, as its header has them (the run that made it knew the
    output contract); for a new file, the fields of the lines' outputs."""
    if path.suffix.lower() == ".csv" and path.exists():
        with path.open(newline="", encoding="utf-8", errors="replace") as fh:
            header = next(csv.reader(fh), [])
        return [c.removeprefix("output.") for c in header if c.startswith("output.")]
    return list(dict.fromkeys(k for line in lines for k in (line.get("output") or {})))
