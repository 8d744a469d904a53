"""Two-sample tests on binned data, effect sizes, and Benjamini-Hochberg.

Every function here takes counts (or small samples), never raw windows, so a test costs the
same for a thousand rows as for a billion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import special  # scipy.stats (a second of start-up) loads only for text checks

FloatArray = NDArray[np.float64]

#: Floor for empty bins in PSI, as a share of rows (the usual 1e-4).
PSI_EPS = 1e-4


@dataclass(frozen=True)
class NumericShift:
    """Reference vs current on the reference's quantile bins."""

    ks: float  # max |F_ref - F_cur| at the bin edges
    p_value: float
    psi: float
    wasserstein_sd: float  # Wasserstein-1 distance in reference standard deviations
    mean_shift_sd: float  # (mean_cur - mean_ref) / sd_ref, signed


def ks_pvalue(d: float, n: float, m: float) -> float:
    """Asymptotic two-sample Kolmogorov-Smirnov p-value with Stephens' small-sample correction."""
    if n <= 0 or m <= 0:
        return 1.0
    en = math.sqrt(n * m / (n + m))
    lam = (en + 0.12 + 0.11 / en) * d
    return float(min(1.0, max(0.0, special.kolmogorov(lam))))


def numeric_shift(
    edges: FloatArray,
    ref_cdf: FloatArray,
    ref_n: int,
    ref_mean: float,
    ref_sd: float,
    cur_counts: FloatArray,
    cur_gap_below: float,
    cur_gap_above: float,
    cur_mean: float,
) -> NumericShift:
    """Compare a current window counted into the reference's bins with the reference.

    ``cur_counts`` has ``len(edges) + 1`` cells: bin ``j`` holds values in
    ``(edges[j-1], edges[j]]``, bin 0 values ``<= edges[0]`` and the last values ``> edges[-1]``.
    ``cur_gap_below`` is the sum of ``edges[0] - x`` over bin 0, ``cur_gap_above`` the sum of
    ``x - edges[-1]`` over the last bin; together they give the tails of the Wasserstein
    integral exactly.
    """
    m = float(cur_counts.sum())
    if m == 0 or ref_n == 0:
        return NumericShift(0.0, 1.0, 0.0, 0.0, 0.0)
    cur_cdf = np.cumsum(cur_counts)[:-1] / m  # F_cur at each edge
    diff = np.abs(cur_cdf - ref_cdf)
    ks = float(diff.max()) if diff.size else 0.0
    widths = np.diff(edges)
    inner = float(np.sum(widths * (diff[:-1] + diff[1:]) / 2.0)) if widths.size else 0.0
    w1 = inner + (cur_gap_below + cur_gap_above) / m
    sd = ref_sd if ref_sd > 0 else _fallback_scale(edges)
    return NumericShift(
        ks=ks,
        p_value=ks_pvalue(ks, ref_n, m),
        psi=psi(_coarse(np.diff(np.concatenate([[0.0], ref_cdf, [1.0]])), cur_counts / m)),
        wasserstein_sd=w1 / sd,
        mean_shift_sd=(cur_mean - ref_mean) / sd,
    )


def _fallback_scale(edges: FloatArray) -> float:
    span = float(edges[-1] - edges[0]) if edges.size else 0.0
    return span if span > 0 else 1.0


def _coarse(ref_p: FloatArray, cur_p: FloatArray) -> tuple[FloatArray, FloatArray]:
    groups = coarse_groups(ref_p)
    return (np.array([ref_p[g].sum() for g in groups]), np.array([cur_p[g].sum() for g in groups]))


def coarse_groups(ref_p: FloatArray, target: float = 0.1) -> list[list[int]]:
    """Adjacent fine bins merged into about ten groups of >= ``target`` reference mass each.

    PSI and the report's histograms use these groups.
    """
    groups: list[list[int]] = [[]]
    mass = 0.0
    for j, p in enumerate(ref_p):
        groups[-1].append(j)
        mass += p
        if mass >= target - 1e-9 and j < len(ref_p) - 1:
            groups.append([])
            mass = 0.0
    if not groups[-1]:
        groups.pop()
    if len(groups) > 1 and sum(ref_p[groups[-1]]) < target / 2:
        groups[-2].extend(groups.pop())
    return groups


def psi(pair: tuple[FloatArray, FloatArray]) -> float:
    """Population stability index; 0.1 is a moderate shift, 0.25 a major one."""
    ref, cur = pair
    r = np.maximum(ref, PSI_EPS)
    c = np.maximum(cur, PSI_EPS)
    return float(np.sum((c - r) * np.log(c / r)))


@dataclass(frozen=True)
class CategoricalShift:
    chi2: float
    p_value: float
    psi: float
    #: (category, reference share, current share), largest absolute change first
    changes: list[tuple[str, float, float]]
    new: list[tuple[str, float]]  # categories the reference never saw, with current share
    max_pp: float  # largest absolute change in share, in percentage points


def categorical_shift(ref: dict[str, float], cur: dict[str, float]) -> CategoricalShift:
    """Chi-squared on the union of categories (new ones included), rare cells pooled."""
    cats = sorted(set(ref) | set(cur))
    r = np.array([ref.get(c, 0.0) for c in cats], dtype=np.float64)
    c = np.array([cur.get(c, 0.0) for c in cats], dtype=np.float64)
    nr, nc = r.sum(), c.sum()
    if nr == 0 or nc == 0:
        return CategoricalShift(0.0, 1.0, 0.0, [], [], 0.0)
    chi2, p = _chi2_pooled(r, c)
    rp, cp = r / nr, c / nc
    order = np.argsort(-np.abs(cp - rp), kind="stable")
    changes = [(cats[i], float(rp[i]), float(cp[i])) for i in order]
    new = [(cats[i], float(cp[i])) for i in order if r[i] == 0 and c[i] > 0]
    max_pp = float(np.abs(cp - rp).max()) * 100.0
    return CategoricalShift(chi2, p, psi((rp, cp)), changes, new, max_pp)


def _chi2_pooled(r: FloatArray, c: FloatArray, min_expected: float = 5.0) -> tuple[float, float]:
    """Chi-squared test of homogeneity; cells with small expected counts are pooled."""
    total = r + c
    expected_small = (
        np.minimum(total * r.sum(), total * c.sum()) / (r.sum() + c.sum()) < min_expected
    )
    if expected_small.any() and (~expected_small).any():
        r = np.append(r[~expected_small], r[expected_small].sum())
        c = np.append(c[~expected_small], c[expected_small].sum())
    keep = (r + c) > 0
    r, c = r[keep], c[keep]
    if r.size < 2:
        return 0.0, 1.0
    table = np.vstack([r, c])
    expected = table.sum(0, keepdims=True) * table.sum(1, keepdims=True) / table.sum()
    chi2 = float(np.sum((table - expected) ** 2 / expected))
    return chi2, float(special.chdtrc(r.size - 1, chi2))  # the chi-squared survival function


def two_proportions(k1: float, n1: float, k2: float, n2: float) -> float:
    """p-value that two rates differ (chi-squared on the 2x2 table, no continuity correction)."""
    if n1 <= 0 or n2 <= 0:
        return 1.0
    return _chi2_pooled(np.array([k1, n1 - k1]), np.array([k2, n2 - k2]), min_expected=0.0)[1]


def binomial_excess(k: int, n: int, rate: float) -> float:
    """One-sided p-value that ``k`` of ``n`` exceeds the expected ``rate``."""
    if n <= 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(k, n, rate, alternative="greater").pvalue)


def benjamini_hochberg(p_values: list[float]) -> list[float]:
    """Adjusted p-values (q-values); reject where q <= alpha controls the FDR at alpha."""
    if not p_values:
        return []
    p = np.asarray(p_values, dtype=np.float64)
    n = p.size
    order = np.argsort(p)
    ranked = p[order] * n / np.arange(1, n + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(n)
    out[order] = np.minimum(q, 1.0)
    return [float(x) for x in out]


@dataclass(frozen=True)
class ClassifierTest:
    auc: float
    p_value: float
    n_ref: int
    n_cur: int


def classifier_two_sample(ref: FloatArray, cur: FloatArray, seed: int = 0) -> ClassifierTest:
    """Can a classifier tell current rows from reference rows?

    Logistic regression is fitted on half of each sample and scored on the other half; the
    AUC on the held-out half is the effect size, and its Mann-Whitney U p-value is exact
    under no shift (held-out scores are exchangeable), so the false-alarm rate is as stated.
    """
    from scipy import stats
    from sklearn.linear_model import LogisticRegression

    if len(ref) < 20 or len(cur) < 20:
        return ClassifierTest(0.5, 1.0, len(ref), len(cur))
    rng = np.random.default_rng(seed)
    n = min(len(ref), len(cur))
    r = ref[rng.permutation(len(ref))[:n]]
    c = cur[rng.permutation(len(cur))[:n]]
    half = n // 2
    x_fit = np.vstack([r[:half], c[:half]])
    y_fit = np.r_[np.zeros(half), np.ones(half)]
    clf = LogisticRegression(C=1.0, max_iter=500).fit(x_fit, y_fit)
    s_ref = clf.decision_function(r[half:])
    s_cur = clf.decision_function(c[half:])
    u = stats.mannwhitneyu(s_cur, s_ref, alternative="greater")
    auc = float(u.statistic) / (len(s_cur) * len(s_ref))
    return ClassifierTest(auc, float(u.pvalue), len(s_ref), len(s_cur))
