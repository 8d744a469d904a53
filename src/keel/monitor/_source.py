"""From a workflow's rows (a file, or records in the store) to the columns a profile counts.

Fields are named by where they come from: ``input.<field>`` for the input contract's fields
(the key excluded), ``output.<field>`` for the output contract's, and ``output.confidence``,
``output.disposition`` and ``output.review_reason`` for how each record was decided. Raw
inputs also feed the schema counts (field presence, value kinds, quarantine rules).
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from keel import _json
from keel.errors import ConfigError
from keel.monitor._columns import SchemaCounts
from keel.sources import printable, read_rows
from keel.store.drift import WindowSpec
from keel.watch import Watch
from keel.workflow import Workflow

OUTCOME_KINDS = {
    "output.confidence": "numeric",
    "output.disposition": "categorical",
    "output.review_reason": "categorical",
}
_WINDOW = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")


def kind_of(annotation: Any) -> str | None:
    """numeric / categorical from a pydantic field's type; None when only data can tell."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return kind_of(args[0]) if len(args) == 1 else None
    if origin is typing.Literal:
        return "categorical"
    if annotation is bool or (isinstance(annotation, type) and issubclass(annotation, enum.Enum)):
        return "categorical"
    if annotation in (int, float):
        return "numeric"
    return None


def input_fields(wf: Any) -> dict[str, str | None]:
    return {
        f"input.{n}": kind_of(f.annotation) for n, f in wf.input.model_fields.items() if n != wf.key
    }


def output_fields(wf: Workflow) -> dict[str, str | None]:
    out = {f"output.{n}": kind_of(f.annotation) for n, f in wf.output.model_fields.items()}
    found: dict[str, str | None] = {k: (v or "categorical") for k, v in out.items()}
    return found | dict(OUTCOME_KINDS)


def declared_kinds(
    fields: Mapping[str, str | None], overrides: Mapping[str, str] | None = None
) -> dict[str, str]:
    kinds = {k: v for k, v in fields.items() if v is not None}
    for name, kind in (overrides or {}).items():
        kinds[name if "." in name else f"input.{name}"] = kind
    return kinds


def file_fields(decl: Any) -> dict[str, str]:
    """Drift field -> file column: the input contract's fields and, for a
    :class:`keel.Watch` with an output, the output's fields (read from the same row)."""
    fields = {name: name.split(".", 1)[1] for name in input_fields(decl)}
    if isinstance(decl, Watch):
        fields |= {f"output.{n}": n for n in decl.output_fields()}
    return fields


def file_kinds(decl: Any) -> dict[str, str | None]:
    """The declared kinds of :func:`file_fields`."""
    kinds = input_fields(decl)
    if isinstance(decl, Watch):
        kinds |= {f"output.{n}": kind_of(f.annotation) for n, f in decl.output_fields().items()}
    return kinds


def first_rule(wf: Any, raw: dict[str, Any], parse_error: bool) -> str | None:
    """The rule the validate stage would quarantine this row for (None when it passes)."""
    if parse_error:
        return "parse"
    from keel.stages.validate import _encoding_violations  # start-up: only for rows read one by one

    bad = _encoding_violations(raw)
    if bad:
        return "encoding"
    if wf.key is not None and wf.key not in raw:  # training files often have no key column
        raw = {**raw, wf.key: "reference"}
    _model, violations = wf.input_contract.validate(raw)
    return violations[0].rule if violations else None


def schema_of(raws: list[dict[str, Any]], rules: list[str | None]) -> SchemaCounts:
    counts = SchemaCounts()
    for raw, rule in zip(raws, rules, strict=True):
        counts.add(raw, rule)
    return counts


def file_batches(
    wf: Any, path: str | Path, size: int = 2000
) -> Iterator[tuple[dict[str, list[Any]], list[str], SchemaCounts]]:
    """(columns, keys, schema counts) per batch of a CSV/JSONL/Parquet file, row by row (the
    columnar reader, :mod:`keel.monitor._columnar`, takes plain CSV and Parquet)."""
    fields = file_fields(wf)
    batch: list[tuple[dict[str, Any], str | None, str]] = []
    for row in read_rows(path):
        raw = row.data if row.data is not None else {"_unparsed": row.text or ""}
        raw, undecodable = _decoded(raw)
        key = raw.get(wf.key) if wf.key is not None else None
        key = str(key) if key is not None and str(key).strip() else f"{row.source}#{row.line}"
        broken = "parse" if row.data is None else ("encoding" if undecodable else None)
        batch.append((raw, broken, key))
        if len(batch) >= size:
            yield _file_batch(wf, fields, batch)
            batch = []
    if batch:
        yield _file_batch(wf, fields, batch)


def _decoded(raw: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Text holding bytes the file's encoding cannot decode, written as ``\\xNN`` (as admit
    does before a record is stored); True when there were any."""
    bad = [k for k, v in raw.items() if isinstance(v, str) and printable(v) != v]
    if not bad:
        return raw, False
    return {k: printable(v) if k in bad else v for k, v in raw.items()}, True


def _file_batch(
    wf: Any, fields: dict[str, str], batch: list[tuple[dict[str, Any], str | None, str]]
) -> tuple[dict[str, list[Any]], list[str], SchemaCounts]:
    cols = {name: [_clean(raw.get(col)) for raw, _e, _k in batch] for name, col in fields.items()}
    raws = [{k: v for k, v in raw.items() if k != wf.key} for raw, _e, _k in batch]
    rules = [broken or first_rule(wf, raw, False) for raw, broken, _k in batch]
    return cols, [k for _r, _e, k in batch], schema_of(raws, rules)


def store_batch(
    wf: Workflow, rows: list[dict[str, Any]], outputs: bool
) -> tuple[dict[str, list[Any]], list[str], SchemaCounts]:
    """Columns of a chunk of store rows (see :func:`keel.store.drift.window_rows`)."""
    inputs = [_json.loads(r["input"]) or {} for r in rows]
    cols: dict[str, list[Any]] = {
        name: [_clean(raw.get(name.split(".", 1)[1])) for raw in inputs]
        for name in input_fields(wf)
    }
    if outputs:
        outs = [(_json.loads(r["output"]) or {}) if r["output"] else {} for r in rows]
        for name in output_fields(wf):
            if name in OUTCOME_KINDS:
                continue
            field = name.split(".", 1)[1]
            cols[name] = [o.get(field) if isinstance(o, dict) else None for o in outs]
        cols["output.confidence"] = [r["confidence"] for r in rows]
        cols["output.disposition"] = [r["disposition"] for r in rows]
        cols["output.review_reason"] = [
            r["reason"] if r["disposition"] == "in_review" else None for r in rows
        ]
    raws = [{k: v for k, v in raw.items() if k != wf.key} for raw in inputs]
    rules = [_rule(r["violations"]) for r in rows]
    return cols, [r["key"] for r in rows], schema_of(raws, rules)


def _rule(violations: str | None) -> str | None:
    found = _json.loads(violations) if violations else None
    return found[0].get("rule") if found else None


def _clean(value: Any) -> Any:
    """CSV gives '' for a missing value: count it as missing."""
    return None if value == "" else value


def parse_window(text: str, now: float) -> Any:
    """``all``, ``last:N``, ``run:ID``, ``since:ISO-DATE`` or a duration (``90m``, ``24h``)."""
    from datetime import datetime


    text = text.strip()
    if text == "all":
        return WindowSpec(label="all")
    if text.startswith("last:") and text[5:].isdigit():
        return WindowSpec(last=int(text[5:]), label=text)
    if text.startswith("run:") and text[4:]:
        return WindowSpec(run_id=text[4:], label=text)
    if text.startswith("since:"):
        try:
            return WindowSpec(since=datetime.fromisoformat(text[6:]).timestamp(), label=text)
        except ValueError as exc:
            raise ConfigError(f"window {text!r}: {exc}; use e.g. since:2026-01-31") from exc
    m = _WINDOW.match(text)
    if m:
        secs = float(m.group(1)) * {"m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return WindowSpec(since=now - secs, label=text)
    raise ConfigError(
        f"window {text!r} is not one of: all, last:N, run:ID, since:DATE, "
        "or a duration like 90m, 24h, 7d"
    )
