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


@pytest.mark.parametrize("values", [[3.0], [1.0, 2.0], [5.0, 1.0, 4.0, 2.0, 3.0], list(range(97))])
@pytest.mark.parametrize("q", [0, 50, 95, 100])
def test_status_percentiles_match_numpy(values: list[float], q: float) -> None:
    import numpy as np

    from keel.store.queries import percentile

    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))
