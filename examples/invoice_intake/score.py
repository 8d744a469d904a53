"""Scores a run of invoice_intake against the generator's ground truth (which keel never
sees): field-level accuracy of the invoices decided automatically, the share of good
documents decided automatically, and where the bad documents ended."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

FIELDS = ("vendor", "invoice_number", "date", "currency", "lines", "subtotal", "tax", "total")
AUTOMATIC = ("accepted", "fallback")


def _same(name: str, got: Any, want: Any) -> bool:
    if name in ("subtotal", "tax", "total"):
        return got is not None and Decimal(str(got)) == Decimal(str(want))
    if name == "lines":
        return got is not None and len(got) == len(want) and all(
            g["description"] == w["description"] and int(g["quantity"]) == int(w["quantity"])
            and Decimal(str(g["unit_price"])) == Decimal(str(w["unit_price"]))
            and Decimal(str(g["amount"])) == Decimal(str(w["amount"]))
            for g, w in zip(got, want, strict=True))
    return bool(got == want)


def score(decisions: dict[str, dict[str, Any]], truth_path: str | Path) -> dict[str, Any]:
    """``decisions``: key -> {"disposition", "output", "reason"} for every document."""
    truth = [json.loads(line) for line in Path(truth_path).read_text().splitlines() if line]
    fields_right = fields_seen = good = good_auto = 0
    wrong: Counter[str] = Counter()
    bad_ends: dict[str, Counter[str]] = {}
    for t in truth:
        d = decisions.get(t["id"])
        disp = d["disposition"] if d else "missing"
        if t["kind"] not in ("invoice", "duplicate"):
            bad_ends.setdefault(t["kind"], Counter())[disp] += 1
            continue
        good += 1
        if disp not in AUTOMATIC or d is None:
            continue
        good_auto += 1
        for name in FIELDS:
            fields_seen += 1
            if _same(name, (d["output"] or {}).get(name), t["invoice"][name]):
                fields_right += 1
            else:
                wrong[name] += 1
    return {
        "documents": len(truth),
        "good_documents": good,
        "good_decided_automatically": good_auto,
        "automatic_share_of_good": round(good_auto / good, 4) if good else None,
        "field_accuracy_automatic": round(fields_right / fields_seen, 4) if fields_seen else None,
        "fields_checked": fields_seen,
        "wrong_fields": dict(wrong),
        "bad_documents": {kind: dict(c) for kind, c in sorted(bad_ends.items())},
    }
