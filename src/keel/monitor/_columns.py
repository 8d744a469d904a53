"""Column plumbing shared by profiles and windows: normalising a batch, the row sample,
mergeable counters, and compact JSON for arrays."""

from __future__ import annotations

import base64
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

KINDS = ("numeric", "categorical", "text")
#: Categories counted one by one; rarer ones beyond this many share one bucket.
MAX_CATEGORIES = 1000
OTHER = "(other)"
#: Derived columns of a text field are named ``field#descriptor``.
SEP = "#"

Batch = Mapping[str, Any]


# -- arrays in JSON ---------------------------------------------------------------------------
def pack(values: NDArray[Any], dtype: str = "<f8") -> dict[str, Any]:
    arr = np.ascontiguousarray(values, dtype=dtype)
    return {
        "dtype": dtype,
        "shape": list(arr.shape),
        "b64": base64.b64encode(arr.tobytes()).decode(),
    }


def unpack(blob: dict[str, Any]) -> NDArray[Any]:
    raw = base64.b64decode(blob["b64"])
    return np.frombuffer(raw, dtype=blob["dtype"]).reshape(blob["shape"]).copy()


# -- normalising a batch ----------------------------------------------------------------------
def columns_of(batch: Any) -> dict[str, Any]:
    """A batch as ``{name: column}``: a mapping, an Arrow RecordBatch/Table, or a DataFrame."""
    if isinstance(batch, (pa.RecordBatch, pa.Table)):
        return {name: batch.column(name) for name in batch.schema.names}
    if hasattr(batch, "columns") and hasattr(batch, "__getitem__") and not isinstance(batch, dict):
        return {str(c): batch[c].to_numpy() for c in batch.columns}  # a pandas DataFrame
    return dict(batch)


def as_float(values: Any) -> NDArray[np.float64]:
    """Numbers as float64 with NaN for missing (or unparseable) values."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
            return _strings_as_float(values)
        if not (
            pa.types.is_floating(values.type)
            or pa.types.is_integer(values.type)
            or pa.types.is_boolean(values.type)
            or pa.types.is_decimal(values.type)
        ):
            return as_float(values.to_pylist())
        return np.asarray(
            pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64
        )
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64, copy=False)
    return np.array([_to_float(v) for v in values], dtype=np.float64)


def _strings_as_float(values: pa.Array | pa.ChunkedArray) -> NDArray[np.float64]:
    """Numbers written as text (a CSV column): Arrow parses them at once; when some do not
    parse, each distinct text is parsed once as Python would, and the rest looked up."""
    try:
        out = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
        return np.asarray(out, dtype=np.float64)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    enc = pc.dictionary_encode(values)
    parsed = np.array([_to_float(v) for v in enc.dictionary.to_pylist()] + [math.nan])
    idx = enc.indices.fill_null(len(enc.dictionary)).to_numpy(zero_copy_only=False)
    found: NDArray[np.float64] = parsed[idx]
    return found


def _to_float(v: Any) -> float:
    if v is None or isinstance(v, bool):
        return float(v) if isinstance(v, bool) else math.nan
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def as_labels(values: Any) -> list[str | None]:
    """Categories as strings (None for missing)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_pylist()
    elif isinstance(values, np.ndarray):
        values = values.tolist()
    return [
        None if (v is None or (isinstance(v, float) and math.isnan(v))) else _label(v)
        for v in values
    ]


def _label(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def label_counts(values: Any) -> tuple[Counter[str], int]:
    """(counts per category, missing count), hashed by Arrow for large columns."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)) and (
        pa.types.is_string(values.type)
        or pa.types.is_large_string(values.type)
        or pa.types.is_dictionary(values.type)
    ):
        vc = pc.value_counts(values)
        counts: Counter[str] = Counter()
        nulls = 0
        for v, c in zip(
            vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True
        ):
            if v is None:
                nulls += c
            else:
                counts[str(v)] += c
        return counts, nulls
    if isinstance(values, (pa.Array, pa.ChunkedArray)):  # each distinct value labelled once
        vc = pc.value_counts(values)
        counts = Counter()
        nulls = 0
        for label, c in zip(
            as_labels(vc.field("values")), vc.field("counts").to_pylist(), strict=True
        ):
            if label is None:
                nulls += c
            else:
                counts[label] += c
        return counts, nulls
    labels = as_labels(values)
    present = [v for v in labels if v is not None]
    return Counter(present), len(labels) - len(present)


def cap_categories(counts: Counter[str], cap: int = MAX_CATEGORIES) -> Counter[str]:
    if len(counts) <= cap:
        return counts
    keep = Counter(dict(counts.most_common(cap)))
    keep[OTHER] += sum(counts.values()) - sum(keep.values())
    return keep


def infer_kind(values: Any) -> str:
    """numeric for numbers, categorical for booleans and short repeated strings, text for
    long or many-valued strings."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        t = values.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            return "numeric"
        if pa.types.is_boolean(t) or pa.types.is_dictionary(t):
            return "categorical"
        sample = values.slice(0, 2000).to_pylist()
    else:
        arr = np.asarray(values) if not isinstance(values, list) else None
        if arr is not None and arr.dtype.kind in "fiu":
            return "numeric"
        if arr is not None and arr.dtype.kind == "b":
            return "categorical"
        sample = list(values[:2000])
    present = [v for v in sample if v is not None]
    if not present:
        return "categorical"
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
        return "numeric"
    strings = [str(v) for v in present]
    mean_len = sum(map(len, strings)) / len(strings)
    distinct = len(set(strings))
    wordy = mean_len > 15 and (distinct > 100 or distinct > 0.5 * len(strings))
    return "text" if mean_len > 40 or wordy else "categorical"


# -- the row sample ---------------------------------------------------------------------------
@dataclass
class RowSample:
    """A uniform random sample of rows: the ``size`` rows with the smallest random priority.

    Bottom-k by priority merges exactly: the merge of two samples is the bottom-k of their
    union, the same sample one pass over all rows would have kept.
    """

    size: int
    priority: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    keys: list[str] = field(default_factory=list)
    columns: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def threshold(self) -> float:
        return float(self.priority.max()) if len(self.priority) >= self.size else 2.0

    def offer(
        self,
        priority: NDArray[np.float64],
        keys: Sequence[str] | None,
        columns: Mapping[str, Sequence[Any]],
    ) -> None:
        pick = np.flatnonzero(priority < self.threshold)
        if pick.size == 0:
            return
        if pick.size > self.size:  # only a batch's own bottom-k can enter the sample
            pick = np.sort(pick[np.argpartition(priority[pick], self.size - 1)[: self.size]])
        new_keys = [keys[int(i)] for i in pick] if keys is not None else [""] * pick.size
        new_cols = {name: _take(col, pick) for name, col in columns.items()}
        self._absorb(priority[pick], new_keys, new_cols)

    def _absorb(
        self, priority: NDArray[np.float64], keys: list[str], columns: Mapping[str, list[Any]]
    ) -> None:
        n_old = len(self.priority)
        names = set(self.columns) | set(columns)
        merged_cols = {
            n: self.columns.get(n, [None] * n_old) + columns.get(n, [None] * len(keys))
            for n in names
        }
        merged_p = np.concatenate([self.priority, priority])
        merged_k = self.keys + keys
        if len(merged_p) > self.size:
            keep = np.sort(np.argpartition(merged_p, self.size - 1)[: self.size])
        else:
            keep = np.arange(len(merged_p))
        self.priority = merged_p[keep]
        self.keys = [merged_k[i] for i in keep]
        self.columns = {n: [c[i] for i in keep] for n, c in merged_cols.items()}

    def merge(self, other: RowSample) -> RowSample:
        out = RowSample(
            max(self.size, other.size),
            self.priority.copy(),
            list(self.keys),
            {n: list(c) for n, c in self.columns.items()},
        )
        out._absorb(other.priority, list(other.keys), other.columns)
        return out

    def ordered(self) -> RowSample:
        """The same rows, lowest priority first (a stable order for splits)."""
        order = np.argsort(self.priority, kind="stable")
        return RowSample(
            self.size,
            self.priority[order],
            [self.keys[i] for i in order],
            {n: [c[i] for i in order] for n, c in self.columns.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "priority": pack(self.priority),
            "keys": self.keys,
            "columns": self.columns,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RowSample:
        return cls(
            int(data["size"]),
            unpack(data["priority"]),
            list(data["keys"]),
            {n: list(c) for n, c in data["columns"].items()},
        )


def _take(col: Any, idx: NDArray[np.intp]) -> list[Any]:
    if isinstance(col, (pa.Array, pa.ChunkedArray)):
        return col.take(pa.array(idx)).to_pylist()  # type: ignore[no-any-return]
    if isinstance(col, np.ndarray):
        vals = col[idx]
        if vals.dtype.kind == "f":
            return [None if math.isnan(v) else float(v) for v in vals.tolist()]
        return vals.tolist()  # type: ignore[no-any-return]
    return [col[i] for i in idx]


# -- exact, mergeable counters ----------------------------------------------------------------
@dataclass
class Moments:
    n: int = 0
    nulls: int = 0
    total: float = 0.0
    total_sq: float = 0.0
    lo: float = math.inf
    hi: float = -math.inf

    def add(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """Count a column; returns its non-missing values."""
        ok = ~np.isnan(x)
        vals = x[ok] if not ok.all() else x
        self.nulls += int(x.size - vals.size)
        if vals.size:
            self.n += int(vals.size)
            self.total += float(vals.sum())
            self.total_sq += float(np.dot(vals, vals))
            self.lo = min(self.lo, float(vals.min()))
            self.hi = max(self.hi, float(vals.max()))
        return vals

    def merge(self, o: Moments) -> Moments:
        return Moments(
            self.n + o.n,
            self.nulls + o.nulls,
            self.total + o.total,
            self.total_sq + o.total_sq,
            min(self.lo, o.lo),
            max(self.hi, o.hi),
        )

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0

    @property
    def sd(self) -> float:
        if self.n < 2:
            return 0.0
        var = (self.total_sq - self.total**2 / self.n) / (self.n - 1)
        return math.sqrt(max(var, 0.0))

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "nulls": self.nulls,
            "total": self.total,
            "total_sq": self.total_sq,
            "lo": self.lo if self.n else None,
            "hi": self.hi if self.n else None,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Moments:
        return cls(
            d["n"],
            d["nulls"],
            d["total"],
            d["total_sq"],
            math.inf if d["lo"] is None else d["lo"],
            -math.inf if d["hi"] is None else d["hi"],
        )


#: The kind of a raw value, for schema drift.
def value_kind(v: Any) -> str:
    if v is None or v == "":
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return (
            "number"
            if _to_float(v) == _to_float(v) and v.strip() not in ("nan", "inf")
            else "string"
        )
    if isinstance(v, dict):
        return "object"
    if isinstance(v, list):
        return "array"
    return "other"


@dataclass
class SchemaCounts:
    """Per raw field: how many rows carry it and of which kinds; quarantine rules seen."""

    rows: int = 0
    fields: dict[str, Counter[str]] = field(default_factory=dict)
    rules: Counter[str] = field(default_factory=Counter)

    def add(self, raw: Mapping[str, Any], rule: str | None = None) -> None:
        self.rows += 1
        for name, value in raw.items():
            self.fields.setdefault(str(name), Counter())[value_kind(value)] += 1
        if rule:
            self.rules[rule] += 1

    def merge(self, o: SchemaCounts) -> SchemaCounts:
        out = SchemaCounts(
            self.rows + o.rows,
            {k: Counter(v) for k, v in self.fields.items()},
            self.rules + o.rules,
        )
        for k, v in o.fields.items():
            out.fields.setdefault(k, Counter()).update(v)
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "fields": {k: dict(v) for k, v in self.fields.items()},
            "rules": dict(self.rules),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SchemaCounts:
        return cls(d["rows"], {k: Counter(v) for k, v in d["fields"].items()}, Counter(d["rules"]))
