"""The hash chain over each record's events: every event carries its predecessor's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

GENESIS = "0" * 64


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def segment_hash(prev_hash: str, record_id: str, seq: int, workflow: str, at: float,
                 entries: str) -> str:
    """Hash of one stored segment (a record's events written in one transaction), given the
    previous segment's hash (GENESIS for the first). ``entries`` is the stored JSON text."""
    payload = f"{prev_hash}|{record_id}|{seq}|{workflow}|{_num(at)}|{entries}"
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """Hash of one stored segment row (a mapping with the events table's columns)."""
    return segment_hash(prev_hash, str(row["record_id"]), int(row["seq"]), str(row["workflow"]),
                        row["at"], str(row["entries"]))


_SEGMENT_FIELDS = ("workflow", "at", "entries")


@dataclass
class Break:
    """The first broken link of one record's chain: where, and what kind of change it shows."""

    record_id: str
    key: str | None
    workflow: str
    seq: int
    problem: str  # seq_gap | content_changed | link_broken | rewritten | chain_missing
    #: the segment as stored (seq, at, entries, prev_hash, hash)
    message: str
    event: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "key": self.key, "workflow": self.workflow,
                "seq": self.seq, "problem": self.problem, "message": self.message,
                "event": self.event}


@dataclass
class ChainReport:
    records: int = 0
    events: int = 0
    segments: int = 0
    broken: list[Break] = field(default_factory=list)
    broken_records: int = 0
    root: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_records == 0


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("seq", *_SEGMENT_FIELDS, "prev_hash", "hash")}


def _check(rows: list[Mapping[str, Any]]) -> Break | None:
    """The first broken link in one record's segments (ordered by seq), or None."""
    prev = GENESIS
    expected = 1
    for n, row in enumerate(rows):
        seq = int(row["seq"])
        def brk(problem: str, message: str, row: Mapping[str, Any] = row, seq: int = seq) -> Break:
            return Break(str(row["record_id"]), row.get("record_key"), str(row["workflow"]),
                         seq, problem, message, _shown(row))
        if seq != expected:
            return brk("seq_gap", f"segments seq {expected}..{seq - 1} are missing: deleted from "
                                  "the trail")
        if row["prev_hash"] != prev:
            return brk("link_broken", f"prev_hash does not match the hash of segment seq {seq - 1}: "
                                      "that segment was replaced, or this link was edited")
        if row_hash(str(row["prev_hash"]), row) != row["hash"]:
            return brk("content_changed", "the segment's content no longer matches its hash: one "
                       f"of {', '.join(_SEGMENT_FIELDS)} was edited after it was written")
        nxt = rows[n + 1] if n + 1 < len(rows) else None
        if nxt is not None and int(nxt["seq"]) == seq + 1 and nxt["prev_hash"] != row["hash"]:
            return brk("rewritten", "the segment and its hash were rewritten together: the next "
                                    f"segment (seq {seq + 1}) still points to the original")
        prev = str(row["hash"])
        expected = seq + 1
    return None


def _entry_count(entries: Any) -> int:
    try:
        found = orjson.loads(entries)
    except (orjson.JSONDecodeError, TypeError):
        return 0  # an edited segment: its hash check reports it
    return len(found) if isinstance(found, list) else 0


def verify_chains(rows: Iterable[Mapping[str, Any]], limit: int = 100) -> ChainReport:
    """Recompute every record's chain from rows ordered by (record_id, seq)."""
    report = ChainReport()
    root = hashlib.sha256()
    current: list[Mapping[str, Any]] = []

    def close() -> None:
        if not current:
            return
        report.records += 1
        found = _check(current)
        if found is not None:
            report.broken_records += 1
            if len(report.broken) < limit:
                report.broken.append(found)
        root.update(f"{current[0]['record_id']}:{current[-1]['hash']}\n".encode())

    for row in rows:
        report.segments += 1
        report.events += _entry_count(row["entries"])
        if current and row["record_id"] != current[0]["record_id"]:
            close()
            current = []
        current.append(row)
    close()
    report.root = root.hexdigest()
    return report
