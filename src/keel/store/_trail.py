"""The audit trail's public face: verify it, anchor it, export it (redacted by default).

What the trail covers (``store/_audit.py`` has the arithmetic):

* every record's events, in segments hash-chained per record: editing, deleting or reordering
  an event breaks its chain at that point;
* the record's rows: each segment commits to the digests of the rows its transaction wrote
  (the stored input, each model answer, the decision), so editing any of them is caught;
* a global ledger: each write transaction seals its segments into one block, each block
  HMAC-keyed and chained to the one before. Deleting a record, truncating its trail, or editing
  a segment and recomputing its hashes breaks a block; without the key no block can be forged.

What it cannot see on its own: the last blocks deleted together with everything they sealed
(and the ledger's head rewound). An anchor closes that gap: :func:`anchor` signs the ledger's
head; keep it outside the store, and ``verify(against=...)`` proves nothing before it changed.
Anyone holding the audit key could rewrite the ledger: keep the key apart from the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from keel import _json
from keel.redact import Redactor, for_spec
from keel.store import monitoring as mon
from keel.store._audit import AuditKey, ChainReport
from keel.store._ledger import anchor as _anchor
from keel.store._ledger import check_anchor, verify_store
from keel.store._store import Store


def _open(store: Store | None, db: str | None, *, existing: bool = False) -> tuple[Store, bool]:
    if store is not None:
        return store, False
    return Store.open(db, must_exist=existing), True


def verify_trail(*, db: str | None = None, workflow: str | None = None, store: Store | None = None,
           limit: int = 100, against: dict[str, Any] | None = None) -> ChainReport:
    """Check every record's chain and rows (or one workflow's) and the whole ledger; with
    ``against`` (an anchor), that the ledger still holds the block the anchor saw. A store that
    does not exist is an error, never an empty "ok"."""
    st, own = _open(store, db, existing=True)
    try:
        key = AuditKey.resolve(create=False)
        with st.engine.connect() as conn:
            report = verify_store(conn, key, workflow, limit)
            if against is not None:
                report.anchor = check_anchor(conn, key, against)
        return report
    finally:
        if own:
            st.close()


def anchor_trail(*, db: str | None = None, store: Store | None = None) -> dict[str, Any]:
    """The ledger's head (block number and hash, segment and record counts), signed with the
    audit key: write it somewhere the store's writers cannot change."""
    st, own = _open(store, db, existing=True)
    try:
        with st.engine.connect() as conn:
            return _anchor(conn, st.audit_key)
    finally:
        if own:
            st.close()


def trail_report(report: ChainReport) -> dict[str, Any]:
    return {"ok": report.ok, "records": report.records,
            "release_trails": report.release_trails, "events": report.events,
            "segments": report.segments, "broken_records": report.broken_records,
            "ledger": {"blocks": report.blocks, "head_seq": report.head_seq,
                       "head_hash": report.head_hash, "problems": report.ledger_problems,
                       "unknown_keys": report.unknown_keys, "key_id": report.key_id},
            "anchor": report.anchor,
            "first_broken": report.broken[0].as_dict() if report.broken else None,
            "broken": [b.as_dict() for b in report.broken]}


def iter_trail(store: Store, workflow: str | None = None, *, raw: bool = False) -> Iterator[dict[str, Any]]:
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


def export_trail(out: str | Path | IO[str], *, db: str | None = None, workflow: str | None = None,
           raw: bool = False, store: Store | None = None) -> int:
    """Write every event as one JSON line to ``out``; returns the number written."""
    st, own = _open(store, db)
    fh = open(out, "w", encoding="utf-8") if isinstance(out, (str, Path)) else out  # noqa: SIM115
    n = 0
    try:
        for line in iter_trail(st, workflow, raw=raw):
            fh.write(_json.dumps(line) + "\n")
            n += 1
    finally:
        if isinstance(out, (str, Path)):
            fh.close()
        if own:
            st.close()
    return n
