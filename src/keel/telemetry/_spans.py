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
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    Link,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from keel._record import Event, Item
from keel.redact import Redactor, may_hold_pii

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

    def span_count(self, per_record_stages: bool = False) -> int:
        """How many spans this batch becomes when every record is traced (for counting drops
        without building them): a model request shared by several records is one span."""
        stages = len(self.marks) - 1
        n = 1 + stages + len(self.items) * (1 + (stages if per_record_stages else 0))
        unreached = sum(1 for name, _t in self.marks[1:] if name in _MODEL_STAGES)
        shared: Counter[int] = Counter()
        for item in self.items:
            if per_record_stages and item.input is None:
                n -= unreached  # a record that never reached the model has no stage span there
            for e in item.calls:
                number = e.detail.get("request") if e.detail else None
                if number and not per_record_stages:
                    shared[number] += 1
                else:
                    n += 1
        return n + sum(1 if c > 1 else c for c in shared.values())


#: A record's attempt in a model request: (record, its attempt event, its root span context or
#: None when the record is not sampled, its known personal values).
_Member = tuple[Item, Event, SpanContext | None, Sequence[str]]


class _RecordSpans:
    """Record spans and their contexts, one per record: the bulk of tracing's work.

    The SDK's constructors do per-call Python work (keyword handling, defaults, validating
    ids keel draws in range itself). When this SDK's ``ReadableSpan`` keeps its fields in its
    instance dict and ``SpanContext`` is the tuple it documents, both are filled in directly
    from a per-batch template; a probe checks that against the constructors once, field by
    field, and keel uses the constructors whenever they disagree (another SDK version).
    """

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.fast = _fast_matches(resource)

    def context(self, trace_id: int, span_id: int) -> SpanContext:
        if self.fast:
            return _new_tuple(SpanContext, (trace_id, span_id, False, _SAMPLED, _STATE, True))
        return SpanContext(trace_id, span_id, False, _SAMPLED)

    def template(self, start: int, end: int, links: tuple[Link, ...]) -> dict[str, Any]:
        return _span_fields("keel.record", None, self.resource, None, start, end, links)

    def span(self, template: dict[str, Any], ctx: SpanContext, attrs: dict[str, Any],
             status: Status) -> ReadableSpan:
        if self.fast:
            span: ReadableSpan = _new_object(ReadableSpan)
            fields = span.__dict__
            fields.update(template)
            fields["_context"], fields["_attributes"], fields["_status"] = ctx, attrs, status
            return span
        return ReadableSpan(name=template["_name"], context=ctx, parent=None,
                            resource=self.resource, attributes=attrs,
                            start_time=template["_start_time"], end_time=template["_end_time"],
                            instrumentation_scope=SCOPE, links=template["_links"], status=status)


_new_tuple = tuple.__new__
_new_object = object.__new__
_STATE = TraceState()


def _span_fields(name: str, ctx: SpanContext | None, resource: Resource,
                 attrs: dict[str, Any] | None, start: int, end: int,
                 links: tuple[Link, ...]) -> dict[str, Any]:
    return {"_name": name, "_context": ctx, "_kind": SpanKind.INTERNAL,
            "_instrumentation_info": None, "_instrumentation_scope": SCOPE, "_parent": None,
            "_start_time": start, "_end_time": end, "_attributes": attrs, "_events": (),
            "_links": links, "_resource": resource, "_status": _UNSET}


def _fast_matches(resource: Resource) -> bool:
    """Whether spans and contexts filled in directly equal what the constructors make."""
    try:
        link = (Link(SpanContext(7, 8, False, _SAMPLED)),)
        made_ctx = SpanContext(0x0123456789ABCDEF0123, 0x0FEDCBA9, False, _SAMPLED)
        fast_ctx = _new_tuple(SpanContext, (0x0123456789ABCDEF0123, 0x0FEDCBA9, False, _SAMPLED,
                                            _STATE, True))
        if type(fast_ctx) is not type(made_ctx) or tuple(fast_ctx) != tuple(made_ctx):
            return False
        made = ReadableSpan(name="keel.record", context=made_ctx, parent=None, resource=resource,
                            attributes={"a": 1}, start_time=1, end_time=2,
                            instrumentation_scope=SCOPE, links=link, status=_ERROR)
        fast: ReadableSpan = _new_object(ReadableSpan)
        fast.__dict__.update(_span_fields("keel.record", fast_ctx, resource, {"a": 1}, 1, 2, link))
        fast.__dict__["_status"] = _ERROR
        return vars(fast) == vars(made) and fast.to_json() == made.to_json()
    except Exception:  # another SDK layout: use its constructors
        return False


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
        self._records = _RecordSpans(resource)

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
        predict, predict_ctx = (start, end), batch_ctx
        for name, s, e in stages:
            ctx = self._ctx(batch_ctx.trace_id)
            spans.append(self._span(f"keel.{name}", ctx, batch_ctx, s, e, {"keel.stage": name}))
            if name == "predict":
                predict, predict_ctx = (s, e), ctx
        link = (Link(batch_ctx),)
        ratio = self.sample_ratio
        base = {"keel.workflow": unit.workflow, "keel.workflow.version": unit.workflow_version,
                "keel.run.id": unit.run_id}
        requests: dict[int, list[_Member]] = {}
        red, rng, tree = unit.redactor, self.rng, self.per_record_stages
        getrandbits, record_attrs = rng.getrandbits, self._record_attrs
        sensitive = bool(red.sensitive)
        records = self._records
        new_context, new_span = records.context, records.span
        template = records.template(start, end, link)
        for item in unit.items:
            if ratio < 1.0 and rng.random() >= ratio:
                if not tree:
                    for ev in item.calls:  # an unsampled record still counts in its request
                        if ev.detail and ev.detail.get("request"):
                            requests.setdefault(ev.detail["request"], []).append(
                                (item, ev, None, ()))
                continue
            known = red.known_values(item.raw) if sensitive else ()
            root = new_context(getrandbits(128) or 1, getrandbits(64) or 1)
            spans.append(new_span(template, root, record_attrs(red, item, known, base),
                                  _ERROR if item.disposition == "failed" else _UNSET))
            if tree:
                self._stage_spans(spans, unit, item, stages, root, known, item.calls)
            else:
                for ev in item.calls:  # a request shared with other records is the batch's
                    number = ev.detail.get("request") if ev.detail else None
                    if number:
                        members = requests.get(number)
                        if members is None:
                            requests[number] = [(item, ev, root, known)]
                        else:
                            members.append((item, ev, root, known))
                    else:
                        spans.append(self._call_span(unit, ev, root, predict[0], predict[1],
                                                     known))
            if len(spans) >= size:
                yield spans
                spans = []
        for number, members in requests.items():
            if len(members) > 1:
                spans.append(self._request_span(unit, number, members, predict_ctx, predict))
            else:
                _item, ev, member_root, member_known = members[0]
                if member_root is not None:
                    spans.append(self._call_span(unit, ev, member_root, predict[0], predict[1],
                                                 member_known))
        if spans:
            yield spans

    def _stage_spans(self, out: list[ReadableSpan], unit: BatchUnit, item: Item,
                     stages: list[tuple[str, int, int]], root: SpanContext,
                     known: Sequence[str], calls: list[Event]) -> None:
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
                out += [self._call_span(unit, ev, ctx, s, e, known) for ev in calls]

    @staticmethod
    def _record_attrs(red: Redactor, item: Item, known: Sequence[str],
                      base: dict[str, Any]) -> dict[str, Any]:
        key = item.key
        if known or may_hold_pii(key):
            key = red.text(key, known)
        attrs: dict[str, Any] = {
            **base, "keel.record.id": item.record_id, "keel.record.key": key,
            "keel.cost_usd": item.cost_usd, "keel.attempts": item.attempts, "keel.retries": 0}
        calls = item.calls
        if len(calls) == 1:  # the usual case: one answer, no retry
            number = calls[0].detail.get("request") if calls[0].detail else None
            if number:
                attrs["keel.model.requests"] = (number,)
        elif calls:
            steps = set()
            numbers = []
            for ev in calls:
                d = ev.detail or {}
                steps.add(d.get("step"))
                if d.get("request"):
                    numbers.append(d["request"])
            attrs["keel.retries"] = len(calls) - len(steps)
            if numbers:
                attrs["keel.model.requests"] = tuple(numbers)
        disposition = item.disposition
        if disposition is not None:
            attrs["keel.disposition"] = disposition
        reason = item.reason
        if reason:
            if disposition in _FREE_TEXT_REASONS:
                reason = red.text(reason, known)  # violations and errors may quote the input
            attrs["keel.reason"] = reason
        pred = item.prediction
        if pred is not None:
            attrs["keel.confidence"] = pred.confidence
        if item.predicted_by is not None:
            attrs["keel.model.version"] = item.predicted_by
        if item.review is not None:
            attrs["keel.review.reason"] = item.review.reason
        if item.audit:
            attrs["keel.audit_sample"] = True
        if item.error_code is not None:
            attrs["keel.error.code"] = item.error_code
        return attrs

    def _call_span(self, unit: BatchUnit, ev: Event, parent: SpanContext, s: int, e: int,
                   known: Sequence[str]) -> ReadableSpan:
        """One record's own model request (a client span in the record's trace)."""
        end = min(max(int(ev.at * 1e9), s), e)
        begin = max(s, end - int((ev.latency_ms or 0.0) * 1e6))
        span_name, name, kind, op = self._model_names(unit, ev.model_version)
        status = _UNSET
        if ev.kind == "attempt_failed":
            error = str((ev.detail or {}).get("error", ""))
            status = Status(StatusCode.ERROR, unit.redactor.text(error, known))
        return ReadableSpan(
            name=span_name, context=SpanContext(parent.trace_id, self.rng.getrandbits(64) or 1,
                                                False, _SAMPLED),
            parent=parent, resource=self.resource, attributes=_model_attrs(ev, name, kind, op),
            start_time=begin, end_time=end, instrumentation_scope=SCOPE,
            kind=SpanKind.CLIENT, status=status)

    def _request_span(self, unit: BatchUnit, number: int, members: list[_Member],
                      parent: SpanContext, window: tuple[int, int]) -> ReadableSpan:
        """A model request several records shared (a batch call): one client span in the
        batch's trace, with the request's record count, tokens and cost summed; each record's
        span names it in ``keel.model.requests``."""
        s, e = window
        first = members[0][1]
        end = min(max(int(min(m[1].at for m in members) * 1e9), s), e)
        begin = max(s, end - int(sum(m[1].latency_ms or 0.0 for m in members) * 1e6))
        span_name, name, kind, op = self._model_names(unit, first.model_version)
        attrs: dict[str, Any] = {"gen_ai.operation.name": op, "gen_ai.provider.name": kind,
                                 "gen_ai.request.model": name, "keel.model.request": number,
                                 "keel.model.request.records": len(members)}
        if first.model_version is not None:
            attrs["gen_ai.response.model"] = attrs["keel.model.version"] = first.model_version
        step = (first.detail or {}).get("step")
        if step is not None:
            attrs["keel.step"] = step
        failed = [m for m in members if m[1].kind == "attempt_failed"]
        for key, attr in _TOKEN_ATTRS:
            values = [v for m in members if (v := (m[1].detail or {}).get(key)) is not None]
            if values:
                attrs[attr] = sum(values)
        cost = sum(m[1].cost_usd or 0.0 for m in members)
        if cost:
            attrs["keel.cost_usd"] = cost
        status = _UNSET
        if failed:
            attrs["keel.model.request.failed"] = len(failed)
            item, ev, _root, known = failed[0]
            detail = ev.detail or {}
            if detail.get("code") is not None:
                attrs["error.type"] = detail["code"]
            if len(failed) == len(members):
                known = known or unit.redactor.known_values(item.raw)
                status = Status(StatusCode.ERROR,
                                unit.redactor.text(str(detail.get("error", "")), known))
        return ReadableSpan(
            name=span_name, context=self._ctx(parent.trace_id), parent=parent,
            resource=self.resource, attributes=attrs, start_time=begin, end_time=end,
            instrumentation_scope=SCOPE, kind=SpanKind.CLIENT, status=status)

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


_TOKEN_ATTRS = (("input_tokens", "gen_ai.usage.input_tokens"),
                ("output_tokens", "gen_ai.usage.output_tokens"))
_OK_ATTRS = (("input_tokens", "gen_ai.usage.input_tokens"),
             ("output_tokens", "gen_ai.usage.output_tokens"), ("confidence", "keel.confidence"))
_CALL_ATTRS = (("step", "keel.step"), ("attempt", "keel.attempt"), ("request", "keel.model.request"))
