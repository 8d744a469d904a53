"""OpenTelemetry spans for one batch: a trace per record, linked to the batch's own trace.

The batch's trace: ``keel.batch`` -> one span per stage (``keel.admit``, ``keel.validate``,
``keel.screen``, ``keel.predict`` (with the answers' checkpoint when it is committed before
routing), ``keel.route``, ``keel.store.outcomes``). A record's trace: ``keel.record`` (root,
linked to its batch, with the record's disposition, reason, confidence, cost, retries) -> one
client span per model attempt named and attributed after the GenAI semantic conventions (``gen_ai.*``). With
``stage_spans="record"`` the record's trace also gets its own span per stage it went
through, the model calls under its ``keel.predict``.

Spans are built from the batch's records after the fact (stage times come from the runner's
marks, model-call times from the audit events), in the exporter's worker thread, so the hot
path only hands over a reference to the batch.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keel._record import Event, Item
from keel.redact import Redactor

SCOPE = InstrumentationScope("keel", "0.1.0")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_ERROR = Status(StatusCode.ERROR)
_UNSET = Status(StatusCode.UNSET)
#: Where the record's span tree carries stage spans: each record's trace, or the batch's only.
STAGE_SPANS = ("record", "batch")
#: Dispositions whose reason is free text that may quote the input (the rest are keel's own).
_FREE_TEXT_REASONS = frozenset({"quarantined", "failed"})
#: Stages a quarantined record never reaches.
_MODEL_STAGES = frozenset({"screen", "predict", "route"})
_ATTEMPT_KINDS = frozenset({"predicted", "attempt_failed"})
_CHAT_KINDS = frozenset({"openai", "http", "llm", "chat"})


@dataclass(slots=True)
class BatchUnit:
    """What the hot path hands to the exporter: the batch and when each stage ended."""

    workflow: str
    workflow_version: str
    run_id: str
    items: Sequence[Item]
    marks: Sequence[tuple[str, int]]
    redactor: Redactor
    models: Mapping[str, tuple[str, str]] = field(default_factory=dict)  # version -> (name, kind)

    def span_count(self) -> int:
        """How many spans this batch becomes (for counting drops without building them)."""
        stages = len(self.marks) - 1
        n = 1 + stages
        for item in self.items:
            n += 1 + stages + sum(1 for e in item.events if e.kind in _ATTEMPT_KINDS)
        return n


def _attrs(pairs: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in pairs.items() if v is not None}


class SpanBuilder:
    """Turns a :class:`BatchUnit` into ReadableSpans ready for any SpanExporter.

    ``stage_spans="record"`` gives every record's trace its own span per stage (the full tree
    in one view); ``"batch"`` keeps stage spans in the batch's trace only (stages run once per
    batch, so their timings are the batch's) and each record's trace holds its root span and
    model calls, linked to the batch: about a quarter of the spans to build and ship.
    """

    def __init__(self, resource: Resource, sample_ratio: float = 1.0,
                 stage_spans: str = "batch") -> None:
        if stage_spans not in STAGE_SPANS:
            raise ValueError(f"stage_spans must be one of {STAGE_SPANS}, got {stage_spans!r}")
        self.resource = resource
        self.sample_ratio = sample_ratio
        self.per_record_stages = stage_spans == "record"
        self.rng = random.Random(os.urandom(16))
        self._names: dict[str | None, tuple[str, str, str, str]] = {}

    def _ctx(self, trace_id: int) -> SpanContext:
        return SpanContext(trace_id, self.rng.getrandbits(64) or 1, False, _SAMPLED)

    def _span(self, name: str, ctx: SpanContext, parent: SpanContext | None, start: int, end: int,
              attrs: dict[str, Any], **kw: Any) -> ReadableSpan:
        return ReadableSpan(name=name, context=ctx, parent=parent, resource=self.resource,
                            attributes=attrs, start_time=start, end_time=end,
                            instrumentation_scope=SCOPE, **kw)

    def build(self, unit: BatchUnit) -> list[ReadableSpan]:
        """Every span of the batch at once (tests; the exporter uses :meth:`chunks`)."""
        return [span for chunk in self.chunks(unit, 1 << 30) for span in chunk]

    def chunks(self, unit: BatchUnit, size: int) -> Iterator[list[ReadableSpan]]:
        """The batch's spans in lists of about ``size``, built as they are exported, so they
        die young instead of piling up into the garbage collector's oldest generation."""
        stages = [(name, unit.marks[n][1], t) for n, (name, t) in enumerate(unit.marks[1:], 0)]
        start, end = unit.marks[0][1], unit.marks[-1][1]
        batch_ctx = self._ctx(self.rng.getrandbits(128) or 1)
        counts: dict[str, int] = {}
        for item in unit.items:
            counts[item.disposition or "failed"] = counts.get(item.disposition or "failed", 0) + 1
        spans = [self._span("keel.batch", batch_ctx, None, start, end, _attrs({
            "keel.workflow": unit.workflow, "keel.workflow.version": unit.workflow_version,
            "keel.run.id": unit.run_id, "keel.batch.size": len(unit.items),
            **{f"keel.batch.{k}": v for k, v in counts.items()}}))]
        spans += [self._span(f"keel.{name}", self._ctx(batch_ctx.trace_id), batch_ctx, s, e,
                             {"keel.stage": name}) for name, s, e in stages]
        link = (Link(batch_ctx),)
        ratio = self.sample_ratio
        predict = next(((s, e) for name, s, e in stages if name == "predict"), (start, end))
        base = {"keel.workflow": unit.workflow, "keel.workflow.version": unit.workflow_version,
                "keel.run.id": unit.run_id}
        for item in unit.items:
            if ratio >= 1.0 or self.rng.random() < ratio:
                self._record(spans, unit, item, stages, (start, end), predict, link, base)
                if len(spans) >= size:
                    yield spans
                    spans = []
        if spans:
            yield spans

    def _record(self, out: list[ReadableSpan], unit: BatchUnit, item: Item,
                stages: list[tuple[str, int, int]], whole: tuple[int, int],
                predict: tuple[int, int], link: tuple[Link, ...], base: dict[str, Any]) -> None:
        known = unit.redactor.known_values(item.raw)
        rng = self.rng
        root = SpanContext(rng.getrandbits(128) or 1, rng.getrandbits(64) or 1, False, _SAMPLED)
        attrs = self._record_attrs(unit, item, known)
        attrs.update(base)
        out.append(ReadableSpan(
            name="keel.record", context=root, parent=None, resource=self.resource,
            attributes=attrs, start_time=whole[0], end_time=whole[1],
            instrumentation_scope=SCOPE, links=link,
            status=_ERROR if item.disposition == "failed" else _UNSET))
        if not self.per_record_stages:
            out += self._model_calls(unit, item, root.trace_id, root, predict[0], predict[1], known)
            return
        self._stage_spans(out, unit, item, stages, root, known)

    def _stage_spans(self, out: list[ReadableSpan], unit: BatchUnit, item: Item,
                     stages: list[tuple[str, int, int]], root: SpanContext,
                     known: Sequence[str]) -> None:
        reached_model = item.input is not None
        for name, s, e in stages:
            if name in _MODEL_STAGES and not reached_model:
                continue
            ctx = self._ctx(root.trace_id)
            stage_attrs: dict[str, Any] = {"keel.stage": name}
            if name == "route" and item.disposition:
                stage_attrs["keel.disposition"] = item.disposition
            out.append(self._span(f"keel.{name}", ctx, root, s, e, stage_attrs))
            if name == "predict":
                out += self._model_calls(unit, item, root.trace_id, ctx, s, e, known)

    def _record_attrs(self, unit: BatchUnit, item: Item, known: Sequence[str]) -> dict[str, Any]:
        red = unit.redactor
        pred = item.prediction
        calls, steps = 0, set()
        if item.attempts:
            for ev in item.events:
                if ev.kind in _ATTEMPT_KINDS:
                    calls += 1
                    steps.add((ev.detail or {}).get("step"))
        attrs: dict[str, Any] = {
            "keel.record.id": item.record_id, "keel.record.key": red.text(item.key, known),
            "keel.cost_usd": item.cost_usd, "keel.retries": max(0, calls - len(steps)),
            "keel.attempts": item.attempts}
        if item.disposition is not None:
            attrs["keel.disposition"] = item.disposition
        reason = item.reason
        if reason:
            if item.disposition in _FREE_TEXT_REASONS:
                reason = red.text(reason, known)  # violations and errors may quote the input
            attrs["keel.reason"] = reason
        if item.review is not None:
            attrs["keel.review.reason"] = item.review.reason
        if item.audit:
            attrs["keel.audit_sample"] = True
        if pred is not None:
            attrs["keel.confidence"] = pred.confidence
        if item.predicted_by is not None:
            attrs["keel.model.version"] = item.predicted_by
        if item.error_code is not None:
            attrs["keel.error.code"] = item.error_code
        return attrs

    def _model_calls(self, unit: BatchUnit, item: Item, trace_id: int, parent: SpanContext,
                     s: int, e: int, known: Sequence[str]) -> list[ReadableSpan]:
        out: list[ReadableSpan] = []
        if not item.attempts:
            return out
        for ev in item.events:
            if ev.kind not in _ATTEMPT_KINDS:
                continue
            end = min(max(int(ev.at * 1e9), s), e)
            begin = max(s, end - int((ev.latency_ms or 0.0) * 1e6))
            span_name, name, kind, op = self._model_names(unit, ev.model_version)
            status = _UNSET
            if ev.kind == "attempt_failed":
                error = str((ev.detail or {}).get("error", ""))
                status = Status(StatusCode.ERROR, unit.redactor.text(error, known))
            out.append(ReadableSpan(
                name=span_name, context=SpanContext(trace_id, self.rng.getrandbits(64) or 1,
                                                    False, _SAMPLED),
                parent=parent, resource=self.resource, attributes=_model_attrs(ev, name, kind, op),
                start_time=begin, end_time=end, instrumentation_scope=SCOPE,
                kind=SpanKind.CLIENT, status=status))
        return out

    def _model_names(self, unit: BatchUnit, version: str | None) -> tuple[str, str, str, str]:
        """(span name, model name, provider kind, operation) of a model version, cached."""
        found = self._names.get(version)
        if found is None:
            name, kind = unit.models.get(version or "", (version or "model", "model"))
            op = "chat" if kind in _CHAT_KINDS else "predict"
            found = self._names[version] = (f"{op} {name}", name, kind, op)
        return found


def _model_attrs(ev: Event, name: str, kind: str, op: str) -> dict[str, Any]:
    d = ev.detail or {}
    attrs: dict[str, Any] = {"gen_ai.operation.name": op, "gen_ai.provider.name": kind,
                             "gen_ai.request.model": name}
    if ev.model_version is not None:
        attrs["gen_ai.response.model"] = attrs["keel.model.version"] = ev.model_version
    if ev.kind == "predicted":
        for key, attr in _OK_ATTRS:
            value = d.get(key)
            if value is not None:
                attrs[attr] = value
    elif d.get("code") is not None:
        attrs["error.type"] = d["code"]
    for key, attr in _CALL_ATTRS:
        value = d.get(key)
        if value is not None:
            attrs[attr] = value
    if ev.cost_usd is not None:
        attrs["keel.cost_usd"] = ev.cost_usd
    return attrs


_OK_ATTRS = (("input_tokens", "gen_ai.usage.input_tokens"),
             ("output_tokens", "gen_ai.usage.output_tokens"), ("confidence", "keel.confidence"))
_CALL_ATTRS = (("step", "keel.step"), ("attempt", "keel.attempt"))
