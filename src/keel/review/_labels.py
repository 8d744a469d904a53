"""Labels: every review and audit decision as a training example, exported or retrained on."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from keel import _json
from keel.errors import ConfigError
from keel.models import Model
from keel.redact import for_spec
from keel.store import Store
from keel.store import reviews as sql
from keel.store.monitoring import workflow_specs
from keel.workflow import Workflow

#: Lineage columns first, then input.<field>, model.<field>, label.<field>.
LINEAGE = ("workflow", "key", "record_id", "task_id", "reason", "decision", "model_correct",
           "confidence", "model_version", "policy_version", "reviewer", "decided_at", "note",
           "sampled")


def labels(store: Store, workflow: str | None = None) -> list[dict[str, Any]]:
    """Every labelled example, oldest first, with its lineage."""
    return sql.labels(store, workflow)


def _scalar(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return _json.dumps(value)


def flat_rows(rows: Iterable[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """One flat row per label (nested values as JSON text) and the union of the columns."""
    out: list[dict[str, Any]] = []
    extra: dict[str, None] = {}
    for row in rows:
        flat = {k: row[k] for k in LINEAGE}
        flat["decided_at"] = datetime.fromtimestamp(row["decided_at"], UTC).isoformat()
        for prefix, value in (("input", row["input"]), ("model", row["model_output"]),
                              ("label", row["label"])):
            for name, v in (value or {}).items():
                flat[f"{prefix}.{name}"] = _scalar(v)
                extra[f"{prefix}.{name}"] = None
        out.append(flat)
    order = {"input": 0, "model": 1, "label": 2}
    columns = list(LINEAGE) + sorted(extra, key=lambda c: (order[c.split(".", 1)[0]], c))
    return columns, out


def export_labels(store: Store, path: str | Path, workflow: str | None = None, *,
                  raw: bool = False) -> int:
    """Write the labels to a CSV or Parquet file (by extension); returns how many. Personal
    data is masked unless ``raw`` (training elsewhere needs the text as it was; `keel retrain`
    reads the labels from the store itself)."""
    file = Path(path)
    suffix = file.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise ConfigError(f"{file}: export labels to a .csv or .parquet file")
    found = labels(store, workflow)
    if not raw:
        specs = workflow_specs(store)
        masked = []
        for row in found:
            red = for_spec(specs.get(row["workflow"]))
            masked.append(red.value(row, red.known_values(row.get("input"))))
        found = masked
    columns, rows = flat_rows(found)
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(file.name + ".tmp")
    if suffix == ".csv":
        with tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, columns, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows],
                                     schema=_schema(columns, rows))
        pq.write_table(table, tmp)
    tmp.replace(file)
    return len(rows)


def _schema(columns: list[str], rows: list[dict[str, Any]]) -> Any:
    import pyarrow as pa

    kinds = {"model_correct": pa.bool_(), "sampled": pa.bool_(), "confidence": pa.float64()}
    fields = []
    for col in columns:
        if col in kinds:
            fields.append(pa.field(col, kinds[col]))
            continue
        values = [r.get(col) for r in rows if r.get(col) is not None]
        if values and all(isinstance(v, bool) for v in values):
            fields.append(pa.field(col, pa.bool_()))
        elif values and all(isinstance(v, (int, float)) for v in values):
            fields.append(pa.field(col, pa.float64()))
        else:
            fields.append(pa.field(col, pa.string()))
    return pa.schema(fields)


# -- retraining ------------------------------------------------------------------------------
def training_examples(store: Store, workflow: str) -> list[dict[str, Any]]:
    """The latest label per record that names a right output (rejects teach nothing to copy)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in labels(store, workflow):
        latest[row["record_id"]] = row
    return [{"input": r["input"], "output": r["label"], "key": r["key"],
             "record_id": r["record_id"], "model_version": r["model_version"],
             "reviewer": r["reviewer"], "decided_at": r["decided_at"]}
            for r in latest.values() if r["label"] is not None]


def train_candidate(wf: Workflow, examples: list[dict[str, Any]]) -> Model:
    """``wf.train(examples)``, checked: a keel Model, warmed."""
    if wf.train is None:
        raise ConfigError(f"workflow {wf.name!r} declares no train function; add "
                          "train=my_train to the Workflow (it takes the labels and returns a "
                          "keel Model trained on your original data plus them)")
    model = wf.train(examples)
    if not isinstance(model, Model):
        raise ConfigError(f"{wf.name}'s train function returned {type(model).__name__}; "
                          "return a keel Model (e.g. keel.SklearnModel(...))")
    model.warm()
    return model


def retrain(wf: Workflow, store: Store,
            examples: list[dict[str, Any]] | None = None) -> tuple[Model, dict[str, Any]]:
    """Train a new model version with ``wf.train(labels)`` and register it as a candidate
    model version: (the model, what was done). ``examples``: these labels instead of all.

    The candidate is not live: `keel retrain` registers it as a release to evaluate and roll
    out (keel.releases).
    """
    if wf.train is None:
        train_candidate(wf, [])  # the error saying how to add one
    wf.model.warm()  # the live version, computed before anything else touches the process
    live = wf.model.version
    if examples is None:
        examples = training_examples(store, wf.name)
    t0 = time.perf_counter()
    model = train_candidate(wf, examples)
    info = model.describe()
    info["metrics"] = {**(info.get("metrics") or {}), "label_examples": len(examples)}
    known = sql.model_version_alias(store, info["version"])
    store.register_model(wf.name, info, alias="candidate")
    return model, {"workflow": wf.name, "version": info["version"],
                   "alias": known or "candidate", "already_registered": known is not None,
                   "label_examples": len(examples),
                   "training_data_hash": info.get("training_data_hash"),
                   "live_version": live, "train_s": round(time.perf_counter() - t0, 2)}
