"""OTLP/HTTP to a collector on loopback, from this process and from the export child process:
the collector gets every record's spans, intact and redacted, and a dead child loses only the
chunk it held."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export import SpanExportResult
from tests._collectors import recording_server
from tests._workflows import make, write_csv

import keel
from keel.store import Store
from keel.telemetry import Telemetry, make_exporter
from keel.telemetry._process import ProcessExporter, dump_chunk, load_chunk


def _child(url: str, timeout_s: float, start_after_spans: int) -> ProcessExporter:
    """An OTLP/HTTP exporter through the child, started after ``start_after_spans``."""
    local = make_exporter("otlp-http", url, timeout_s, process=False)
    assert local is not None
    return ProcessExporter(local, ["otlp-http", url, repr(timeout_s)],
                           start_after_spans=start_after_spans)


def _spans(bodies: list[bytes]) -> list[object]:
    out = []
    for body in bodies:
        req = ExportTraceServiceRequest()
        req.ParseFromString(body)
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                out += list(ss.spans)
    return out


def _attr(span: object, key: str) -> object:
    for kv in span.attributes:  # type: ignore[attr-defined]
        if kv.key == key:
            value = kv.value
            return getattr(value, value.WhichOneof("value"))
    return None


@pytest.mark.parametrize("process", [False, True], ids=["in_process", "child_process"])
def test_every_record_reaches_the_collector(tmp_path: Path, store: Store, process: bool) -> None:
    rows = [(f"k{i}", f"write to person{i}@example.com please") for i in range(40)]
    with recording_server() as collector:
        exporter = make_exporter("otlp-http", collector.url, process=process)
        assert isinstance(exporter, ProcessExporter) is process
        if isinstance(exporter, ProcessExporter):
            assert exporter._proc is None  # started only once a run has exported 10,000 spans
            exporter = _child(collector.url, 5.0, 0)
            assert exporter.wait_ready(30.0)  # every chunk through the child
        telemetry = Telemetry(exporter=exporter)
        summary = keel.run(make(), write_csv(tmp_path / "in.csv", rows), store=store,
                           batch_size=10, telemetry=telemetry)
        assert telemetry.flush(10.0)
        telemetry.shutdown()
    bodies = [r.body for r in collector.requests if r.path == "/v1/traces"]
    spans = _spans(bodies)
    names = Counter(s.name for s in spans)  # type: ignore[attr-defined]
    assert summary.counts["accepted"] == 40 and names["keel.record"] == 40
    assert names["keel.batch"] == 4 and telemetry.dropped_spans == 0
    record = next(s for s in spans if s.name == "keel.record"  # type: ignore[attr-defined]
                  and _attr(s, "keel.record.key") == "k7")
    assert _attr(record, "keel.disposition") == "accepted"
    assert _attr(record, "keel.workflow") == "tickets"
    assert len(record.links) == 1  # type: ignore[attr-defined]  # to its batch's trace
    assert not any(b"@example.com" in b for b in bodies)


def test_spans_cross_to_the_child_unchanged(tmp_path: Path, store: Store) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    telemetry = Telemetry(exporter=memory)
    wf = make(keel.FakeModel(error_rate=1.0), fallback=lambda m: {"label": "rules"})
    keel.run(wf, write_csv(tmp_path / "in.csv", [("a", "x"), ("b", "yy")]), store=store,
             telemetry=telemetry)
    telemetry.shutdown()
    spans = memory.get_finished_spans()
    assert any(s.parent is not None for s in spans) and any(s.links for s in spans)
    assert any(s.status.description for s in spans)  # the failed model calls' errors
    again = load_chunk(dump_chunk(spans))
    assert [s.to_json() for s in again] == [s.to_json() for s in spans]


def test_a_dead_child_costs_one_chunk_then_export_goes_on_here(tmp_path: Path,
                                                                store: Store) -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    telemetry = Telemetry(exporter=memory)
    keel.run(make(), write_csv(tmp_path / "in.csv", [("a", "x"), ("b", "yy")]), store=store,
             telemetry=telemetry)
    telemetry.shutdown()
    spans = list(memory.get_finished_spans())
    with recording_server() as collector:
        exporter = _child(collector.url, 5.0, 1)
        assert exporter._proc is None
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # here; the child starts
        assert exporter.wait_ready(30.0)
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # through the child
        assert exporter._proc is not None
        exporter._proc.kill()
        exporter._proc.wait()
        assert exporter.export(spans) is SpanExportResult.FAILURE  # the chunk it held
        assert exporter.export(spans) is SpanExportResult.SUCCESS  # now from this process
        exporter.shutdown()
    assert len(_spans([r.body for r in collector.requests])) == 3 * len(spans)


def test_a_black_holed_collector_behind_the_child_keeps_the_deadline(tmp_path: Path,
                                                                      store: Store) -> None:
    import time

    from tests._collectors import black_hole

    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(300)])
    with black_hole() as url:
        exporter = _child(url, 30.0, 0)
        assert exporter.wait_ready(30.0)
        telemetry = Telemetry(exporter=exporter, flush_deadline_s=1.0, max_queue_records=100)
        summary = keel.run(make(), src, store=store, batch_size=20, telemetry=telemetry)
        t0 = time.monotonic()
        telemetry.shutdown()
        took = time.monotonic() - t0
        proc = exporter._proc
    assert summary.counts["accepted"] == 300
    assert took < 3.0  # the 1 s deadline holds (a correctness bound, not a benchmark)
    assert proc is None or proc.wait(10) is not None  # the stuck child does not outlive the run
    assert telemetry.dropped_spans > 0  # counted, not silent
