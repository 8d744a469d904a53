"""Drift statistics: valid p-values, the stated false-alarm rate, readable effect sizes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from keel.monitor import DriftSettings, ProfileBuilder, WindowCounter, compare
from keel.monitor._stats import benjamini_hochberg, categorical_shift, classifier_two_sample


def _batch(rng: np.random.Generator, n: int, shift: dict[str, float] | None = None) -> dict:
    s = shift or {}
    cats = np.array(["web", "phone", "email", "chat"], dtype=object)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    if "channel" in s:
        p = np.array([0.4 - s["channel"], 0.3, 0.2, 0.1 + s["channel"]])
    return {
        "amount": rng.lognormal(3.0 + s.get("amount", 0.0), 0.8, n),
        "age": rng.normal(40, 12, n).round(),
        "items": rng.poisson(3, n).astype(float),
        "score": rng.normal(0.0, 1.0, n) * s.get("score_scale", 1.0),
        "channel": cats[rng.choice(4, n, p=p)],
    }


def _report(
    rng: np.random.Generator,
    n_ref: int,
    n_cur: int,
    settings: DriftSettings,
    shift: dict[str, float] | None = None,
):
    builder = ProfileBuilder(sample_size=2048, seed=int(rng.integers(1 << 30)))
    builder.add(_batch(rng, n_ref))
    profile = builder.build()
    counter = WindowCounter(profile, seed=int(rng.integers(1 << 30)))
    for _ in range(2):
        counter.add(_batch(rng, n_cur // 2, shift))
    return compare(profile, counter.window, settings)


def test_benjamini_hochberg_matches_the_textbook_procedure() -> None:
    p = [0.01, 0.04, 0.03, 0.005, 0.5]
    q = benjamini_hochberg(p)
    # sorted: .005 .01 .03 .04 .5 -> .025 .025 .05 .05 .5
    assert q == pytest.approx([0.025, 0.05, 0.05, 0.025, 0.5])


@pytest.mark.slow
def test_no_shift_raises_an_alert_in_at_most_alpha_of_reports() -> None:
    """The stated false-alarm rate: with nothing shifted, <= alpha of reports alert."""
    rng = np.random.default_rng(7)
    runs = 150
    # p-values alone (no materiality rule), at a loose alpha, so a miscalibrated test shows
    loose = DriftSettings(alpha=0.2, min_psi=0.0, min_wasserstein_sd=0.0, min_pp=0.0)
    any_alert = sum(_report(rng, 3000, 600, loose).drifted for _ in range(runs))
    bound = 0.2 + 3 * np.sqrt(0.2 * 0.8 / runs)
    assert any_alert / runs <= bound, f"{any_alert}/{runs} no-shift reports alerted"
    # at the defaults: no alert, and no minor shift either (a minor is significant too)
    flagged = sum(
        any(c.level != "none" for c in _report(rng, 3000, 600, DriftSettings()).checks)
        for _ in range(runs)
    )
    assert flagged / runs <= 0.01 + 3 * np.sqrt(0.01 * 0.99 / runs)


def test_every_shifted_column_is_flagged_and_no_other() -> None:
    rng = np.random.default_rng(3)
    report = _report(
        rng,
        20_000,
        20_000,
        DriftSettings(),
        shift={"amount": 0.3, "channel": 0.08, "score_scale": 1.5},
    )
    assert {c.field for c in report.alerts} == {"amount", "channel", "score"}
    amount = next(c for c in report.alerts if c.field == "amount")
    assert amount.effect["mean_shift_sd"] > 0.2  # readable direction and size
    channel = next(c for c in report.alerts if c.field == "channel")
    assert channel.effect["max_pp"] == pytest.approx(8.0, abs=1.5)
    assert "pp" in channel.summary


def test_new_categories_count_in_the_test() -> None:
    ref = {"a": 500.0, "b": 500.0}
    cur = {"a": 450.0, "b": 450.0, "c": 100.0}
    shift = categorical_shift(ref, cur)
    assert shift.new == [("c", pytest.approx(0.1))]
    assert shift.p_value < 1e-10
    assert shift.max_pp == pytest.approx(10.0)


@pytest.mark.slow
def test_classifier_test_pvalues_are_valid_under_no_shift() -> None:
    rng = np.random.default_rng(11)
    ps = [
        classifier_two_sample(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), seed=i).p_value
        for i in range(60)
    ]
    assert np.mean(np.array(ps) < 0.1) <= 0.1 + 3 * np.sqrt(0.09 / 60)
    assert stats.kstest(ps, "uniform").pvalue > 0.001
    shifted = classifier_two_sample(rng.normal(size=(400, 8)), rng.normal(0.4, 1, size=(400, 8)))
    assert shifted.auc > 0.7 and shifted.p_value < 1e-6
