"""Profiles and windows are compact, streaming, and merge exactly."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from keel import _json
from keel.monitor import Profile, ProfileBuilder, WindowCounter, compare


def _cols(rng: np.random.Generator, n: int, shift: float = 0.0) -> dict:
    return {
        "x": rng.normal(shift, 1, n),
        "kind": rng.choice(["a", "b", "c"], n).astype(object),
        "note": [
            None if i % 10 == 0 else f"order {k} arrived late, please refund"
            for i, k in enumerate(rng.integers(100, 999, n))
        ],
    }


def test_profile_round_trips_through_json_and_stays_small() -> None:
    rng = np.random.default_rng(0)
    b = ProfileBuilder(kinds={"note": "text"}, sample_size=500, seed=1)
    for _ in range(20):
        b.add(_cols(rng, 5000))
    p = b.build()
    text = _json.dumps(p.to_json())
    back = Profile.from_json(json.loads(text))
    assert back.rows == 100_000
    assert back.categories["kind"] == p.categories["kind"]
    assert np.array_equal(back.bins["x"].edges, p.bins["x"].edges)
    assert back.nulls["note"] == 10_000
    assert len(text) < 300_000  # 100k rows, three fields: the profile stays small


@pytest.mark.slow
def test_two_workers_profiles_merge_into_the_whole() -> None:
    rng = np.random.default_rng(2)
    parts = [_cols(rng, 4000) for _ in range(2)]
    one = ProfileBuilder(sample_size=1000, seed=3)
    for part in parts:
        one.add(part)
    whole = one.build()
    a, b = ProfileBuilder(sample_size=1000, seed=4), ProfileBuilder(sample_size=1000, seed=5)
    a.add(parts[0])
    b.add(parts[1])
    merged = a.build().merge(b.build())
    assert merged.rows == whole.rows == 8000
    assert merged.categories["kind"] == whole.categories["kind"]
    assert (
        merged.moments["x"].total == np.float64(whole.moments["x"].total).item()
        or abs(merged.moments["x"].total - whole.moments["x"].total) < 1e-6
    )
    assert len(merged.sample.keys) == 1000
    # the merged sample is the bottom-1000 by priority of both samples
    both = np.concatenate([a.sample.priority, b.sample.priority])
    assert np.allclose(np.sort(merged.sample.priority), np.sort(both)[:1000])


@pytest.mark.slow
def test_windows_counted_in_batches_merge_to_the_same_counts() -> None:
    rng = np.random.default_rng(5)
    b = ProfileBuilder(seed=0)
    b.add(_cols(rng, 5000))
    profile = b.build()
    data = [_cols(rng, 3000, shift=0.5) for _ in range(3)]
    single = WindowCounter(profile, seed=1)
    for d in data:
        single.add(d)
    w1, w2 = WindowCounter(profile, seed=2), WindowCounter(profile, seed=3)
    w1.add(data[0])
    w2.add(data[1])
    w2.add(data[2])
    merged = w1.window.merge(w2.window)
    assert merged.rows == single.window.rows == 9000
    assert np.array_equal(merged.numeric["x"].counts, single.window.numeric["x"].counts)
    assert merged.categories["kind"] == single.window.categories["kind"]
    assert compare(profile, merged).drifted_fields() == {"x"}


@pytest.mark.slow
def test_arrow_batches_count_like_numpy_columns() -> None:
    rng = np.random.default_rng(8)
    cols = _cols(rng, 2000)
    p1 = ProfileBuilder(seed=1)
    p1.add(cols)
    p2 = ProfileBuilder(seed=1)
    p2.add(pa.table({"x": cols["x"], "kind": list(cols["kind"]), "note": cols["note"]}))
    a, b = p1.build(), p2.build()
    assert a.kinds == b.kinds == {"x": "numeric", "kind": "categorical", "note": "text"}
    assert a.categories["kind"] == b.categories["kind"]
    assert np.allclose(a.bins["x"].edges, b.bins["x"].edges)
