"""The reference profile: what "normal" looks like for each field, compact and mergeable.

A :class:`ProfileBuilder` counts batches (Arrow record batches, NumPy columns or lists) one at
a time and never holds more than one batch plus a fixed-size row sample. Exact counters
(moments, category counts, null rates, value kinds, word counts) add up; the uniform row
sample (bottom-k by random priority) merges exactly; quantile edges, the vocabulary and the
text embedding summary are derived from those when the profile is built. Two profiles of the
same fields merge (workers, days) into the profile one pass over all rows would have given.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from keel.errors import ConfigError
from keel.monitor import _text
from keel.monitor._columns import (
    SEP,
    Moments,
    RowSample,
    SchemaCounts,
    as_float,
    cap_categories,
    columns_of,
    infer_kind,
    label_counts,
    pack,
    unpack,
)
from keel.monitor._textref import TextReference, build_text_reference

FORMAT = 1
#: Quantile edges per numeric field (percentiles 0..100).
EDGES = 101
#: A numeric field's first values that fix its exact-count grid, and the grid's edges.
GRID_SEED = 10_000
GRID_POINTS = 2001


@dataclass
class NumericBins:
    """Reference quantile edges and the reference CDF at each edge (from the row sample)."""

    edges: NDArray[np.float64]
    cdf: NDArray[np.float64]
    n_eff: int

    @classmethod
    def of_grid(cls, grid: Grid) -> NumericBins:
        """Percentile edges and the exact CDF there, from every value counted on ``grid``."""
        cum = np.cumsum(grid.counts)[:-1] / grid.n  # F at each grid edge, over all rows
        idx = np.unique(
            np.minimum(np.searchsorted(cum, np.linspace(0.0, 1.0, EDGES)), cum.size - 1)
        )
        return cls(grid.edges[idx].copy(), cum[idx].astype(np.float64), grid.n)

    @classmethod
    def of(cls, values: NDArray[np.float64]) -> NumericBins:
        vals = np.sort(values[~np.isnan(values)])
        if vals.size == 0:
            return cls(np.zeros(1), np.ones(1), 0)
        edges = np.unique(np.quantile(vals, np.linspace(0.0, 1.0, EDGES)))
        cdf = np.searchsorted(vals, edges, side="right") / vals.size
        return cls(edges, cdf.astype(np.float64), int(vals.size))

    def to_json(self) -> dict[str, Any]:
        return {"edges": pack(self.edges), "cdf": pack(self.cdf), "n_eff": self.n_eff}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> NumericBins:
        return cls(unpack(d["edges"]), unpack(d["cdf"]), int(d["n_eff"]))


@dataclass
class Grid:
    """Exact counts of a numeric field in fine bins, fixed by its first ``GRID_SEED`` values.

    Every later value is counted into them (values beyond the first ones' range fall in the
    two end bins), so the reference CDF at each edge is exact over all rows, not estimated
    from the row sample: a profile of a million rows can tell a 0.03 sd shift, and the same
    rows always give the same edges.
    """

    edges: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    counts: NDArray[np.float64] = field(default_factory=lambda: np.empty(0))
    n: int = 0
    seed: list[NDArray[np.float64]] = field(default_factory=list)

    def add(self, vals: NDArray[np.float64]) -> None:
        """Count non-missing values."""
        if self.edges.size == 0:
            want = GRID_SEED - sum(v.size for v in self.seed)
            self.seed.append(vals[:want])
            if vals.size >= want:
                self.fix()
                vals = vals[want:]
            else:
                return
        self._count(vals)

    def fix(self) -> None:
        """Fix the edges from the values seen so far and count them."""
        if self.edges.size or not self.seed:
            return
        seen = np.concatenate(self.seed)
        self.seed = []
        if seen.size == 0:
            return
        seen = np.sort(seen)
        at = np.linspace(0, seen.size - 1, GRID_POINTS).round().astype(np.intp)
        self.edges = np.unique(seen[at])
        self.counts = np.zeros(self.edges.size + 1)
        self._count(seen)

    def _count(self, vals: NDArray[np.float64]) -> None:
        idx = np.searchsorted(self.edges, vals, side="left")
        self.counts += np.bincount(idx, minlength=self.edges.size + 1)
        self.n += int(vals.size)


@dataclass
class Profile:
    """A reference profile. Build one with :class:`ProfileBuilder` (or
    :func:`keel.monitor.build_reference` for a workflow); compare a window with
    :func:`keel.monitor.compare`."""

    kinds: dict[str, str]
    rows: int
    moments: dict[str, Moments]
    categories: dict[str, Counter[str]]
    nulls: dict[str, int]
    words: dict[str, Counter[str]]
    sample: RowSample
    schema: SchemaCounts | None = None
    bins: dict[str, NumericBins] = field(default_factory=dict)
    text: dict[str, TextReference] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    # -- the fields ----------------------------------------------------------------------------
    def fields(self, kind: str | None = None) -> list[str]:
        """Every field compared, derived text descriptors (``text#length``) included."""
        out = []
        for name, k in self.all_kinds().items():
            if kind is None or k == kind:
                out.append(name)
        return out

    def all_kinds(self) -> dict[str, str]:
        out = dict(self.kinds)
        for name in self.text:
            for d in (*_text.NUMERIC_DESCRIPTORS, "oov"):
                out[f"{name}{SEP}{d}"] = "numeric"
            out[f"{name}{SEP}script"] = "categorical"
        return out

    @property
    def id(self) -> str | None:
        return self.meta.get("id")

    # -- merge and serialise -------------------------------------------------------------------
    def merge(self, other: Profile) -> Profile:
        """The profile of both profiles' rows together (same fields, e.g. two workers' days)."""
        if self.kinds != other.kinds:
            raise ConfigError(
                "profiles with different fields cannot be merged: "
                f"{sorted(self.kinds.items())} vs {sorted(other.kinds.items())}"
            )
        merged = ProfileBuilder(kinds=self.kinds, sample_size=self.sample.size)
        merged._absorb(self)
        merged._absorb(other)
        return merged.build(
            **self.settings,
            meta={**self.meta, "merged_from": [self.meta.get("id"), other.meta.get("id")]},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kinds": self.kinds,
            "rows": self.rows,
            "moments": {k: m.to_json() for k, m in self.moments.items()},
            "categories": {k: dict(c) for k, c in self.categories.items()},
            "nulls": self.nulls,
            "words": {k: dict(c) for k, c in self.words.items()},
            "sample": self.sample.to_json(),
            "schema": self.schema.to_json() if self.schema else None,
            "bins": {k: b.to_json() for k, b in self.bins.items()},
            "text": {k: t.to_json() for k, t in self.text.items()},
            "meta": self.meta,
            "settings": self.settings,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Profile:
        if d.get("format") != FORMAT:
            raise ConfigError(
                f"profile format {d.get('format')} is not supported by this keel; "
                "build the reference again"
            )
        return cls(
            kinds=d["kinds"],
            rows=d["rows"],
            moments={k: Moments.from_json(m) for k, m in d["moments"].items()},
            categories={k: Counter(c) for k, c in d["categories"].items()},
            nulls=d["nulls"],
            words={k: Counter(c) for k, c in d["words"].items()},
            sample=RowSample.from_json(d["sample"]),
            schema=SchemaCounts.from_json(d["schema"]) if d.get("schema") else None,
            bins={k: NumericBins.from_json(b) for k, b in d["bins"].items()},
            text={k: TextReference.from_json(t) for k, t in d["text"].items()},
            meta=d.get("meta", {}),
            settings=d.get("settings", {}),
        )

    def summary(self) -> dict[str, Any]:
        """What the profile holds, for listings."""
        return {
            "id": self.id,
            "rows": self.rows,
            "fields": self.kinds,
            "sample": len(self.sample.keys),
            "source": self.meta.get("source"),
            "created_at": self.meta.get("created_at"),
            "text": {k: t.describe() for k, t in self.text.items()},
        }


class ProfileBuilder:
    """Counts batches into a profile. ``kinds`` maps field -> numeric | categorical | text;
    fields not named are inferred from their first batch (``exclude`` skips fields)."""

    def __init__(
        self,
        *,
        kinds: Mapping[str, str] | None = None,
        sample_size: int = 4096,
        seed: int | None = 0,
        exclude: Iterable[str] = (),
    ) -> None:
        self.kinds: dict[str, str] = dict(kinds or {})
        self.exclude = set(exclude)
        self.sample = RowSample(sample_size)
        self.rng = np.random.default_rng(seed)
        self.rows = 0
        self.moments: dict[str, Moments] = {}
        self.categories: dict[str, Counter[str]] = {}
        self.nulls: dict[str, int] = {}
        self.words: dict[str, Counter[str]] = {}
        self.schema: SchemaCounts | None = None
        self.grids: dict[str, Grid] = {}

    def add(self, batch: Any, keys: Sequence[str] | None = None) -> None:
        """Count one batch: a mapping of columns, an Arrow RecordBatch/Table, or a DataFrame."""
        cols = {k: v for k, v in columns_of(batch).items() if k not in self.exclude}
        if not cols:
            return
        n = len(next(iter(cols.values())))
        for name, values in cols.items():
            self.kinds.setdefault(name, infer_kind(values))
        sampled: dict[str, Any] = {}
        for name, values in cols.items():
            sampled.update(self._count(name, self.kinds[name], values))
        self.rows += n
        self.sample.offer(self.rng.random(n), keys, sampled)

    def add_raw(self, rows: Iterable[Mapping[str, Any]], rules: Iterable[str | None]) -> None:
        """Count raw input rows for schema drift (field presence, value kinds, quarantine rules)."""
        if self.schema is None:
            self.schema = SchemaCounts()
        for raw, rule in zip(rows, rules, strict=True):
            self.schema.add(raw, rule)

    def add_schema(self, counts: SchemaCounts) -> None:
        """Add schema counts made elsewhere (e.g. column by column from a file)."""
        self.schema = counts if self.schema is None else self.schema.merge(counts)

    def _numeric(self, name: str, x: NDArray[np.float64]) -> None:
        vals = self.moments.setdefault(name, Moments()).add(x)
        self.grids.setdefault(name, Grid()).add(vals)

    def _count(self, name: str, kind: str, values: Any) -> dict[str, Any]:
        if kind == "numeric":
            x = as_float(values)
            self._numeric(name, x)
            return {name: x}
        if kind == "categorical":
            counts, nulls = label_counts(values)
            self._add_categories(name, counts, nulls)
            return {name: values}
        if kind == "text":
            return self._count_text(name, values)
        raise ConfigError(f"field {name!r}: kind {kind!r} is not numeric, categorical or text")

    def _add_categories(self, name: str, counts: Counter[str], nulls: int) -> None:
        have = self.categories.setdefault(name, Counter())
        have.update(counts)
        self.categories[name] = cap_categories(have)
        self.nulls[name] = self.nulls.get(name, 0) + nulls

    def _count_text(self, name: str, values: Any) -> dict[str, Any]:
        arr = _text.as_text_array(values)
        self.nulls[name] = self.nulls.get(name, 0) + arr.null_count
        words = self.words.setdefault(name, Counter())
        words.update(_text.word_counts(arr))
        self.words[name] = _text.prune(words)
        out: dict[str, Any] = {name: _text.truncate(arr.to_pylist())}
        for d, vals in _text.descriptors(arr).items():
            derived = f"{name}{SEP}{d}"
            if d == "script":
                counts, nulls = label_counts(vals)
                self._add_categories(derived, counts, nulls)
            else:
                self._numeric(derived, vals)
            out[derived] = vals
        return out

    def _bins(self, name: str, sample: RowSample) -> NumericBins:
        """Exact edges when every value of the field went through its grid; else from the
        row sample (a merged profile, the out-of-vocabulary rate)."""
        grid = self.grids.get(name)
        if grid is not None:
            grid.fix()
            if grid.n and grid.n == self.moments[name].n:
                return NumericBins.of_grid(grid)
        return NumericBins.of(as_float(sample.columns.get(name, [])))

    def _absorb(self, p: Profile) -> None:
        """Add a built profile's counters and sample into this builder (merging)."""
        self.rows += p.rows
        for k, m in p.moments.items():
            if not k.endswith(f"{SEP}oov"):
                self.moments[k] = self.moments.get(k, Moments()).merge(m)
        for k, c in p.categories.items():
            self._add_categories(k, c, p.nulls.get(k, 0))
        for k, t in p.kinds.items():
            if t == "text":
                self.nulls[k] = self.nulls.get(k, 0) + p.nulls.get(k, 0)
                self.words[k] = _text.prune(
                    self.words.get(k, Counter()) + p.words.get(k, Counter())
                )
        self.sample = self.sample.merge(p.sample)
        if p.schema is not None:
            self.schema = p.schema if self.schema is None else self.schema.merge(p.schema)

    def build(
        self,
        *,
        embedder: str = "tfidf",
        ood_fpr: float = 0.01,
        knn: int = 10,
        meta: Mapping[str, Any] | None = None,
    ) -> Profile:
        """Derive quantile edges, vocabularies and text references; returns the profile."""
        if self.rows == 0:
            raise ConfigError("no rows to build a reference profile from")
        settings = {"embedder": embedder, "ood_fpr": ood_fpr, "knn": knn}
        sample = self.sample.ordered()
        text = {}
        for name, kind in self.kinds.items():
            if kind == "text":
                ref = build_text_reference(
                    name, sample, self.words[name], embedder=embedder, fpr=ood_fpr, k=knn
                )
                text[name] = ref
                oov = ref.sample_oov
                sample.columns[f"{name}{SEP}oov"] = [None if np.isnan(v) else float(v) for v in oov]
                mom = Moments()
                mom.add(oov)
                self.moments[f"{name}{SEP}oov"] = mom
        bins = {name: self._bins(name, sample) for name in self.moments}
        info = {"created_at": time.time(), **(meta or {})}
        return Profile(
            kinds=dict(self.kinds),
            rows=self.rows,
            moments=dict(self.moments),
            categories=dict(self.categories),
            nulls=dict(self.nulls),
            words=dict(self.words),
            sample=sample,
            schema=self.schema,
            bins=bins,
            text=text,
            meta=info,
            settings=settings,
        )
