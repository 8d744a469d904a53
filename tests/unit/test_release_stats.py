"""The statistics releases are judged by: the anytime-valid confidence sequences a rollout
looks at after every batch, McNemar's exact test and the bootstrap of keel eval, and the
calibration error."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from keel.releases import (
    bootstrap_diff,
    mcnemar_exact,
    proportion_cs,
    release_difference_cs,
    reliability,
)


def _ever_excluded(p: float, sequences: int, length: int, alpha: float, seed: int) -> float:
    """Share of Bernoulli(p) sequences whose interval, looked at after every draw, ever
    leaves out p."""
    rng = np.random.default_rng(seed)
    successes = (rng.random((sequences, length)) < p).cumsum(axis=1)

    @functools.cache
    def covers(s: int, n: int) -> bool:
        iv = proportion_cs(s, n, alpha)
        return iv.low <= p <= iv.high

    missed = sum(not all(covers(int(s), n) for n, s in enumerate(row, 1)) for row in successes)
    return missed / sequences


def test_proportion_cs_covers_the_truth_however_often_it_is_looked_at() -> None:
    # 300 sequences of 400 draws, each checked at every n: a fixed-n interval looked at this
    # often would miss far more than alpha of them
    assert _ever_excluded(0.3, 300, 400, 0.05, seed=2024) <= 0.05 + 0.02


@pytest.mark.slow
@pytest.mark.parametrize("p", [0.02, 0.5, 0.9])
def test_proportion_cs_coverage_over_long_sequences(p: float) -> None:
    assert _ever_excluded(p, 1000, 2000, 0.05, seed=7) <= 0.05 + 0.015
    assert _ever_excluded(p, 1000, 1000, 0.2, seed=8) <= 0.2 + 0.03


def test_proportion_cs_narrows_and_holds_its_estimate() -> None:
    widths = []
    for n in (12, 100, 1000, 10_000):
        iv = proportion_cs(n // 4, n, 0.05)
        assert iv.estimate == pytest.approx(0.25) and iv.low < 0.25 < iv.high
        widths.append(iv.high - iv.low)
    assert widths == sorted(widths, reverse=True) and widths[-1] < 0.05
    assert proportion_cs(0, 0, 0.05).as_dict() == {"estimate": None, "low": 0.0, "high": 1.0}
    none, every = proportion_cs(0, 50, 0.05), proportion_cs(50, 50, 0.05)
    assert none.low == 0.0 and 0 < none.high < 0.2 and every.high == 1.0
    assert every.low == pytest.approx(1 - none.high)  # symmetric
    # a smaller alpha is a wider interval
    assert proportion_cs(30, 100, 0.01).low < proportion_cs(30, 100, 0.1).low


def test_release_difference_cs_has_the_sign_of_who_is_right() -> None:
    alpha = 0.05
    # 1000 paired records, 200 answered differently, people labelled 60 of those; exactly one
    # release was right on 50 of them
    better = release_difference_cs(1000, 200, 50, 45, 60, alpha)
    worse = release_difference_cs(1000, 200, 50, 5, 60, alpha)
    assert better.low > 0 and better.estimate == pytest.approx(0.2 * (90 - 50) / 60)
    assert worse.high < 0 and worse.estimate == pytest.approx(-(better.estimate or 0))
    assert worse.low == pytest.approx(-better.high) and worse.high == pytest.approx(-better.low)
    even = release_difference_cs(1000, 200, 50, 25, 60, alpha)
    assert even.low < 0 < even.high and even.estimate == 0
    # the difference is bounded by how often the answers differ at all
    assert worse.low > -0.3 and better.high < 0.3


def test_release_difference_cs_without_disagreements_is_near_zero() -> None:
    same = release_difference_cs(500, 0, 0, 0, 0, 0.05)
    assert same.estimate is None and -0.05 < same.low <= 0 <= same.high < 0.05
    # nothing paired yet: nothing is known
    assert release_difference_cs(0, 0, 0, 0, 0, 0.05).as_dict() == {
        "estimate": None, "low": -1.0, "high": 1.0}
    # differences nobody labelled yet cannot say who is better
    unlabelled = release_difference_cs(500, 100, 0, 0, 0, 0.05)
    assert unlabelled.low < -0.1 and unlabelled.high > 0.1


def test_mcnemar_exact_matches_the_binomial_test() -> None:
    # only release A right on 3 records, only release B right on 12
    assert mcnemar_exact(3, 12) == pytest.approx(2 * sum(math.comb(15, k) for k in range(4)) / 2 ** 15)
    assert mcnemar_exact(3, 12) == pytest.approx(0.03515625)
    for b, c in ((3, 12), (10, 10), (0, 7), (25, 9), (1, 0)):
        assert mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
        assert mcnemar_exact(b, c) == mcnemar_exact(c, b)
    assert mcnemar_exact(0, 0) == 1.0


def test_bootstrap_diff_is_repeatable_and_brackets_the_difference() -> None:
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.9).astype(float)
    b = (rng.random(400) < 0.7).astype(float)
    iv = bootstrap_diff(a, b, "coverage", 0.95)
    assert iv == bootstrap_diff(a, b, "coverage", 0.95)  # seeded
    assert iv.estimate == pytest.approx(a.mean() - b.mean())
    assert 0 < iv.low < iv.estimate < iv.high  # type: ignore[operator]
    # auto-accepted accuracy leaves out what was not accepted (NaN)
    a_auto = np.where(np.arange(400) % 2 == 0, a, np.nan)
    iv = bootstrap_diff(a_auto, b, "auto_accuracy", 0.95)
    assert iv.estimate == pytest.approx(np.nanmean(a_auto) - b.mean())
    empty = bootstrap_diff(np.array([]), np.array([]), "coverage", 0.95)
    assert empty.estimate is None and math.isnan(empty.low)


def test_reliability_is_zero_when_confidence_is_accuracy() -> None:
    conf = [0.95] * 20 + [0.55] * 20
    right = [True] * 19 + [False] + [True] * 11 + [False] * 9
    ece, bins = reliability(conf, right)
    assert ece == pytest.approx(0.0)
    assert [(b["count"], b["accuracy"]) for b in bins] == [(20, 0.55), (20, 0.95)]
    ece, _bins = reliability([0.9] * 10, [False] * 10)
    assert ece == pytest.approx(0.9)
    assert reliability([], []) == (None, [])
