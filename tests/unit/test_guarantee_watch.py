"""The guarantee watched: a sequential test on audited automatic decisions."""

from __future__ import annotations

import numpy as np

from keel.store.reviews import violation_evidence


def _ever_void(rng: np.random.Generator, accuracy: float, runs: int, audits: int,
               target: float = 0.98, delta: float = 0.05, every: int = 10) -> float:
    """Share of audit streams whose evidence reaches 1/delta at some look (every 10 audits)."""
    hits = 0
    for _ in range(runs):
        errors = np.cumsum(rng.uniform(0, 1, audits) > accuracy)
        hits += any(violation_evidence(int(errors[n - 1]), n, target) >= 1 / delta
                    for n in range(every, audits + 1, every))
    return hits / runs


def test_a_kept_guarantee_is_rarely_declared_void_however_often_it_is_watched() -> None:
    # exactly at the target, looked at 50 times over 500 audits: at most delta (+ noise)
    assert _ever_void(np.random.default_rng(5), 0.98, runs=400, audits=500) <= 0.05 + 0.03


def test_a_broken_guarantee_is_declared_void_within_a_few_hundred_audits() -> None:
    assert _ever_void(np.random.default_rng(6), 0.92, runs=100, audits=300) >= 0.9


def test_evidence_grows_with_errors_and_is_neutral_without_audits() -> None:
    assert violation_evidence(0, 0, 0.98) == 1.0
    assert violation_evidence(0, 200, 0.98) < 1.0 < violation_evidence(10, 200, 0.98)
    assert violation_evidence(10, 200, 0.98) < violation_evidence(20, 200, 0.98)
