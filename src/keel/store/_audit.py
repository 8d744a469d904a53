"""The hash chain over each record's events: every event carries its predecessor's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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
