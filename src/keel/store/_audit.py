"""The hash chain over each record's events: every event carries its predecessor's hash."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

GENESIS = "0" * 64


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def event_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """Hash of one event row given the previous event's hash (GENESIS for the first)."""
    payload = "|".join((
        prev_hash, str(row["record_id"]), str(row["seq"]), str(row["kind"]), _num(row["at"]),
        row.get("actor") or "", row.get("model_version") or "", _num(row.get("latency_ms")),
        _num(row.get("cost_usd")), row.get("detail") or "",
    ))
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()
