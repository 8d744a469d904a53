"""The exporter side of tracing: a bounded queue, a worker thread, a hard deadline at shutdown.

Tracing never holds up a decision. The hot path appends a batch to a bounded queue and goes
on; when the queue is full the batch's spans are dropped and counted. A worker thread builds
the spans and hands them to the exporter. ``shutdown(deadline_s)`` returns within the deadline
whatever the collector does (down, slow or black-holed): spans still queued are counted as
dropped, and an export stuck on the network is left to its daemon thread.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from keel.errors import ConfigError
from keel.telemetry._process import ProcessExporter, process_setting
from keel.telemetry._spans import BatchUnit, SpanBuilder

EXPORTERS = ("none", "console", "otlp", "otlp-http", "otlp-grpc", "memory")
#: Called with (reason, number of spans) for every drop; reasons: queue_full,
#: export_failed, shutdown_deadline.
DropFn = Callable[[str, int], None]


def make_exporter(kind: str, endpoint: str | None = None, timeout_s: float = 5.0, *,
                  process: bool | None = None) -> SpanExporter | None:
    """The span exporter named ``kind`` (one of :data:`EXPORTERS`); None for ``none``.

    The OTLP exporters run in a child process when ``process`` is true (None:
    ``KEEL_OTEL_PROCESS``, by default when this process may use two or more CPUs)."""
    if kind not in EXPORTERS:
        raise ConfigError(f"unknown OpenTelemetry exporter {kind!r}; use one of {', '.join(EXPORTERS)}")
    if kind == "none":
        return None
    if kind.startswith("otlp") and (process_setting() if process is None else process):
        # built here first: a missing package is a configuration error now, not lost spans later
        return ProcessExporter(_otlp(kind, endpoint, timeout_s), [kind, endpoint or "",
                                                                  repr(timeout_s)])
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)
    if kind == "memory":
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        return InMemorySpanExporter()
    return _otlp(kind, endpoint, timeout_s)


def _otlp(kind: str, endpoint: str | None, timeout_s: float) -> SpanExporter:
    if kind in ("otlp", "otlp-http"):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=_http_endpoint(endpoint), timeout=timeout_s)
    try:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )
    except ImportError as exc:
        raise ConfigError("the OTLP gRPC exporter is not installed; "
                          "`pip install 'keel[grpc]'` or use --otel otlp-http") from exc
    insecure = endpoint.startswith("http://") if endpoint else None
    return GrpcExporter(endpoint=endpoint, insecure=insecure, timeout=timeout_s)


def _http_endpoint(endpoint: str | None) -> str | None:
    """Accept a collector's base URL (``http://host:4318``) as well as the full traces URL."""
    if not endpoint:
        return None
    base = endpoint.rstrip("/")
    if base.count("/") <= 2:  # scheme://host:port with no path
        return base + "/v1/traces"
    return endpoint


class SpanQueue:
    """A bounded queue of batches (counted in records) drained by one daemon worker thread."""

    def __init__(self, exporter: SpanExporter, builder: SpanBuilder, *, on_drop: DropFn,
                 on_export: Callable[[int], None] | None = None, max_queue_records: int = 10_000,
                 max_export_batch: int = 256) -> None:
        self.exporter = exporter
        self.builder = builder
        self.on_drop = on_drop
        self.on_export = on_export
        self.max_queue_records = max_queue_records
        self.max_export_batch = max_export_batch
        self._queue: collections.deque[BatchUnit] = collections.deque()
        self._queued_records = 0
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._worker = threading.Thread(target=self._run, name="keel-span-export", daemon=True)
        self._worker.start()

    def submit(self, unit: BatchUnit) -> bool:
        """Queue a batch; False (and counted as dropped) when the queue is full or closed."""
        n = len(unit.items)
        with self._cond:
            if self._closed or self._queued_records + n > self.max_queue_records:
                reason = "shutdown_deadline" if self._closed else "queue_full"
                accepted = False
            else:
                self._queue.append(unit)
                self._queued_records += n
                self._cond.notify()
                accepted = True
        if not accepted:
            self.on_drop(reason, self._spans_in(unit))
        return accepted

    def _spans_in(self, unit: BatchUnit) -> int:
        """The spans ``unit`` becomes with this queue's builder (for counting drops)."""
        return unit.span_count(self.builder.per_record_stages)

    def _take(self) -> BatchUnit | None:
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            unit = self._queue.popleft()
            self._queued_records -= len(unit.items)
            self._busy = True
            return unit

    def _run(self) -> None:
        while (unit := self._take()) is not None:
            done = 0
            try:
                for chunk in self.builder.chunks(unit, self.max_export_batch):
                    self._export(chunk)
                    done += len(chunk)
            except Exception:  # a broken span must never reach the workflow
                self.on_drop("export_failed", max(0, self._spans_in(unit) - done))
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _export(self, chunk: list[ReadableSpan]) -> None:
        try:
            result = self.exporter.export(chunk)
        except Exception:  # the exporter's failure is counted, never raised
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.SUCCESS:
            if self.on_export:
                self.on_export(len(chunk))
        else:
            self.on_drop("export_failed", len(chunk))

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued is exported; False when the timeout came first."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def shutdown(self, deadline_s: float) -> None:
        """Drain until ``deadline_s`` has passed, then drop (and count) what is left."""
        t0 = time.monotonic()
        self.flush(deadline_s)
        with self._cond:
            self._closed = True
            left = list(self._queue)
            self._queue.clear()
            self._queued_records = 0
            self._cond.notify_all()
        for unit in left:
            self.on_drop("shutdown_deadline", self._spans_in(unit))
        remaining = max(0.0, deadline_s - (time.monotonic() - t0))
        self._worker.join(remaining)
        _bounded(self.exporter.shutdown, max(0.1, deadline_s - (time.monotonic() - t0)))
        if isinstance(self.exporter, ProcessExporter):
            self.exporter.kill()  # an export still stuck past the deadline ends with the run


def _bounded(fn: Callable[[], Any], timeout_s: float) -> None:
    """Run ``fn`` in a daemon thread and wait at most ``timeout_s`` for it."""
    t = threading.Thread(target=_quiet(fn), name="keel-span-export-shutdown", daemon=True)
    t.start()
    t.join(timeout_s)


def _quiet(fn: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with contextlib.suppress(Exception):  # shutting down an exporter that never connected
            fn()

    return run
