"""OpenTelemetry: a trace per record with a span per stage and GenAI model-call spans."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.store import Store
from keel.telemetry import Telemetry
from keel.telemetry._export import SpanQueue
from keel.telemetry._spans import BatchUnit


def _traces(spans: tuple[ReadableSpan, ...]) -> dict[int, list[ReadableSpan]]:
    by_trace: dict[int, list[ReadableSpan]] = defaultdict(list)
    for s in spans:
        assert s.context is not None
        by_trace[s.context.trace_id].append(s)
    return by_trace


def _record_traces(spans: tuple[ReadableSpan, ...]) -> dict[str, list[ReadableSpan]]:
    out = {}
    for group in _traces(spans).values():
        roots = [s for s in group if s.parent is None]
        assert len(roots) == 1, "each trace has exactly one root"
        if roots[0].name == "keel.record":
            out[str(roots[0].attributes["keel.record.key"])] = group  # type: ignore[index]
    return out


def _run(tmp_path: Path, store: Store, wf: keel.Workflow, rows: list[tuple[str, str]],
         **kw: Any) -> tuple[keel.RunSummary, tuple[ReadableSpan, ...]]:
    exporter = InMemorySpanExporter()
    telemetry = Telemetry(exporter=exporter, **kw)
    src = write_csv(tmp_path / "in.csv", rows)
    summary = keel.run(wf, src, store=store, batch_size=4, telemetry=telemetry)
    assert telemetry.flush(10.0)
    telemetry.shutdown()
    return summary, exporter.get_finished_spans()


def test_each_record_is_a_trace_with_a_span_per_stage(tmp_path: Path, store: Store) -> None:
    rows = [(f"k{i}", "unsure" if i == 3 else f"message {i}") for i in range(6)] + [("bad", "")]
    summary, spans = _run(tmp_path, store, make(), rows, stage_spans="record")
    assert counts_balance(summary)
    records = _record_traces(spans)
    assert set(records) == {f"k{i}" for i in range(6)} | {"bad"}
    k0 = records["k0"]
    root = next(s for s in k0 if s.parent is None)
    assert root.attributes["keel.disposition"] == "accepted"  # type: ignore[index]
    assert root.attributes["keel.confidence"] == 0.95  # type: ignore[index]
    assert root.attributes["keel.workflow"] == "tickets"  # type: ignore[index]
    children = {s.name for s in k0 if s.parent is not None and s.parent.span_id == root.context.span_id}
    assert children == {"keel.admit", "keel.validate", "keel.screen",
                        "keel.predict", "keel.route", "keel.store.outcomes"}
    for s in k0:  # every span lies inside its record's root span
        assert root.start_time <= s.start_time <= s.end_time <= root.end_time
    unsure = next(s for s in records["k3"] if s.parent is None)
    assert unsure.attributes["keel.disposition"] == "in_review"  # type: ignore[index]
    assert unsure.attributes["keel.review.reason"] == "low_confidence"  # type: ignore[index]
    bad = {s.name for s in records["bad"]}
    assert "keel.predict" not in bad and "keel.validate" in bad  # quarantined: never reached a model


def test_model_calls_follow_genai_conventions(tmp_path: Path, store: Store) -> None:
    model = keel.FakeModel({"label": "x"}, name="triage-llm", cost_usd=0.002)
    _summary, spans = _run(tmp_path, store, make(model), [("a", "hello there")],
                           stage_spans="record")
    (group,) = _record_traces(spans).values()
    predict = next(s for s in group if s.name == "keel.predict")
    (call,) = [s for s in group if s.parent is not None and s.parent.span_id == predict.context.span_id]
    assert call.name == "predict triage-llm"
    assert call.kind is SpanKind.CLIENT
    attrs = call.attributes
    assert attrs is not None
    assert attrs["gen_ai.operation.name"] == "predict"
    assert attrs["gen_ai.request.model"] == "triage-llm"
    assert attrs["gen_ai.response.model"] == model.version
    assert attrs["gen_ai.usage.input_tokens"] == 10
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert attrs["keel.cost_usd"] == 0.002
    assert attrs["keel.confidence"] == 0.9


def test_retries_and_fallback_show_as_failed_calls_then_the_fallback(tmp_path: Path, store: Store) -> None:
    wf = make(keel.FakeModel(error_rate=1.0), fallback=lambda m: {"label": "rules"})
    summary, spans = _run(tmp_path, store, wf, [("r1", "text one")])
    assert summary.counts["fallback"] == 1
    (group,) = _record_traces(spans).values()
    root = next(s for s in group if s.parent is None)
    assert root.attributes["keel.disposition"] == "fallback"  # type: ignore[index]
    assert root.attributes["keel.retries"] == 2  # type: ignore[index]
    calls = sorted((s for s in group if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    failed = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 3
    assert {s.attributes["error.type"] for s in failed} == {"keel.model.unavailable"}  # type: ignore[index]
    assert calls[-1].attributes["keel.step"] == "fallback:1"  # type: ignore[index]
    assert calls[-1].status.status_code is StatusCode.UNSET


def test_record_traces_link_to_their_batch(tmp_path: Path, store: Store) -> None:
    _summary, spans = _run(tmp_path, store, make(), [(f"k{i}", f"message {i}") for i in range(10)])
    batches = [s for s in spans if s.name == "keel.batch"]
    assert [b.attributes["keel.batch.size"] for b in batches] == [4, 4, 2]  # type: ignore[index]
    batch_ids = {b.context.span_id for b in batches}
    roots = [s for s in spans if s.name == "keel.record"]
    assert len(roots) == 10
    assert all(len(r.links) == 1 and r.links[0].context.span_id in batch_ids for r in roots)


def test_sampling_keeps_batches_and_a_share_of_records(tmp_path: Path, store: Store) -> None:
    rows = [(f"k{i}", f"message {i}") for i in range(200)]
    _summary, spans = _run(tmp_path, store, make(), rows, sample_ratio=0.25)
    roots = [s for s in spans if s.name == "keel.record"]
    assert 20 < len(roots) < 90
    assert len([s for s in spans if s.name == "keel.batch"]) == 50


def test_no_telemetry_means_no_spans_and_the_same_decisions(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"k{i}", f"message {i}") for i in range(8)])
    plain = keel.run(make(), src, store=store)
    assert plain.counts["accepted"] == 8
    assert keel.Runner(make(), store).telemetry is None


def test_by_default_stage_spans_live_in_the_batch_trace(tmp_path: Path, store: Store) -> None:
    _summary, spans = _run(tmp_path, store, make(), [(f"k{i}", f"message {i}") for i in range(3)])
    records = _record_traces(spans)
    assert len(records) == 3
    for group in records.values():
        assert [s.name for s in group] == ["keel.record"]  # the one batch request is the batch's
    (batch,) = [g for g in _traces(spans).values() if any(s.name == "keel.batch" for s in g)]
    assert {s.name for s in batch} == {"keel.batch", "keel.admit", "keel.validate", "keel.screen",
                                       "keel.predict", "keel.route",
                                       "keel.store.outcomes", "predict fake"}


def test_a_batch_request_is_one_client_span_in_the_batch_trace(tmp_path: Path, store: Store) -> None:
    model = keel.FakeModel({"label": "x"}, name="triage", cost_usd=0.001)
    _summary, spans = _run(tmp_path, store, make(model), [(f"k{i}", f"message {i}") for i in range(3)])
    (batch,) = [g for g in _traces(spans).values() if any(s.name == "keel.batch" for s in g)]
    predict = next(s for s in batch if s.name == "keel.predict")
    (call,) = [s for s in batch if s.kind is SpanKind.CLIENT]
    assert call.name == "predict triage"
    assert call.parent is not None and call.parent.span_id == predict.context.span_id
    assert predict.start_time <= call.start_time <= call.end_time <= predict.end_time
    attrs = call.attributes
    assert attrs is not None
    assert attrs["keel.model.request.records"] == 3
    assert attrs["gen_ai.usage.input_tokens"] == 30  # 10 per record, summed
    assert attrs["gen_ai.usage.output_tokens"] == 6
    assert abs(attrs["keel.cost_usd"] - 0.003) < 1e-12  # type: ignore[operator]
    assert attrs["gen_ai.response.model"] == model.version
    roots = [s for s in spans if s.name == "keel.record"]
    assert len(roots) == 3
    for root in roots:  # each record names the request that answered it
        assert root.attributes["keel.model.requests"] == (attrs["keel.model.request"],)  # type: ignore[index]


def test_per_record_requests_stay_in_their_record_trace(tmp_path: Path, store: Store) -> None:
    model = keel.FakeModel({"label": "x"}, name="triage-llm", is_async=True)  # one request a record
    _summary, spans = _run(tmp_path, store, make(model), [(f"k{i}", f"message {i}") for i in range(3)])
    records = _record_traces(spans)
    assert len(records) == 3
    numbers = set()
    for group in records.values():
        root = next(s for s in group if s.parent is None)
        (call,) = [s for s in group if s.kind is SpanKind.CLIENT]
        assert call.parent is not None and call.parent.span_id == root.context.span_id
        assert call.attributes["keel.model.request"] == root.attributes["keel.model.requests"][0]  # type: ignore[index]
        numbers.add(call.attributes["keel.model.request"])  # type: ignore[index]
    assert len(numbers) == 3
    assert not [s for s in spans if s.kind is SpanKind.CLIENT and s.name == "keel.batch"]


def test_a_failed_batch_request_is_an_error_span_then_the_fallback(tmp_path: Path, store: Store) -> None:
    wf = make(keel.FakeModel(error_rate=1.0), fallback=lambda m: {"label": "rules"})
    summary, spans = _run(tmp_path, store, wf, [(f"k{i}", f"message {i}") for i in range(3)])
    assert summary.counts["fallback"] == 3
    calls = sorted((s for s in spans if s.kind is SpanKind.CLIENT), key=lambda s: s.start_time or 0)
    assert all(s.attributes["keel.model.request.records"] == 3 for s in calls)  # type: ignore[index]
    failed = [s for s in calls if s.status.status_code is StatusCode.ERROR]
    assert len(failed) == 3  # three tries of the whole batch
    assert {s.attributes["error.type"] for s in failed} == {"keel.model.unavailable"}  # type: ignore[index]
    assert all(s.attributes["keel.model.request.failed"] == 3 for s in failed)  # type: ignore[index]
    assert calls[-1].attributes["keel.step"] == "fallback:1"  # type: ignore[index]
    assert calls[-1].status.status_code is StatusCode.UNSET
    roots = [s for s in spans if s.name == "keel.record"]
    assert all(len(r.attributes["keel.model.requests"]) == 4 for r in roots)  # type: ignore[index,arg-type]


@pytest.mark.parametrize("stage_spans", ["batch", "record"])
@pytest.mark.parametrize("model", [keel.FakeModel({"label": "x"}),
                                   keel.FakeModel({"label": "x"}, is_async=True),
                                   keel.FakeModel(error_rate=0.5, seed=3)],
                         ids=["batch-requests", "per-record-requests", "retries"])
def test_dropped_spans_are_counted_as_the_spans_they_would_have_been(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch, stage_spans: str,
        model: keel.Model) -> None:
    units: list[BatchUnit] = []
    submit = SpanQueue.submit

    def keep(self: SpanQueue, unit: BatchUnit) -> bool:
        units.append(unit)
        return submit(self, unit)

    monkeypatch.setattr(SpanQueue, "submit", keep)
    wf = make(model, fallback=lambda m: {"label": "rules"})
    _summary, spans = _run(tmp_path, store, wf, [(f"k{i}", f"message {i}") for i in range(10)]
                           + [("bad", "")], stage_spans=stage_spans)
    assert sum(u.span_count(stage_spans == "record") for u in units) == len(spans)
