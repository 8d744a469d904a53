"""A current window counted against a reference profile, batch by batch.

Numbers are counted into the reference's quantile bins (plus how far values fall beyond its
range), categories are counted exactly, texts are reduced to their descriptors, and a small
uniform row sample is kept for embedding tests and example records. Counters add up, so
windows counted by several workers, or hour by hour, merge into one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from keel.monitor import _text
from keel.monitor._columns import (
    SEP,
    Moments,
    RowSample,
    SchemaCounts,
    as_float,
    as_labels,
    cap_categories,
    columns_of,
    label_counts,
    pack,
    unpack,
)
from keel.monitor._profile import Profile

#: Keys remembered per category the reference never saw (example records).
NEW_CATEGORY_KEYS = 3


@dataclass
class BinCounts:
    """A numeric field's current values in the reference's bins."""

    counts: NDArray[np.float64]
    gap_below: float = 0.0
    gap_above: float = 0.0
    moments: Moments = field(default_factory=Moments)

    def add(self, x: NDArray[np.float64], edges: NDArray[np.float64]) -> None:
        vals = self.moments.add(x)
        if vals.size == 0:
            return
        idx = np.searchsorted(edges, vals, side="left")
        self.counts += np.bincount(idx, minlength=edges.size + 1)
        below = idx == 0
        if below.any():
            self.gap_below += float(np.sum(edges[0] - vals[below]))
        above = idx == edges.size
        if above.any():
            self.gap_above += float(np.sum(vals[above] - edges[-1]))

    def merge(self, o: BinCounts) -> BinCounts:
        return BinCounts(
            self.counts + o.counts,
            self.gap_below + o.gap_below,
            self.gap_above + o.gap_above,
            self.moments.merge(o.moments),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "counts": pack(self.counts),
            "gap_below": self.gap_below,
            "gap_above": self.gap_above,
            "moments": self.moments.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BinCounts:
        return cls(
            unpack(d["counts"]), d["gap_below"], d["gap_above"], Moments.from_json(d["moments"])
        )


@dataclass
class Window:
    """Counts of one window of rows, against ``profile``."""

    profile: Profile
    rows: int = 0
    numeric: dict[str, BinCounts] = field(default_factory=dict)
    categories: dict[str, Counter[str]] = field(default_factory=dict)
    nulls: dict[str, int] = field(default_factory=dict)
    new_keys: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    sample: RowSample = field(default_factory=lambda: RowSample(2000))
    schema: SchemaCounts | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "numeric": {k: v.to_json() for k, v in self.numeric.items()},
            "categories": {k: dict(v) for k, v in self.categories.items()},
            "nulls": self.nulls,
            "new_keys": self.new_keys,
            "sample": self.sample.to_json(),
            "schema": self.schema.to_json() if self.schema else None,
            "meta": self.meta,
        }

    @classmethod
    def from_json(cls, profile: Profile, d: dict[str, Any]) -> Window:
        return cls(
            profile,
            d["rows"],
            {k: BinCounts.from_json(v) for k, v in d["numeric"].items()},
            {k: Counter(v) for k, v in d["categories"].items()},
            d["nulls"],
            d["new_keys"],
            RowSample.from_json(d["sample"]),
            SchemaCounts.from_json(d["schema"]) if d.get("schema") else None,
            d["meta"],
        )

    def merge(self, o: Window) -> Window:
        """Both windows' rows together (same reference profile)."""
        out = Window(
            self.profile,
            self.rows + o.rows,
            dict(self.numeric),
            {k: Counter(v) for k, v in self.categories.items()},
            dict(self.nulls),
            {k: {c: list(ks) for c, ks in v.items()} for k, v in self.new_keys.items()},
            self.sample.merge(o.sample),
            _merge_schema(self.schema, o.schema),
            dict(self.meta),
        )
        for k, v in o.numeric.items():
            out.numeric[k] = out.numeric[k].merge(v) if k in out.numeric else v
        for k, c in o.categories.items():
            out.categories[k] = cap_categories(out.categories.get(k, Counter()) + c)
        for k, n in o.nulls.items():
            out.nulls[k] = out.nulls.get(k, 0) + n
        for k, cats in o.new_keys.items():
            for cat, ks in cats.items():
                have = out.new_keys.setdefault(k, {}).setdefault(cat, [])
                have.extend(ks[: NEW_CATEGORY_KEYS - len(have)])
        return out


def _merge_schema(a: SchemaCounts | None, b: SchemaCounts | None) -> SchemaCounts | None:
    if a is None or b is None:
        return a or b
    return a.merge(b)


class WindowCounter:
    """Counts batches of a current window against a profile (see :class:`ProfileBuilder`)."""

    def __init__(
        self, profile: Profile, *, sample_size: int = 2000, seed: int | None = 0
    ) -> None:
        self.window = Window(profile, sample=RowSample(sample_size))
        self.profile = profile
        self.rng = np.random.default_rng(seed)
        self.kinds = profile.kinds

    def add(self, batch: Any, keys: Sequence[str] | None = None) -> None:
        cols = {k: v for k, v in columns_of(batch).items() if k in self.kinds}
        if not cols:
            return
        n = len(next(iter(cols.values())))
        sampled: dict[str, Any] = {}
        for name, values in cols.items():
            sampled.update(self._count(name, self.kinds[name], values, keys))
        self.window.rows += n
        self.window.sample.offer(self.rng.random(n), keys, sampled)

    def add_raw(self, rows: Iterable[Mapping[str, Any]], rules: Iterable[str | None]) -> None:
        w = self.window
        if w.schema is None:
            w.schema = SchemaCounts()
        for raw, rule in zip(rows, rules, strict=True):
            w.schema.add(raw, rule)

    def add_schema(self, counts: SchemaCounts) -> None:
        """Add schema counts made elsewhere (e.g. column by column from a file)."""
        w = self.window
        w.schema = counts if w.schema is None else w.schema.merge(counts)

    def _count(
        self, name: str, kind: str, values: Any, keys: Sequence[str] | None
    ) -> dict[str, Any]:
        if kind == "numeric":
            x = as_float(values)
            self._numeric(name, x)
            return {name: x}
        if kind == "categorical":
            self._categorical(name, values, keys)
            return {name: values}
        arr = _text.as_text_array(values)
        self.window.nulls[name] = self.window.nulls.get(name, 0) + arr.null_count
        out: dict[str, Any] = {name: _text.truncate(arr.to_pylist())}
        desc = _text.descriptors(arr)
        ref = self.profile.text.get(name)
        if ref is not None:
            desc["oov"] = _text.oov_rates(arr, ref.vocab)
        for d, vals in desc.items():
            derived = f"{name}{SEP}{d}"
            if d == "script":
                self._categorical(derived, vals, keys)
            else:
                self._numeric(derived, vals)
            out[derived] = vals
        return out

    def _numeric(self, name: str, x: NDArray[np.float64]) -> None:
        bins = self.profile.bins.get(name)
        if bins is None:
            return
        have = self.window.numeric.get(name)
        if have is None:
            have = self.window.numeric[name] = BinCounts(np.zeros(bins.edges.size + 1))
        have.add(x, bins.edges)

    def _categorical(self, name: str, values: Any, keys: Sequence[str] | None) -> None:
        counts, nulls = label_counts(values)
        w = self.window
        w.categories[name] = cap_categories(w.categories.get(name, Counter()) + counts)
        w.nulls[name] = w.nulls.get(name, 0) + nulls
        known = self.profile.categories.get(name, Counter())
        slots = w.new_keys.setdefault(name, {})
        want = {c for c in counts if c not in known and len(slots.get(c, [])) < NEW_CATEGORY_KEYS}
        if want and keys is not None:
            labels = as_labels(values) if not _is_text(values) else None
            rows = (
                range(len(keys))
                if labels is not None
                else np.flatnonzero(
                    pc.is_in(values, value_set=pa.array(sorted(want))).fill_null(False)
                )
            )
            for i in rows:
                label = labels[i] if labels is not None else values[int(i)].as_py()
                if label in want and len(slots.setdefault(label, [])) < NEW_CATEGORY_KEYS:
                    slots[label].append(keys[int(i)])


def _is_text(values: Any) -> bool:
    """An Arrow array of strings (its new categories are found without a loop over rows)."""
    return isinstance(values, (pa.Array, pa.ChunkedArray)) and (
        pa.types.is_string(values.type) or pa.types.is_large_string(values.type)
    )
