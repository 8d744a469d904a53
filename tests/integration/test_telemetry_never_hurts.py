"""Telemetry never holds up the workflow: a hung collector costs dropped spans, not decisions."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests._collectors import black_hole
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.store import Store
from keel.telemetry import Telemetry, make_exporter, metrics_text

DEADLINE_S = 1.0


def _dropped(telemetry: Telemetry) -> dict[str, float]:
    out = {}
    for fam in text_string_to_metric_families(metrics_text(None, telemetry).decode()):
        for s in fam.samples:
            if s.name == "keel_telemetry_spans_dropped_total":
                out[s.labels["reason"]] = s.value
    return out


@pytest.mark.parametrize("kind", ["otlp-http", "otlp-grpc"])
def test_a_black_holed_collector_does_not_hold_up_the_run_or_shutdown(
        tmp_path: Path, store: Store, kind: str) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(300)])
    with black_hole() as url:
        endpoint = url if kind == "otlp-http" else url.removeprefix("http://")
        exporter = make_exporter(kind, endpoint, timeout_s=30.0)  # the exporter would wait 30 s
        assert exporter is not None
        telemetry = Telemetry(exporter=exporter, flush_deadline_s=DEADLINE_S, max_queue_records=100)
        summary = keel.run(make(), src, store=store, batch_size=20, telemetry=telemetry)
        t0 = time.monotonic()
        telemetry.shutdown()
        took = time.monotonic() - t0
    assert counts_balance(summary) and summary.counts["accepted"] == 300
    assert took < DEADLINE_S + 2.0  # a correctness bound (the deadline holds), not a benchmark
    counted = telemetry.dropped_spans  # an export still hanging may fail (and count) later
    dropped = _dropped(telemetry)
    assert dropped.get("queue_full", 0) > 0  # the bounded queue filled while export hung
    assert sum(dropped.values()) >= counted > 0


def test_an_exporter_that_raises_costs_counted_spans_only(tmp_path: Path, store: Store) -> None:
    class Broken:
        def export(self, spans: object) -> object:
            raise ConnectionError("collector refused")

        def shutdown(self) -> None:
            pass

    telemetry = Telemetry(exporter=Broken())  # type: ignore[arg-type]
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(30)])
    summary = keel.run(make(), src, store=store, telemetry=telemetry)
    assert telemetry.flush(10.0)
    telemetry.shutdown()
    assert summary.counts["accepted"] == 30
    assert _dropped(telemetry)["export_failed"] > 30  # every span of every record, counted


def test_an_unknown_exporter_is_a_clear_user_error() -> None:
    with pytest.raises(keel.KeelError, match="unknown OpenTelemetry exporter 'jaeger'"):
        Telemetry.from_options("jaeger")
    assert Telemetry.from_options().spans is None  # default: no traces
