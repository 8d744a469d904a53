"""Risk-controlled thresholds: Learn-then-Test with fixed-sequence testing.

Given labelled examples (confidence, was the model right), pick the lowest confidence
threshold such that, with probability at least ``1 - delta`` over the draw of the labels,
the error rate among predictions at or above the threshold is at most ``1 - target``.

For each threshold ``lam`` on a fixed grid the null hypothesis is "error above ``lam`` >
alpha". Its p-value comes from the ``n`` labelled points at or above ``lam`` with ``k``
errors: the exact binomial tail ``P(Binom(n, alpha) <= k)`` (equivalently, the one-sided
Clopper-Pearson bound is <= alpha) or the Hoeffding-Bentkus bound. Thresholds are tested
from high to low and testing stops at the first one that cannot be certified, so no
multiplicity correction is needed (fixed-sequence testing controls the family-wise error at
``delta``). Because one unlucky error among the few most confident points would end the
sequence before it starts, testing begins at the highest threshold with at least
:func:`start_size` points above it: enough points that a model erring at half the allowed
rate would be certified. That choice uses the confidences only, never the labels.
(Angelopoulos, Bates, Candès, Jordan, Lei: "Learn then Test", 2021.)
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, stats

METHODS = ("binomial", "hb")
#: The fixed grid of thresholds, highest first (steps of 0.001).
GRID: NDArray[np.float64] = np.round(np.linspace(1.0, 0.0, 1001), 3)


def min_labels(alpha: float, delta: float) -> int:
    """The fewest points that can certify error <= alpha at level delta (all of them right)."""
    if not 0 < alpha < 1 or not 0 < delta < 1:
        raise ValueError("alpha and delta must be in (0, 1)")
    return math.ceil(math.log(delta) / math.log(1.0 - alpha))


@functools.lru_cache(maxsize=256)
def start_size(alpha: float, delta: float, n_total: int, method: str = "binomial") -> int:
    """Points needed above the first tested threshold (label-free; see the module docstring).

    The smallest ``n`` at which ``floor(n * alpha / 2)`` errors would be certified, at least
    :func:`min_labels`, at most half the labelled points (small label sets start lower).
    """
    need = min_labels(alpha, delta)
    n = need
    while pvalue(method, math.floor(n * alpha / 2), n, alpha) > delta and n < 10**7:
        n += max(1, n // 50)
    return max(need, min(n, n_total // 2))


def binomial_pvalue(k: int, n: int, alpha: float) -> float:
    """P(Binom(n, alpha) <= k): small when k errors in n are unlikely if the error were alpha."""
    return float(stats.binom.cdf(k, n, alpha)) if n else 1.0


def hb_pvalue(k: int, n: int, alpha: float) -> float:
    """The Hoeffding-Bentkus p-value for "error rate > alpha" from k errors in n."""
    if n == 0:
        return 1.0
    r = k / n
    a = min(r, alpha)
    h1 = (a * math.log(a / alpha) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - alpha))
    hoeffding = math.exp(-n * h1)
    bentkus = math.e * float(stats.binom.cdf(math.ceil(n * r), n, alpha))
    return min(1.0, hoeffding, bentkus)


def pvalue(method: str, k: int, n: int, alpha: float) -> float:
    if method == "binomial":
        return binomial_pvalue(k, n, alpha)
    if method == "hb":
        return hb_pvalue(k, n, alpha)
    raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")


def pvalues(method: str, k: NDArray[np.int64], n: NDArray[np.int64],
            alpha: float) -> NDArray[np.float64]:
    """:func:`pvalue` for many (k, n) pairs at once (every n > 0)."""
    binom = stats.binom.cdf(k, n, alpha)
    if method == "binomial":
        return np.asarray(binom, dtype=np.float64)
    if method != "hb":
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    r = k / n
    a = np.minimum(r, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(a > 0, a * np.log(a / alpha), 0.0) + (1 - a) * np.log((1 - a) / (1 - alpha))
    bentkus = math.e * stats.binom.cdf(np.ceil(n * r), n, alpha)
    return np.asarray(np.minimum(1.0, np.minimum(np.exp(-n * h1), bentkus)), dtype=np.float64)


def error_bound(method: str, k: int, n: int, delta: float) -> float:
    """The upper confidence bound on the error rate at level ``delta`` (the test's inverse)."""
    if n == 0:
        return 1.0
    if method == "binomial":  # one-sided Clopper-Pearson
        return 1.0 if k >= n else float(stats.beta.ppf(1 - delta, k + 1, n - k))
    lo = k / n
    if pvalue(method, k, n, 1 - 1e-9) > delta:
        return 1.0
    if pvalue(method, k, n, max(lo, 1e-12)) <= delta:
        return lo
    return float(optimize.brentq(lambda a: pvalue(method, k, n, a) - delta, max(lo, 1e-12),
                                 1 - 1e-9, xtol=1e-10))


@dataclass
class ThresholdChoice:
    """The outcome of Learn-then-Test on one group of labelled points."""

    n: int                      # labelled points considered
    target_accuracy: float
    delta: float
    method: str
    threshold: float | None     # None: no threshold could be certified
    accepted: int = 0           # points at or above the threshold
    errors: int = 0             # of which the model was wrong
    bound: float = 1.0          # upper bound on the error rate above the threshold
    tested: int = 0             # thresholds tested (all but the last certified)
    stopped_at: dict[str, Any] | None = None  # the first threshold that failed
    refusal: str | None = None

    @property
    def coverage(self) -> float:
        return self.accepted / self.n if self.n else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "threshold": self.threshold, "accepted": self.accepted,
                "errors": self.errors, "coverage": self.coverage, "error_bound": self.bound,
                "accuracy_bound": 1.0 - self.bound, "tested": self.tested,
                "stopped_at": self.stopped_at, "refusal": self.refusal}


def _counts(conf: NDArray[np.float64], wrong: NDArray[np.bool_],
            grid: NDArray[np.float64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """For each threshold: how many points are at or above it, and how many of those are wrong."""
    order = np.argsort(-conf, kind="stable")
    sorted_conf = conf[order]
    cum_wrong = np.concatenate([[0], np.cumsum(wrong[order])])
    n_at = np.searchsorted(-sorted_conf, -grid, side="right")
    return n_at.astype(np.int64), cum_wrong[n_at].astype(np.int64)


def learn_then_test(confidence: Any, correct: Any, *, target_accuracy: float = 0.98,
                    delta: float = 0.05, method: str = "binomial",
                    grid: NDArray[np.float64] = GRID) -> ThresholdChoice:
    """The lowest grid threshold certified by fixed-sequence testing from high to low."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    conf = np.asarray(confidence, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    alpha = 1.0 - target_accuracy
    need = min_labels(alpha, delta)
    choice = ThresholdChoice(n=int(conf.size), target_accuracy=target_accuracy, delta=delta,
                             method=method, threshold=None)
    if conf.size < need:
        choice.refusal = (f"{conf.size} labelled examples; certifying accuracy >= "
                          f"{target_accuracy:g} with probability >= {1 - delta:g} needs at least "
                          f"{need}, and in practice several times that")
        return choice
    first = start_size(alpha, delta, conf.size, method)
    n_at, k_at = _counts(conf, wrong, grid)
    keep = n_at >= first  # too few points above a threshold: not tested, no power
    lams, ns, ks = grid[keep], n_at[keep], k_at[keep]
    passed = pvalues(method, ks, ns, alpha) <= delta
    stop = int(np.argmin(passed)) if not passed.all() else passed.size  # first failure
    choice.tested = min(stop + 1, passed.size)
    if stop > 0:
        last = stop - 1
        choice.threshold = float(lams[last])
        choice.accepted, choice.errors = int(ns[last]), int(ks[last])
    if stop < passed.size:
        n, k = int(ns[stop]), int(ks[stop])
        choice.stopped_at = {"threshold": float(lams[stop]), "n": n, "errors": k,
                             "error_bound": error_bound(method, k, n, delta)}
    if choice.threshold is None:
        at = choice.stopped_at or {}
        choice.refusal = (
            f"no confidence threshold certifies accuracy >= {target_accuracy:g} with probability "
            f">= {1 - delta:g} on {conf.size} labels: at the highest threshold with enough data "
            f"({at.get('threshold')}: {at.get('errors')} wrong of {at.get('n')}) the error could "
            f"be as high as {at.get('error_bound', 1.0):.4f}")
        return choice
    choice.bound = error_bound(method, choice.errors, choice.accepted, delta)
    return choice


@dataclass
class GroupedChoice:
    """Per-class thresholds: one certified threshold per large class, one for the rest."""

    per_class: dict[str, float | None] = field(default_factory=dict)
    rest: ThresholdChoice | None = None
    groups: dict[str, ThresholdChoice] = field(default_factory=dict)
    delta_each: float = 0.0
    class_min_labels: int = 0   # labels a class needs for a threshold of its own


def per_class_thresholds(confidence: Any, correct: Any, predicted: Any, *,
                         target_accuracy: float = 0.98, delta: float = 0.05,
                         method: str = "binomial") -> GroupedChoice:
    """Learn-then-Test per predicted class (Bonferroni over the groups).

    A class with enough labelled points for its own test gets its own threshold; the other
    classes share one pooled threshold. If every group's accuracy above its threshold is at
    least the target, so is the accuracy of everything automated, and with probability at
    least ``1 - delta`` all groups hold at once (each is tested at ``delta / groups``).
    Grouping looks only at how often each class is predicted, never at the labels.
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    pred = np.asarray([str(p) for p in predicted])
    classes, counts = np.unique(pred, return_counts=True)
    need = min_labels(1.0 - target_accuracy, delta / (len(classes) + 1))
    own = [str(c) for c, n in zip(classes.tolist(), counts.tolist(), strict=True) if n >= need]
    out = GroupedChoice(delta_each=delta / (len(own) + 1), class_min_labels=need)
    for cls in own:
        mask = pred == cls
        res = learn_then_test(conf[mask], ok[mask], target_accuracy=target_accuracy,
                              delta=out.delta_each, method=method)
        out.groups[cls] = res
        out.per_class[cls] = res.threshold
    rest = ~np.isin(pred, own)
    out.rest = learn_then_test(conf[rest], ok[rest], target_accuracy=target_accuracy,
                               delta=out.delta_each, method=method)
    return out


def uncertified_point(confidence: Any, correct: Any,
                      target_accuracy: float) -> tuple[float | None, float]:
    """(threshold, coverage): the lowest threshold whose accuracy on these very labels reaches
    the target, and the share it automates. No guarantee: what a threshold picked by eye with
    the answers known would reach, and so the ceiling a certified threshold is compared with."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if not conf.size:
        return None, 0.0
    order = np.argsort(-conf, kind="stable")
    sorted_conf, hits = conf[order], np.cumsum(ok[order])
    # only cut between distinct scores: a threshold takes every tie or none
    ends = np.flatnonzero(np.r_[sorted_conf[1:] != sorted_conf[:-1], True])
    good = ends[hits[ends] >= target_accuracy * (ends + 1)]
    if not good.size:
        return None, 0.0
    last = int(good.max())
    return float(sorted_conf[last]), (last + 1) / conf.size


def best_coverage(confidence: Any, correct: Any, target_accuracy: float) -> float:
    """The coverage of :func:`uncertified_point`."""
    return uncertified_point(confidence, correct, target_accuracy)[1]


def needed_accuracy(method: str, n: int, target_accuracy: float, delta: float) -> float:
    """The observed accuracy that n labelled points above a threshold must show for the
    threshold to be certified: the target plus the bound's margin for sampling error."""
    alpha = 1.0 - target_accuracy
    ks = np.arange(0, n + 1, dtype=np.int64)
    ok = pvalues(method, ks, np.full(ks.size, n, dtype=np.int64), alpha) <= delta
    return 1.0 - float(ks[ok].max()) / n if ok.any() else 1.0


def split_study(confidence: Any, correct: Any, *, splits: int = 20, seed: int = 0,
                target_accuracy: float = 0.98, delta: float = 0.05, method: str = "binomial",
                fixed_threshold: float = 0.5,
                calibration_size: int | None = None) -> list[dict[str, Any]]:
    """Calibrate on a random part (half, or ``calibration_size`` points), evaluate on the
    rest, ``splits`` times.

    Each row: the certified threshold, the coverage and realized accuracy of automated
    decisions on the evaluation part, the same for a fixed threshold for comparison, and the
    best coverage any threshold reaches at the target on the evaluation part (uncertified).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    size = conf.size // 2 if calibration_size is None else calibration_size
    if not 0 < size < conf.size:
        raise ValueError(f"calibration_size must be in (0, {conf.size}), got {size}")
    rng = np.random.default_rng(seed)
    rows = []
    for split in range(splits):
        perm = rng.permutation(conf.size)
        cal, ev = perm[:size], perm[size:]
        res = learn_then_test(conf[cal], ok[cal], target_accuracy=target_accuracy, delta=delta,
                              method=method)
        row: dict[str, Any] = {"split": split, "threshold": res.threshold,
                               "calibration_coverage": res.coverage, "error_bound": res.bound,
                               "best_coverage": best_coverage(conf[ev], ok[ev], target_accuracy)}
        for name, lam in (("calibrated", res.threshold), ("fixed", fixed_threshold)):
            auto = conf[ev] >= lam if lam is not None else np.zeros(ev.size, dtype=bool)
            row[f"{name}_coverage"] = float(auto.mean())
            row[f"{name}_accuracy"] = float(ok[ev][auto].mean()) if auto.any() else None
        rows.append(row)
    return rows


def threshold_curve(confidence: Any, correct: Any, *, delta: float = 0.05,
                    method: str = "binomial", step: float = 0.05) -> list[dict[str, Any]]:
    """For thresholds from 1 down to 0 in ``step``s: how many labelled points are at or above
    it (coverage), how many of those the model got wrong, and the accuracy guaranteed there
    with probability >= 1 - delta (one threshold at a time: for a certified choice across
    thresholds use :func:`learn_then_test`)."""
    conf = np.asarray(confidence, dtype=np.float64)
    wrong = ~np.asarray(correct, dtype=bool)
    grid = np.abs(np.round(np.arange(1.0, -1e-9, -step), 6))
    n_at, k_at = _counts(conf, wrong, grid)
    out = []
    for lam, n, k in zip(grid, n_at, k_at, strict=True):
        n, k = int(n), int(k)
        out.append({"threshold": float(lam), "accepted": n, "errors": k,
                    "coverage": n / conf.size if conf.size else 0.0,
                    "accuracy": (1 - k / n) if n else None,
                    "guaranteed_accuracy": 1.0 - error_bound(method, k, n, delta) if n else None})
    return out
