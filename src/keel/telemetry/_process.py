"""OTLP export from a child process, so encoding spans never competes with deciding.

The OpenTelemetry SDK encodes OTLP protobuf in Python (about 60 us of CPU per record in
the demo, docs/benchmarks.md): in the span worker thread that is still the interpreter lock
the deciding thread needs, and it cost the demo half its throughput. :class:`ProcessExporter`
is a ``SpanExporter`` that sends each chunk of spans (as plain tuples, pickled) to a child
process (:func:`main`), which rebuilds them and exports them with the SDK's own OTLP
exporter, then answers success or failure. The span worker waits for that answer on a
pipe, without the lock, so the queue's accounting (every span exported or counted as
dropped, the shutdown deadline) holds as before.

Used for the OTLP exporters when the process may use two or more CPUs (``KEEL_OTEL_PROCESS``:
``auto``, ``on`` or ``off``), once a run has exported 10,000 spans (a short run never pays
the child's start-up); until the child is ready, and if it cannot start or dies, chunks are
exported in this process: spans are never lost for want of a child.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from keel._child import recv_frame, send_frame, usable_cores
from keel.errors import ConfigError

log = logging.getLogger("keel.telemetry")
_OK, _FAIL, _READY = b"1", b"0", b"R"
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
#: Spans exported in-process before the child starts: a short run never pays its start-up
#: (about half a second of imports on the other core, which such a run is using).
START_AFTER_SPANS = 10_000


def process_setting() -> bool:
    """``KEEL_OTEL_PROCESS``: export OTLP from a child process (default: with two cores)."""
    raw = os.environ.get("KEEL_OTEL_PROCESS", "auto").strip().lower() or "auto"
    if raw not in ("auto", "on", "off"):
        raise ConfigError(f"KEEL_OTEL_PROCESS={raw!r}: use auto, on or off")
    if raw == "auto":
        return usable_cores() >= 2
    return raw == "on"


# -- spans as plain data -----------------------------------------------------------------------

def _flat(span: ReadableSpan) -> tuple[Any, ...]:
    ctx = span.context
    parent = span.parent
    status = span.status
    return (span.name, ctx.trace_id, ctx.span_id, parent.span_id if parent else None,
            span.kind.value, span.start_time, span.end_time, dict(span.attributes or {}),
            tuple((link.context.trace_id, link.context.span_id) for link in span.links),
            (status.status_code.value, status.description),
            tuple((e.name, e.timestamp, dict(e.attributes or {})) for e in span.events))


def dump_chunk(spans: Sequence[ReadableSpan]) -> bytes:
    """A chunk as bytes: its resource and scope once, then each span's fields."""
    first = spans[0]
    scope = first.instrumentation_scope
    head = (dict(first.resource.attributes), first.resource.schema_url,
            (scope.name, scope.version) if scope else ("keel", None))
    return pickle.dumps((head, [_flat(s) for s in spans]), protocol=pickle.HIGHEST_PROTOCOL)


_resources: dict[tuple[str, str], Resource] = {}


def _resource(attrs: dict[str, Any], schema_url: str) -> Resource:
    """One resource object per distinct resource (the encoder groups spans by it, hashing
    it for every span: keel's resource caches that hash)."""
    key = (repr(sorted(attrs.items())), schema_url)
    found = _resources.get(key)
    if found is None:
        from keel.telemetry._core import _Resource

        found = _resources[key] = _Resource(attrs, schema_url)
    return found


def load_chunk(data: bytes) -> list[ReadableSpan]:
    """The spans :func:`dump_chunk` wrote, rebuilt with the SDK's constructors."""
    (attrs, schema_url, (scope_name, scope_version)), flats = pickle.loads(data)
    resource = _resource(attrs, schema_url)
    scope = InstrumentationScope(scope_name, scope_version)
    out = []
    for (name, trace_id, span_id, parent_id, kind, start, end, attributes, links, status,
         events) in flats:
        out.append(ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, _SAMPLED),
            parent=SpanContext(trace_id, parent_id, False, _SAMPLED) if parent_id else None,
            resource=resource, attributes=attributes, start_time=start, end_time=end,
            instrumentation_scope=scope, kind=SpanKind(kind),
            links=[Link(SpanContext(t, s, False, _SAMPLED)) for t, s in links],
            status=Status(StatusCode(status[0]), status[1]),
            events=[Event(n, a, ts) for n, ts, a in events]))
    return out


# -- the parent's side -------------------------------------------------------------------------

class ProcessExporter(SpanExporter):
    """Exports through a child process running ``kind``'s OTLP exporter (see module doc)."""

    def __init__(self, local: SpanExporter, args: list[str], *,
                 start_after_spans: int = START_AFTER_SPANS) -> None:
        """``local`` exports here (before the child is ready, after it is gone); ``args`` are
        the child's: exporter kind, endpoint, timeout in seconds."""
        self.local = local
        self.args = args
        self.start_after = start_after_spans
        self.exported_here = 0
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self._ready = False
        self._closing = False
        if start_after_spans <= 0:
            self._start()

    def _start(self) -> None:
        self._started = True
        here = str(Path(__file__).resolve().parents[2])  # the child runs this same keel
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "keel.telemetry._process", *self.args],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": path})
        except OSError as exc:
            log.warning("OTLP export stays in this process: its child did not start (%s)", exc)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if not spans:
            return SpanExportResult.SUCCESS
        with self._lock:
            proc = self._proc
            if proc is not None and (self._ready or self.wait_ready(0.0)):
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    send_frame(proc.stdin, dump_chunk(spans))
                    answer = proc.stdout.read(1)
                except (OSError, ValueError):
                    answer = b""
                if answer == _OK:
                    return SpanExportResult.SUCCESS
                if answer == _FAIL:
                    return SpanExportResult.FAILURE
                self._lost_child()  # the child died: this chunk failed, the next goes locally
                return SpanExportResult.FAILURE
            self.exported_here += len(spans)
            if not self._started and not self._closing and self.exported_here >= self.start_after:
                self._start()
            return self.local.export(spans)

    def wait_ready(self, wait_s: float) -> bool:
        """Whether the child has its exporter (until then, chunks are exported here: a short
        run never waits for the child's start-up, about half a second of imports)."""
        proc = self._proc
        if proc is None:
            return False
        if not self._ready:
            assert proc.stdout is not None
            if not select.select([proc.stdout], [], [], wait_s)[0]:
                return False
            if proc.stdout.read(1) == _READY:
                self._ready = True
            else:
                self._lost_child()  # it could not start its exporter: carry on here
        return self._ready

    def _lost_child(self) -> None:
        if not self._closing:
            log.warning("the OTLP export process ended; exporting from this process from now on")
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            _close(self._proc)
        self._proc = None

    def shutdown(self) -> None:
        """Let the child finish what it has (the caller bounds how long this may take)."""
        self._closing = True
        proc = self._proc
        if proc is not None:
            try:
                assert proc.stdin is not None
                proc.stdin.close()
                proc.wait()
            except OSError:
                proc.kill()
            _close(proc)
        self.local.shutdown()

    def kill(self) -> None:
        """Stop the child at once (past the shutdown deadline)."""
        self._closing = True
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True  # every export is answered before export() returns


def _close(proc: subprocess.Popen[bytes]) -> None:
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


# -- the child's side --------------------------------------------------------------------------

def _serve(inp: IO[bytes], out: IO[bytes], exporter: SpanExporter) -> None:
    while (frame := recv_frame(inp)) is not None:
        try:
            ok = exporter.export(load_chunk(frame)) is SpanExportResult.SUCCESS
        except Exception:  # a failed export is an answer, never the child's end
            ok = False
        out.write(_OK if ok else _FAIL)
        out.flush()


def main(argv: list[str]) -> None:
    from keel.telemetry._export import make_exporter

    kind, endpoint, timeout_s = argv
    exporter = make_exporter(kind, endpoint or None, float(timeout_s), process=False)
    assert exporter is not None
    sys.stdout.buffer.write(_READY)
    sys.stdout.buffer.flush()
    try:
        _serve(sys.stdin.buffer, sys.stdout.buffer, exporter)
    finally:
        exporter.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
