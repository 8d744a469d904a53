"""The statistics releases are judged by: anytime-valid confidence sequences for a rollout,
McNemar's exact test and bootstrap intervals for an evaluation, calibration error."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    estimate: float | None
    low: float
    high: float

    def as_dict(self) -> dict[str, float | None]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


def proportion_cs(successes: int, n: int, alpha: float) -> Interval:
    """Anytime-valid interval for a proportion: valid at every ``n`` at once, however often
    it is looked at (coverage >= 1 - ``alpha`` over the whole sequence).

    Robbins' beta-binomial mixture: under p = p0 the mixture likelihood ratio
    B(1 + s, 1 + n - s) / (p0^s (1 - p0)^(n - s)) is a nonnegative martingale, so by Ville's
    inequality it exceeds 1/alpha with probability at most alpha, ever. The interval is the
    set of p0 it has not rejected. It narrows fast for proportions near 0 or 1.
    """
    if n <= 0:
        return Interval(None, 0.0, 1.0)
    from scipy.optimize import brentq
    from scipy.special import betaln

    s = successes
    bound = math.log(1.0 / alpha)
    mix = float(betaln(1 + s, 1 + n - s))

    def excess(p: float) -> float:  # > 0: p is rejected
        return mix - s * math.log(p) - (n - s) * math.log1p(-p) - bound

    p_hat = s / n
    eps = 1e-12
    centre = min(max(p_hat, eps), 1 - eps)
    low = 0.0 if s == 0 or excess(eps) < 0 else float(brentq(excess, eps, centre))
    high = 1.0 if s == n or excess(1 - eps) < 0 else float(brentq(excess, centre, 1 - eps))
    return Interval(p_hat, low, high)


def release_difference_cs(pairs: int, differ: int, decisive: int, challenger_right: int,
                          labelled: int, alpha: float) -> Interval:
    """Anytime-valid interval for P(challenger right) - P(champion right).

    Where two releases give the same answer they are equally right, so the difference is
    q * u * (2p - 1): q the share of records where their answers differ (known from every
    paired record, no person needed), u the share of differing records people labelled on
    which exactly one was right, p the share of those the challenger got right. One
    confidence sequence for each (alpha/3 each, a union bound). Two similar releases are told
    apart from a few labelled disagreements.
    """
    if pairs <= 0:
        return Interval(None, -1.0, 1.0)
    a3 = alpha / 3
    q = proportion_cs(differ, pairs, a3)
    u = proportion_cs(decisive, labelled, a3) if labelled else Interval(None, 0.0, 1.0)
    p = proportion_cs(challenger_right, decisive, a3) if decisive else Interval(None, 0.0, 1.0)
    low = ((2 * p.low - 1) * q.low * u.low if p.low >= 0.5
           else (2 * p.low - 1) * q.high * u.high)
    high = ((2 * p.high - 1) * q.low * u.low if p.high <= 0.5
            else (2 * p.high - 1) * q.high * u.high)
    estimate = None
    if labelled and q.estimate is not None:
        estimate = q.estimate * (2 * challenger_right - decisive) / labelled
    return Interval(estimate, low, high)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided p-value of McNemar's exact test: ``b`` and ``c`` are the discordant counts."""
    from scipy.stats import binomtest

    if b + c == 0:
        return 1.0
    return float(binomtest(b, b + c, 0.5, alternative="two-sided").pvalue)


def bootstrap_diff(a: np.ndarray, b: np.ndarray, stat: str, confidence: float,
                   rounds: int = 2000, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of stat(a) - stat(b) over paired records (resampled
    together). ``a`` and ``b`` are per-record arrays: for "coverage" 1 where accepted; for
    "auto_accuracy" 1 correct-and-accepted, 0 wrong-and-accepted, NaN not accepted."""
    rng = np.random.default_rng(seed)
    n = len(a)
    if n == 0:
        return Interval(None, math.nan, math.nan)
    idx = rng.integers(0, n, size=(rounds, n))

    def stat_of(x: np.ndarray, rows: np.ndarray | slice) -> np.ndarray:
        sample = x[rows]
        return np.asarray(sample.mean(axis=-1) if stat == "coverage"
                          else np.nanmean(sample, axis=-1))

    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with nothing accepted
        point = float(stat_of(a, slice(None)) - stat_of(b, slice(None)))
        diffs = stat_of(a, idx) - stat_of(b, idx)
    diffs = diffs[~np.isnan(diffs)]
    if len(diffs) == 0:
        return Interval(None if math.isnan(point) else point, math.nan, math.nan)
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(diffs, [tail, 100 - tail])
    return Interval(None if math.isnan(point) else point, float(lo), float(hi))


def reliability(confidence: Sequence[float], correct: Sequence[bool],
                bins: int = 10) -> tuple[float | None, list[dict[str, float | int]]]:
    """Expected calibration error over equal-width confidence bins, and the bins
    (mean confidence, accuracy, count) for a reliability plot."""
    conf = np.asarray(confidence, dtype=float)
    ok = np.asarray(correct, dtype=float)
    if len(conf) == 0:
        return None, []
    which = np.minimum((conf * bins).astype(int), bins - 1)
    out: list[dict[str, float | int]] = []
    ece = 0.0
    for b in range(bins):
        mask = which == b
        n = int(mask.sum())
        if not n:
            continue
        mc, acc = float(conf[mask].mean()), float(ok[mask].mean())
        ece += n / len(conf) * abs(mc - acc)
        out.append({"low": b / bins, "high": (b + 1) / bins, "confidence": mc,
                    "accuracy": acc, "count": n})
    return ece, out
