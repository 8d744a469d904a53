"""The hash chain over each record's events: every event carries its predecessor's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def chain_hash(prev_hash: str, record_id: str, seq: int, kind: str, at: float,
               actor: str | None, model_version: str | None, latency_ms: float | None,
               cost_usd: float | None, detail: str | None) -> str:
    """Hash of one event given the previous event's hash (GENESIS for the first)."""
    payload = (f"{prev_hash}|{record_id}|{seq}|{kind}|{_num(at)}|{actor or ''}|"
               f"{model_version or ''}|{_num(latency_ms)}|{_num(cost_usd)}|{detail or ''}")
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def event_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """Hash of one stored event row (a mapping with the events table's columns)."""
    return chain_hash(prev_hash, str(row["record_id"]), int(row["seq"]), str(row["kind"]),
                      row["at"], row.get("actor"), row.get("model_version"),
                      row.get("latency_ms"), row.get("cost_usd"), row.get("detail"))


_EVENT_FIELDS = ("kind", "at", "actor", "model_version", "latency_ms", "cost_usd", "detail")


@dataclass
class Break:
    """The first broken link of one record's chain: where, and what kind of change it shows."""

    record_id: str
    key: str | None
    workflow: str
    seq: int
    problem: str  # seq_gap | content_changed | link_broken | rewritten | chain_missing
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
    broken: list[Break] = field(default_factory=list)
    broken_records: int = 0
    root: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_records == 0


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("seq", *_EVENT_FIELDS, "prev_hash", "hash")}


def _check(rows: list[Mapping[str, Any]]) -> Break | None:
    """The first broken link in one record's events (ordered by seq), or None."""
    prev = GENESIS
    expected = 1
    for n, row in enumerate(rows):
        seq = int(row["seq"])
        def brk(problem: str, message: str, row: Mapping[str, Any] = row, seq: int = seq) -> Break:
            return Break(str(row["record_id"]), row.get("record_key"), str(row["workflow"]),
                         seq, problem, message, _shown(row))
        if seq != expected:
            return brk("seq_gap", f"events seq {expected}..{seq - 1} are missing: deleted from "
                                  "the trail")
        if row["prev_hash"] != prev:
            return brk("link_broken", f"prev_hash does not match the hash of event seq {seq - 1}: "
                                      "that event was replaced, or this link was edited")
        if event_hash(str(row["prev_hash"]), row) != row["hash"]:
            return brk("content_changed", "the event's content no longer matches its hash: one of "
                       f"{', '.join(_EVENT_FIELDS)} was edited after it was written")
        nxt = rows[n + 1] if n + 1 < len(rows) else None
        if nxt is not None and int(nxt["seq"]) == seq + 1 and nxt["prev_hash"] != row["hash"]:
            return brk("rewritten", "the event and its hash were rewritten together: the next "
                                    f"event (seq {seq + 1}) still points to the original")
        prev = str(row["hash"])
        expected = seq + 1
    return None


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
        report.events += 1
        if current and row["record_id"] != current[0]["record_id"]:
            close()
            current = []
        current.append(row)
    close()
    report.root = root.hexdigest()
    return report
