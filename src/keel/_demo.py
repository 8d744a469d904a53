"""The support_triage demo: Banking77's test split as production traffic."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from sqlalchemy import select

from keel import _json
from keel.errors import NotFoundError
from keel.store import Store
from keel.store import _schema as t


def example_dir(name: str = "support_triage") -> Path:
    """The example's folder: shipped in the wheel, or the repository's examples/ folder."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples" / name, here.parents[1] / "examples" / name):
        if (candidate / "workflow.py").is_file():
            return candidate
    raise NotFoundError(f"example {name!r} is not installed with this copy of keel")


def labels(path: Path, key: str = "id", label: str = "category") -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row[key]: row[label] for row in csv.DictReader(fh)}


def realized_accuracy(store: Store, workflow: str, truth: dict[str, str],
                      field: str = "intent") -> dict[str, Any]:
    """Accuracy of automatic decisions (accepted, fallback) against held-back labels."""
    r, d = t.records, t.decisions
    q = (select(r.c.key, d.c.disposition, d.c.output)
         .select_from(r.join(d, d.c.record_id == r.c.id)).where(r.c.workflow == workflow))
    auto = correct = total = 0
    by_disp: dict[str, list[int]] = {}
    with store.engine.connect() as conn:
        for key, disp, output in conn.execute(q):
            if key not in truth:
                continue
            total += 1
            if disp in ("accepted", "fallback"):
                auto += 1
                ok = int((_json.loads(output) or {}).get(field) == truth[key])
                correct += ok
                by_disp.setdefault(disp, [0, 0])
                by_disp[disp][0] += ok
                by_disp[disp][1] += 1
    return {
        "labelled_records": total,
        "automated": auto,
        "coverage": auto / total if total else None,
        "accuracy_automated": correct / auto if auto else None,
        "by_disposition": {k: {"correct": v[0], "total": v[1]} for k, v in by_disp.items()},
    }
