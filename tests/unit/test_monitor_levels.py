"""Verdicts in three levels (alert, minor, none), exact reference bins, and determinism."""

from __future__ import annotations

import numpy as np

from keel import _json
from keel.monitor import ProfileBuilder, WindowCounter, compare


def _data(seed: int, n: int, shifts: dict[str, float]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    cols = {f"x{i}": rng.normal(0.0, 1.0, n) for i in range(4)}
    for name, sd in shifts.items():
        cols[name] = cols[name] + sd
    return cols


def _report(ref: dict, cur: dict, batch: int = 50_000):  # type: ignore[no-untyped-def]
    b = ProfileBuilder()
    n = len(next(iter(ref.values())))
    for i in range(0, n, batch):
        b.add({k: v[i : i + batch] for k, v in ref.items()})
    profile = b.build()
    w = WindowCounter(profile)
    for i in range(0, n, batch):
        w.add({k: v[i : i + batch] for k, v in cur.items()})
    return profile, compare(profile, w.window)


def test_small_real_shift_is_minor_large_is_alert_none_otherwise() -> None:
    n = 150_000
    ref = _data(1, n, {})
    cur = _data(2, n, {"x0": 0.5, "x1": 0.08})
    _profile, report = _report(ref, cur)
    levels = report.levels()
    assert levels["x0"] == "alert"
    assert levels["x1"] == "minor"  # 0.08 sd: significant on 150k rows, not material
    assert {levels[f"x{i}"] for i in range(2, 4)} == {"none"}
    assert report.drifted_fields() == {"x0"}  # minor never alerts
    assert [c.field for c in report.minor] == ["x1"]
    assert report.metrics()["keel_drift_alerts"] == 1.0
    assert report.metrics()["keel_drift_minor"] == 1.0
    d = report.as_dict()
    assert len(d["minor"]) == 1 and d["minor"][0].startswith("x1 (ks)")


def test_only_minor_shifts_is_no_drift() -> None:
    n = 150_000
    _profile, report = _report(_data(1, n, {}), _data(2, n, {"x3": 0.08}))
    assert not report.drifted
    assert report.levels()["x3"] == "minor"


def test_reference_bins_count_every_row_not_the_sample() -> None:
    ref = _data(1, 100_000, {})
    profile = _report(ref, _data(2, 1000, {}))[0]
    bins = profile.bins["x0"]
    assert bins.n_eff == 100_000 and len(profile.sample.keys) == 4096
    vals = np.sort(ref["x0"])
    exact = np.searchsorted(vals, bins.edges, side="right") / vals.size
    assert np.allclose(bins.cdf, exact)  # the CDF at each edge over all rows, exactly


def test_same_inputs_give_the_same_verdicts_and_profile() -> None:
    n = 60_000
    ref, cur = _data(3, n, {}), _data(4, n, {"x0": 0.1, "x2": 0.03})
    p1, r1 = _report(ref, cur)
    p2, r2 = _report(ref, cur, batch=50_000)
    strip = lambda p: {k: v for k, v in p.to_json().items() if k != "meta"}  # noqa: E731
    assert _json.dumps(strip(p1)) == _json.dumps(strip(p2))
    assert [(c.field, c.test, c.level, c.q_value) for c in r1.checks] == [
        (c.field, c.test, c.level, c.q_value) for c in r2.checks
    ]
