"""The store's side of the audit trail: which rows are digested, sealing a transaction's
segments into a ledger block, and verifying all of it (arithmetic in ``_audit.py``)."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Boolean, Connection, Float, Integer, func, select, update

from keel.store import _schema as t
from keel.store._audit import (
    ANCHOR_FIELDS,
    CONVERTERS,
    GENESIS,
    AuditKey,
    Break,
    ChainReport,
    anchor_text,
    block_digest,
    block_text,
    check_record,
    digester,
    entry_count,
    join_digests,
    split_digests,
)

RECORD_COLS = ("id", "workflow", "key", "input", "source", "run_id", "created_at")
PREDICTION_COLS = ("record_id", "step", "model_version", "output", "confidence", "input_tokens",
                   "output_tokens", "cost_usd", "latency_ms", "metadata", "created_at")
DECISION_COLS = ("record_id", "workflow", "disposition", "reason", "output", "confidence",
                 "model_version", "decided_by", "policy_version", "audit", "attempts",
                 "failed_attempts", "latency_ms", "cost_usd", "decided_at", "release_id")


def _kinds(table: Any, cols: Sequence[str]) -> tuple[Any, ...]:
    def kind(col: str) -> str:
        typ = table.c[col].type
        return "b" if isinstance(typ, Boolean) else "f" if isinstance(typ, Float) else \
            "i" if isinstance(typ, Integer) else "s"
    return tuple(CONVERTERS[kind(c)] for c in cols)


_RECORD_KINDS = _kinds(t.records, RECORD_COLS)
_PREDICTION_KINDS = _kinds(t.predictions, PREDICTION_COLS)
_DECISION_KINDS = _kinds(t.decisions, DECISION_COLS)
_record_digest = digester(_RECORD_KINDS)
_answer_digest = digester(_PREDICTION_KINDS)
_decision_digest = digester(_DECISION_KINDS)


class RowDigests(dict[str, dict[str, str]]):
    """record id -> {row name: digest} for the rows one transaction writes. Row names:
    ``input`` (the records row), ``answer/<step>`` (a model's answer), ``decision``."""

    def add_records(self, rows: Iterable[tuple[Any, ...]]) -> RowDigests:
        for row in rows:
            self.setdefault(row[0], {})["input"] = _record_digest(row)
        return self

    def add_answers(self, rows: Iterable[tuple[Any, ...]]) -> RowDigests:
        for row in rows:
            self.setdefault(row[0], {})[f"answer/{row[1]}"] = _answer_digest(row)
        return self

    def add_decisions(self, rows: Iterable[tuple[Any, ...]]) -> RowDigests:
        for row in rows:
            self.setdefault(row[0], {})["decision"] = _decision_digest(row)
        return self

    def text(self, record_id: str) -> str:
        return join_digests(self.get(record_id) or {})


def decision_digest(conn: Connection, record_id: str) -> RowDigests:
    """The digest of a record's decision row as it stands in this transaction (after a review
    changed it), for the segment that records the change."""
    d = t.decisions
    row = conn.execute(select(*(d.c[c] for c in DECISION_COLS))
                       .where(d.c.record_id == record_id)).first()
    return RowDigests().add_decisions([tuple(row)] if row is not None else [])


def seal(conn: Connection, key: AuditKey, segments: list[tuple[Any, ...]]) -> int:
    """Take the next ledger block under the head row's lock and seal ``segments`` (rows whose
    first, second and seventh values are record id, seq and hash) in it; returns its number."""
    lh, lg = t.ledger_head, t.ledger
    head = conn.execute(update(lh).where(lh.c.id == 1).values(seq=lh.c.seq + 1)
                        .returning(lh.c.seq, lh.c.hash)).first()
    if head is None:
        raise RuntimeError("the store has no ledger head row: run its migrations")
    seq, prev = int(head[0]), str(head[1])
    at = time.time()
    digest = block_digest((s[0], s[1], s[6]) for s in segments)
    h = key.mac(block_text(prev, seq, at, len(segments), digest, key.key_id))
    conn.execute(update(lh).where(lh.c.id == 1).values(hash=h))
    conn.execute(lg.insert().values(seq=seq, at=at, prev_hash=prev, count=len(segments),
                                    digest=digest, key_id=key.key_id, hash=h))
    return seq


# -- verification ---------------------------------------------------------------------------------
@dataclass
class LedgerReport:
    """The ledger's own checks: the chain of blocks, their keys, and each block's segments."""

    blocks: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[dict[str, Any]] = field(default_factory=list)
    unknown_keys: set[str] = field(default_factory=set)

    def problem(self, seq: int, kind: str, message: str) -> None:
        if len(self.problems) < 100:
            self.problems.append({"block": seq, "problem": kind, "message": message})


def verify_ledger(conn: Connection, key: AuditKey | None) -> LedgerReport:
    """Walk the blocks in order: each links to the one before, its HMAC checks with the key,
    and its digest matches the segments that point at it now."""
    rep = LedgerReport()
    lg = t.ledger
    digests = dict(_block_digests(conn))
    prev, expected = GENESIS, 1
    for row in conn.execute(select(lg).order_by(lg.c.seq)).mappings():
        seq = int(row["seq"])
        rep.blocks += 1
        if seq != expected:
            rep.problem(seq, "block_gap", f"ledger blocks {expected}..{seq - 1} are missing")
        if row["prev_hash"] != prev:
            rep.problem(seq, "block_link_broken", "the block does not link to the one before it")
        text = block_text(row["prev_hash"], seq, row["at"], row["count"], row["digest"],
                          row["key_id"])
        if key is None or row["key_id"] != key.key_id:
            rep.unknown_keys.add(str(row["key_id"]))
        elif key.mac(text) != row["hash"]:
            rep.problem(seq, "block_forged", "the block's keyed hash does not verify: it was "
                        "rewritten by someone without the audit key")
        found = digests.pop(seq, None)
        if found is None or found != (row["digest"], row["count"]):
            rep.problem(seq, "block_content_changed", "the segments this block sealed were "
                        "changed, deleted or moved (a record deleted, a trail truncated, or a "
                        "segment rewritten)")
        prev, expected = str(row["hash"]), seq + 1
        rep.head_seq, rep.head_hash = seq, prev
    for seq in sorted(digests):
        rep.problem(seq, "block_missing", "segments point at a ledger block that does not exist")
    unsealed = conn.execute(select(t.events.c.record_id).where(t.events.c.block.is_(None))
                            .limit(1)).first()
    if unsealed is not None:
        rep.problem(0, "unsealed", f"segments of record {unsealed[0]} are in no ledger block: "
                    "added after the fact")
    head = conn.execute(select(t.ledger_head.c.seq, t.ledger_head.c.hash)).first()
    if head is not None and (int(head[0]), str(head[1])) != (rep.head_seq, rep.head_hash):
        rep.problem(int(head[0]), "head_mismatch", "the ledger's head row does not match its "
                    "last block: blocks were deleted from the end")
    return rep


def _block_digests(conn: Connection) -> Iterator[tuple[int, tuple[str, int]]]:
    """(block, (digest, count)) recomputed from the segments as they are now."""
    e = t.events
    q = (select(e.c.block, e.c.record_id, e.c.seq, e.c.hash).where(e.c.block.is_not(None))
         .order_by(e.c.block))
    current: int | None = None
    members: list[tuple[str, int, str]] = []
    for block, rid, seq, h in conn.execution_options(stream_results=True, yield_per=5000).execute(q):
        if block != current:
            if current is not None:
                yield current, (block_digest(members), len(members))
            current, members = int(block), []
        members.append((str(rid), int(seq), str(h)))
    if current is not None:
        yield current, (block_digest(members), len(members))


def current_digests(conn: Connection, record_ids: Sequence[str],
                    decision_cols: Sequence[str] = DECISION_COLS) -> RowDigests:
    """The digests of the rows the store holds now for ``record_ids`` (``decision_cols``: the
    decision columns a migration's schema has, when it runs before later columns exist)."""
    r, p, d = t.records, t.predictions, t.decisions
    out = RowDigests()
    out.add_records(tuple(x) for x in conn.execute(
        select(*(r.c[c] for c in RECORD_COLS)).where(r.c.id.in_(record_ids))))
    out.add_answers(tuple(x) for x in conn.execute(
        select(*(p.c[c] for c in PREDICTION_COLS)).where(p.c.record_id.in_(record_ids))))
    out.add_decisions(tuple(x) for x in conn.execute(
        select(*(d.c[c] for c in decision_cols)).where(d.c.record_id.in_(record_ids))))
    return out


def compare_rows(committed: dict[str, str], now: dict[str, str]) -> str | None:
    """What differs between the rows a record's trail committed to and the rows stored now."""
    for name in sorted(set(committed) | set(now)):
        if name not in now:
            return f"its {name} row was deleted"
        if name not in committed:
            return f"its {name} row is on no segment of its trail: added after the fact"
        if committed[name] != now[name]:
            return f"its {name} row was edited after it was written"
    return None


def fold(digests: Iterable[str | None]) -> dict[str, str]:
    """The latest digest of each row, over a record's segments in order."""
    out: dict[str, str] = {}
    for text in digests:
        out.update(split_digests(text))
    return out


def verify_store(conn: Connection, key: AuditKey | None, workflow: str | None = None,
                 limit: int = 100, chunk: int = 1000) -> ChainReport:
    """Everything `keel audit verify` checks: each record's chain, that its rows are the
    ones its trail committed to, and the ledger that seals every segment."""
    report = ChainReport(key_id=key.key_id if key else None)
    group: list[dict[str, Any]] = []
    pending: list[tuple[str, str | None, str, dict[str, str]]] = []

    def close_record() -> None:
        if not group:
            return
        if group[0].get("record_key") is None and str(group[0]["record_id"]).startswith("rel-"):
            report.release_trails += 1
        else:
            report.records += 1
        found = check_record(group)
        if found is not None:
            report.add_break(found, limit)
        else:
            first = group[0]
            pending.append((str(first["record_id"]), first.get("record_key"),
                            str(first["workflow"]), fold(g.get("digests") for g in group)))
        if len(pending) >= chunk:
            _compare(conn, pending, report, limit)

    for row in _segments(conn, workflow):
        report.segments += 1
        report.events += entry_count(row["entries"])
        if group and row["record_id"] != group[0]["record_id"]:
            close_record()
            group = []
        group.append(row)
    close_record()
    _compare(conn, pending, report, limit)
    for rid, rkey, wf in _records_without_segments(conn, workflow):
        report.add_break(Break(rid, rkey, wf, 1, "chain_missing",
                               "the record is stored but every segment of its trail is gone"),
                         limit)
    ledger = verify_ledger(conn, key)
    report.blocks, report.head_seq, report.head_hash = ledger.blocks, ledger.head_seq, ledger.head_hash
    report.ledger_problems, report.unknown_keys = ledger.problems, sorted(ledger.unknown_keys)
    return report


def _compare(conn: Connection, pending: list[tuple[str, str | None, str, dict[str, str]]],
             report: ChainReport, limit: int) -> None:
    """Records whose chains hold: are their rows the ones the chains committed to?"""
    if not pending:
        return
    now = current_digests(conn, [p[0] for p in pending])
    for rid, rkey, wf, committed in pending:
        if not committed:
            continue  # a trail from before row digests, never sealed: the ledger reports it
        problem = compare_rows(committed, now.get(rid, {}))
        if problem is not None:
            report.add_break(Break(rid, rkey, wf, 0, "row_changed",
                                   f"the record's rows differ from what its trail committed to: "
                                   f"{problem}"), limit)
    pending.clear()


def _segments(conn: Connection, workflow: str | None) -> Iterator[dict[str, Any]]:
    e, r = t.events, t.records
    q = (select(e, r.c.key.label("record_key"))
         .select_from(e.outerjoin(r, r.c.id == e.c.record_id))
         .order_by(e.c.record_id, e.c.seq))
    if workflow:
        q = q.where(e.c.workflow == workflow)
    result = conn.execution_options(stream_results=True, yield_per=5000).execute(q)
    for row in result.mappings():
        yield dict(row)


def _records_without_segments(conn: Connection, workflow: str | None) -> list[tuple[str, str, str]]:
    r, e = t.records, t.events
    q = (select(r.c.id, r.c.key, r.c.workflow)
         .where(~select(e.c.seq).where(e.c.record_id == r.c.id).exists()))
    if workflow:
        q = q.where(r.c.workflow == workflow)
    return [(str(a), str(b), str(c)) for a, b, c in conn.execute(q)]


def anchor(conn: Connection, key: AuditKey) -> dict[str, Any]:
    """The ledger's head, signed: keep it outside the store (a file, a write-once bucket)."""
    lg = t.ledger
    head = conn.execute(select(lg.c.seq, lg.c.hash, lg.c.at).order_by(lg.c.seq.desc())
                        .limit(1)).first()
    seq, h, at = (int(head[0]), str(head[1]), float(head[2])) if head else (0, GENESIS, 0.0)
    segments = conn.execute(select(func.count()).select_from(t.events)
                            .where(t.events.c.block <= seq)).scalar_one()
    records = conn.execute(select(func.count()).select_from(t.records)).scalar_one()
    out: dict[str, Any] = {"seq": seq, "hash": h, "at": at, "segments": int(segments),
                           "records": int(records), "key_id": key.key_id,
                           "made_at": round(time.time(), 3)}
    out["signature"] = key.mac(anchor_text(out))
    return out


def check_anchor(conn: Connection, key: AuditKey | None, found: dict[str, Any]) -> dict[str, Any]:
    """Does the store still hold the ledger an anchor saw? Its block (same hash) must exist;
    the ledger's chain then proves every block and segment before it unchanged."""
    out: dict[str, Any] = {"seq": found.get("seq"), "hash": found.get("hash"), "ok": False}
    missing = [k for k in (*ANCHOR_FIELDS, "signature") if k not in found]
    if missing:
        out["problem"] = f"not a keel anchor: it lacks {', '.join(missing)}"
        return out
    if key is None or key.key_id != found["key_id"]:
        out["problem"] = (f"the anchor was signed with key {found['key_id']}; set KEEL_AUDIT_KEY "
                          "(or KEEL_AUDIT_KEY_FILE) to that key to check it")
        return out
    if key.mac(anchor_text(found)) != found["signature"]:
        out["problem"] = "the anchor's signature does not verify: the anchor file was edited"
        return out
    lg = t.ledger
    row = conn.execute(select(lg.c.hash).where(lg.c.seq == int(found["seq"]))).first()
    if row is None:
        out["problem"] = (f"the store's ledger has no block {found['seq']}: it was truncated "
                          "after the anchor was made")
    elif row[0] != found["hash"]:
        out["problem"] = (f"ledger block {found['seq']} differs from the anchor's: the ledger "
                          "was rewritten after the anchor was made")
    else:
        out["ok"] = True
    return out
