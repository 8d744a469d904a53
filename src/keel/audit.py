"""The audit trail: verify every record's hash chain, export events (redacted by default).

A record's events are stored in segments (the events written in one transaction), and each
segment carries the hash of the one before it (``store/_audit.py``), so editing, deleting or
reordering any event breaks the chain at that point. :func:`verify` recomputes every chain and
names the first broken link of each damaged record. The report's ``root`` digests every
chain's head: keep it somewhere else (a ticket, a log) and a later ``verify`` showing the same
root proves nothing was rewritten at the ends of the chains either.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from keel import _json
from keel.redact import Redactor, for_spec
from keel.store import Store
from keel.store import _monitor as mon
from keel.store._audit import Break, ChainReport, verify_chains


def _open(store: Store | None, db: str | None) -> tuple[Store, bool]:
    return (store, False) if store is not None else (Store.open(db), True)


def verify(*, db: str | None = None, workflow: str | None = None, store: Store | None = None,
           limit: int = 100) -> ChainReport:
    """Recompute every event chain (or one workflow's); the report names each first broken link."""
    st, own = _open(store, db)
    try:
        report = verify_chains(mon.iter_segments(st, workflow), limit=limit)
        for rid, key in mon.records_without_events(st, workflow):
            report.broken_records += 1
            if len(report.broken) < limit:
                report.broken.append(Break(rid, key, workflow or "", 1, "chain_missing",
                                           "the record is decided but every event of it is gone"))
        return report
    finally:
        if own:
            st.close()


def report_dict(report: ChainReport) -> dict[str, Any]:
    return {"ok": report.ok, "records": report.records, "events": report.events,
            "segments": report.segments, "broken_records": report.broken_records, "root": report.root,
            "first_broken": report.broken[0].as_dict() if report.broken else None,
            "broken": [b.as_dict() for b in report.broken]}


def iter_export(store: Store, workflow: str | None = None, *, raw: bool = False) -> Iterator[dict[str, Any]]:
    """Events as exported lines (each with its segment's seq and hashes): personal data masked
    unless ``raw``."""
    specs = mon.workflow_specs(store)
    redactors: dict[str, Redactor] = {}
    record: str | None = None
    known: tuple[str, ...] = ()
    n = 0
    for seg in mon.iter_segments(store, workflow):
        if seg["record_id"] != record:
            record, n = seg["record_id"], 0
            red = redactors.get(seg["workflow"])
            if red is None and not raw:
                red = redactors[seg["workflow"]] = for_spec(specs.get(seg["workflow"]))
            if red is not None:
                known = red.known_values(_json.loads(seg["record_input"]) if seg["record_input"] else None)
        key = seg["record_key"]
        if not raw:
            key = redactors[seg["workflow"]].text(key or "", known)
        for ev in _json.loads(seg["entries"]):
            n += 1
            detail = ev.get("detail")
            if not raw:
                detail = redactors[seg["workflow"]].value(detail, known)
            yield {"workflow": seg["workflow"], "record_id": seg["record_id"], "key": key,
                   "seq": n, "kind": ev["kind"], "at": ev["at"], "actor": ev.get("actor"),
                   "model_version": ev.get("model_version"), "latency_ms": ev.get("latency_ms"),
                   "cost_usd": ev.get("cost_usd"), "detail": detail, "segment": seg["seq"],
                   "prev_hash": seg["prev_hash"], "hash": seg["hash"]}


def export(out: str | Path | IO[str], *, db: str | None = None, workflow: str | None = None,
           raw: bool = False, store: Store | None = None) -> int:
    """Write every event as one JSON line to ``out``; returns the number written."""
    st, own = _open(store, db)
    fh = open(out, "w", encoding="utf-8") if isinstance(out, (str, Path)) else out  # noqa: SIM115
    n = 0
    try:
        for line in iter_export(st, workflow, raw=raw):
            fh.write(_json.dumps(line) + "\n")
            n += 1
    finally:
        if isinstance(out, (str, Path)):
            fh.close()
        if own:
            st.close()
    return n
