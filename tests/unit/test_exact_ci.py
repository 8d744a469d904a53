"""The one confidence interval keel reports for an accuracy is the exact (Clopper-Pearson) one."""

from __future__ import annotations

import pytest
from scipy.stats import binomtest

from keel.store.reviews import exact_ci


@pytest.mark.parametrize(("hits", "n"), [(3, 5), (0, 4), (4, 4), (97, 100), (1, 1), (250, 300)])
def test_matches_scipys_exact_binomial_interval(hits: int, n: int) -> None:
    ci = binomtest(hits, n).proportion_ci(confidence_level=0.95, method="exact")
    low, high = exact_ci(hits, n) or (None, None)
    assert low == pytest.approx(ci.low, abs=1e-12) and high == pytest.approx(ci.high, abs=1e-12)


def test_nothing_observed_has_no_interval() -> None:
    assert exact_ci(0, 0) is None
