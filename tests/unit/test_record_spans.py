"""Record spans filled in directly are the spans the SDK's constructors make."""

from __future__ import annotations

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from keel.telemetry._spans import SCOPE, _RecordSpans

RESOURCE = Resource.create({"service.name": "keel-test"})


def _both(status: Status) -> tuple[ReadableSpan, ReadableSpan]:
    fast, slow = _RecordSpans(RESOURCE), _RecordSpans(RESOURCE)
    slow.fast = False
    link = (Link(SpanContext(5, 6, False, TraceFlags(TraceFlags.SAMPLED))),)
    out = []
    for maker in (fast, slow):
        ctx = maker.context(0xABCDEF0123456789ABCDEF, 0x1234ABCD)
        out.append(maker.span(maker.template(10, 20, link), ctx, {"keel.record.id": "r1"},
                              status))
    return out[0], out[1]


def test_this_sdk_takes_the_direct_path() -> None:
    assert _RecordSpans(RESOURCE).fast  # if not, tracing costs more: see _RecordSpans


def test_direct_and_constructed_spans_are_the_same() -> None:
    for status in (Status(StatusCode.UNSET), Status(StatusCode.ERROR)):
        fast, slow = _both(status)
        assert fast.to_json() == slow.to_json()
        assert vars(fast) == vars(slow)
        assert fast.context is not None and fast.context.is_valid and fast.context.trace_flags.sampled
        assert fast.instrumentation_scope == SCOPE and fast.parent is None
        assert fast.links[0].context.span_id == 6 and fast.status.status_code is status.status_code
