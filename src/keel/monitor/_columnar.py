"""A CSV or Parquet file counted column by column: Arrow batches to NumPy, no row dicts.

What a row-by-row read would count, counted per column: the contract's fields as columns,
the value kinds of every column (schema drift) and the first rule each row breaks (quarantine
rates). Rules are found by validating each column's *distinct* values with the field's own
pydantic type, so they are exactly pydantic's; a contract whose rules span fields (named
checks, model validators, aliases, forbidden extras) is validated row by row instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from keel.monitor._columns import SchemaCounts, value_kind
from keel.sources import Columns, read_columns

#: Strings that might parse as a number (float() is stricter; it decides on these).
_MAYBE_NUMBER = r"^[\s\pZ\x0b\x1c-\x1f\x85]*[-+]?(\pN|\.\pN|(?i:inf|nan))"
#: Distinct values of a text column looked at one by one (beyond: a pattern picks them).
_FEW = 20_000
_CONFIG_KEYS = {"title", "frozen", "json_schema_extra", "protected_namespaces",
                "use_attribute_docstrings", "extra"}


class Keys(Sequence[str]):
    """Row keys of a batch, made only for the rows that are looked at (samples, examples)."""

    def __init__(self, column: pa.Array | None, source: str, first_line: int, n: int) -> None:
        self.column, self.source, self.first_line, self.n = column, source, first_line, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(self.n))

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.n))]
        if not -self.n <= int(i) < self.n:
            raise IndexError(i)
        i = int(i) % self.n
        if self.column is not None and i < len(self.column):  # rows that did not parse: none
            v = self.column[i].as_py()
            if v is not None and str(v).strip() != "":
                return str(v)
        return f"{self.source}#{self.first_line + int(i)}"


def file_batches(
    decl: Any, path: str, fields: dict[str, str]
) -> Iterator[tuple[dict[str, Any], Keys, SchemaCounts]]:
    """(columns named ``input.x`` / ``output.y``, keys, schema counts) per batch of the file.

    ``fields`` maps a drift field name to its column in the file.
    """
    name = Path(path).name
    is_csv = Path(path).suffix.lower() == ".csv"
    rules = RuleCounter(decl, is_csv)
    for part in read_columns(path):
        yield _batch(decl, part, fields, rules, name, is_csv)


def _batch(
    decl: Any, part: Columns, fields: dict[str, str], rules: RuleCounter, name: str, is_csv: bool
) -> tuple[dict[str, Any], Keys, SchemaCounts]:
    batch = part.batch
    names = batch.schema.names
    n = batch.num_rows
    cols: dict[str, Any] = {}
    for drift_name, column in fields.items():
        cols[drift_name] = (
            _empty_is_missing(batch.column(names.index(column)))
            if column in names
            else pa.nulls(n, pa.string())
        )
    if part.bad_rows:  # rows that could not be parsed count, with every field missing
        cols = {k: pa.concat_arrays([v, pa.nulls(part.bad_rows, v.type)]) for k, v in cols.items()}
    key_col = batch.column(names.index(decl.key)) if decl.key in names else None
    first_line = part.offset + (2 if is_csv else 1)
    keys = Keys(key_col, name, first_line, n + part.bad_rows)
    schema = SchemaCounts(rows=n + part.bad_rows)
    for col_name, column in zip(names, batch.columns, strict=True):
        if col_name != decl.key:
            schema.fields[col_name] = value_kinds(column)
    schema.rules = rules.count(batch)
    if part.bad_rows:
        schema.fields["_unparsed"] = Counter({"string": part.bad_rows})
        schema.rules["parse"] += part.bad_rows
    return cols, keys, schema


def _empty_is_missing(column: pa.Array) -> pa.Array:
    """An empty string is a missing value (as a CSV's empty cell is)."""
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        return column
    empty = pc.equal(column, "")
    if not pc.any(empty).as_py():
        return column
    return pc.if_else(empty, pa.scalar(None, column.type), column)


# -- value kinds (schema drift) ---------------------------------------------------------------
def value_kinds(column: pa.Array) -> Counter[str]:
    """How many values of each kind (see :func:`keel.monitor._columns.value_kind`)."""
    t = column.type
    nulls = column.null_count
    present = len(column) - nulls
    out: Counter[str] = Counter()
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        vc = pc.value_counts(column)
        number = empty = 0
        if len(vc) > _FEW:  # many distinct texts: only those that may be numbers are parsed
            empty = int(pc.sum(pc.equal(column, "")).as_py() or 0)
            vc = pc.value_counts(column.filter(pc.match_substring_regex(column, _MAYBE_NUMBER)))
        for v, c in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(),
                        strict=True):
            kind = value_kind(v) if v is not None else None
            number += c if kind == "number" else 0
            empty += c if kind == "null" else 0
        nulls += empty
        out["number"] = number
        out["string"] = present - empty - number
    elif pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        out["number"] = present
    elif pa.types.is_boolean(t):
        out["bool"] = present
    elif pa.types.is_struct(t) or pa.types.is_map(t):
        out["object"] = present
    elif pa.types.is_list(t) or pa.types.is_large_list(t):
        out["array"] = present
    else:
        out["other"] = present
    out["null"] = nulls
    return +out


# -- quarantine rules -------------------------------------------------------------------------
class RuleCounter:
    """The first contract rule each row of a batch breaks, counted per rule."""

    def __init__(self, decl: Any, is_csv: bool) -> None:
        self.decl, self.is_csv = decl, is_csv
        contract = decl.input_contract
        model = contract.model
        self.per_field = _fields_alone(contract)
        self.adapters: dict[str, TypeAdapter[Any]] = {}
        if self.per_field:
            for fname, f in model.model_fields.items():
                ann: Any = Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
                self.adapters[fname] = TypeAdapter(ann)
        self.fields = model.model_fields

    def count(self, batch: pa.RecordBatch) -> Counter[str]:
        if not self.per_field:
            return self._row_by_row(batch)
        names = batch.schema.names
        n = batch.num_rows
        left = np.ones(n, dtype=bool)
        found: Counter[str] = Counter()
        for fname, f in self.fields.items():
            if fname in names:
                bad = self._bad_values(fname, batch.column(names.index(fname)))
            else:
                bad = self._absent(fname, f, n)
            for rule, mask in bad:
                hit = left & mask
                found[rule] += int(hit.sum())
                left &= ~mask
        return +found

    def _absent(self, fname: str, f: Any, n: int) -> list[tuple[str, NDArray[np.bool_]]]:
        if fname == self.decl.key:  # a file without keys is judged on the rest
            rule = self._rule("reference", fname)
        elif f.is_required():
            rule = "missing"
        else:
            return []
        return [(rule, np.ones(n, dtype=bool))] if rule else []

    def _bad_values(
        self, fname: str, column: pa.Array
    ) -> list[tuple[str, NDArray[np.bool_]]]:
        out: list[tuple[str, NDArray[np.bool_]]] = []
        if column.null_count:
            rule = self._rule("" if self.is_csv else None, fname)
            if rule:
                out.append((rule, column.is_null().to_numpy(zero_copy_only=False)))
        if _always_valid(self.fields[fname], column.type):
            return out
        present = column.drop_null()
        by_rule: dict[str, list[Any]] = {}
        for v in pc.unique(present).to_pylist():
            rule = self._rule(v, fname)
            if rule:
                by_rule.setdefault(rule, []).append(v)
        for rule, values in by_rule.items():
            mask = pc.is_in(column, value_set=pa.array(values, type=column.type))
            out.append((rule, mask.fill_null(False).to_numpy(zero_copy_only=False)))
        return out

    def _rule(self, value: Any, fname: str) -> str | None:
        try:
            self.adapters[fname].validate_python(value)
        except ValidationError as exc:
            return str(exc.errors(include_url=False)[0].get("type", "invalid"))
        return None

    def _row_by_row(self, batch: pa.RecordBatch) -> Counter[str]:
        from keel.monitor._source import first_rule

        found: Counter[str] = Counter()
        for raw in batch.to_pylist():
            if self.is_csv:
                raw = {k: "" if v is None else v for k, v in raw.items()}
            rule = first_rule(self.decl, raw, False)
            if rule:
                found[rule] += 1
        return found


def _fields_alone(contract: Any) -> bool:
    """True when each field's validity depends on its own value only."""
    model = contract.model
    if contract.checks:
        return False
    config = dict(model.model_config)
    if set(config) - _CONFIG_KEYS or config.get("extra") == "forbid":
        return False
    dec = model.__pydantic_decorators__
    if dec.validators or dec.field_validators or dec.root_validators or dec.model_validators:
        return False
    return all(f.alias is None and f.validation_alias is None
               for f in model.model_fields.values())


def _always_valid(f: Any, t: pa.DataType) -> bool:
    """Shortcuts where every present value passes, without looking at the values."""
    if f.metadata:
        return False
    ann = f.annotation
    args = getattr(ann, "__args__", None)
    if args and type(None) in args and len(args) == 2:
        ann = next(a for a in args if a is not type(None))
    if ann is float:
        return bool(pa.types.is_floating(t) or pa.types.is_integer(t))
    if ann is int:
        return bool(pa.types.is_integer(t))
    if ann is str:
        return bool(pa.types.is_string(t) or pa.types.is_large_string(t))
    return ann is Any
