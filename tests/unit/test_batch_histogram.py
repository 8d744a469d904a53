"""Histograms observed a batch at a time expose what one observe() per value would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from keel.telemetry._metrics import BatchHistogram


def _samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, str], float]:
    out = {}
    for metric in registry.collect():
        for s in metric.samples:
            if s.name.startswith(name) and not s.name.endswith("_created"):
                out[(s.name, s.labels.get("le", ""))] = s.value
    return out


def test_batches_count_like_one_observation_at_a_time() -> None:
    bounds = (0.001, 0.01, 0.1, 1.0)
    values = [0.0005, 0.001, 0.0011, 0.01, 0.05, 0.5, 1.0, 2.0, 30.0]
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    h = Histogram("t_seconds", "doc", ["w"], buckets=bounds, registry=theirs)
    for v in values:
        h.labels("a").observe(v)
    b = BatchHistogram("t_seconds", "doc", ["w"], bounds, ours)
    b.observe_many(("a",), values[:4])
    b.observe_many(("a",), values[4:])
    b.observe_many(("a",), [])
    mine, reference = _samples(ours, "t_seconds"), _samples(theirs, "t_seconds")
    assert mine.pop(("t_seconds_sum", "")) == pytest.approx(reference.pop(("t_seconds_sum", "")))
    assert mine == reference
    assert b't_seconds_bucket{le="+Inf",w="a"} 9.0' in generate_latest(ours)
