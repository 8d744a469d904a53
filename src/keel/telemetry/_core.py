"""The Telemetry object the runner calls once per batch: metrics, logs and traces.

Off by default (a Runner without telemetry does none of this). On, the hot path does one
pass over the batch for metrics, one log line per batch (per record at DEBUG), and hands the
batch to the span queue; spans are built and exported off the hot path. Any error inside
telemetry is logged and swallowed: telemetry never fails or slows a decision on purpose.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export import SpanExporter
from prometheus_client import CollectorRegistry, generate_latest, push_to_gateway, write_to_textfile

from keel._log import log_event
from keel._record import BatchTally, Item
from keel._version import __version__
from keel.errors import ConfigError
from keel.redact import DEFAULT, Redactor
from keel.telemetry._export import SpanQueue, make_exporter
from keel.telemetry._metrics import PipelineMetrics, StoreCollector, chain
from keel.telemetry._spans import BatchUnit, SpanBuilder

if TYPE_CHECKING:
    from keel.store import Store
    from keel.workflow import Workflow

log = logging.getLogger("keel.run")
DEFAULT_DEADLINE_S = 5.0

Marks = Sequence[tuple[str, int]]


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ConfigError(f"{name}={raw!r} is not a number") from exc


def _final_stage(item: Item) -> str:
    if item.disposition == "quarantined":
        return "validate"
    if item.prediction is None or item.output is None:
        return "predict"
    return "route"


class Telemetry:
    """Metrics, logs and traces for the runs that are given it (``Runner(..., telemetry=t)``).

    ``exporter`` is any OpenTelemetry SpanExporter (None: no traces). ``redact`` masks personal
    data in logs and spans (leave it on). ``flush_deadline_s`` bounds :meth:`shutdown`.
    ``sample_ratio`` is the share of records traced (batches always are). ``stage_spans``:
    ``"batch"`` (default) puts the stage spans in the batch's trace, which every record's
    trace links to (stages run once per batch, so that is where their timings live);
    ``"record"`` also copies them into every record's trace (the whole tree in one view, at
    about four times the spans).
    """

    def __init__(self, *, exporter: SpanExporter | None = None, metrics: bool = True,
                 redact: bool = True, flush_deadline_s: float = DEFAULT_DEADLINE_S,
                 max_queue_records: int = 10_000, sample_ratio: float = 1.0,
                 stage_spans: str | None = None, service_name: str = "keel") -> None:
        if not 0.0 <= sample_ratio <= 1.0:
            raise ConfigError(f"trace sample ratio must be in [0, 1], got {sample_ratio}")
        self.metrics = PipelineMetrics() if metrics else None
        self.redact = redact
        self.flush_deadline_s = flush_deadline_s
        self.exporter = exporter
        self.spans: SpanQueue | None = None
        if exporter is not None:
            created = Resource.create({"service.name": service_name,
                                       "service.version": __version__})
            resource = _Resource(created.attributes, created.schema_url)
            stages = stage_spans or os.environ.get("KEEL_OTEL_STAGE_SPANS") or "batch"
            try:
                builder = SpanBuilder(resource, sample_ratio, stages)
            except ValueError as exc:
                raise ConfigError(str(exc)) from exc
            self.spans = SpanQueue(exporter, builder,
                                   on_drop=self._dropped, on_export=self._exported,
                                   max_queue_records=max_queue_records)
        self._redactors: dict[str, Redactor] = {}
        self._models: dict[str, dict[str, tuple[str, str]]] = {}
        self.dropped_spans = 0
        self._closed = False

    @classmethod
    def from_options(cls, otel: str | None = None, endpoint: str | None = None, *,
                     metrics: bool = True, flush_deadline_s: float | None = None,
                     sample_ratio: float | None = None) -> Telemetry:
        """Build from CLI options, falling back to KEEL_OTEL_EXPORTER, KEEL_OTEL_ENDPOINT,
        KEEL_OTEL_SAMPLE and KEEL_OTEL_DEADLINE_S (exporter default: none)."""
        kind = otel or os.environ.get("KEEL_OTEL_EXPORTER") or "none"
        deadline = flush_deadline_s if flush_deadline_s is not None else \
            _env_float("KEEL_OTEL_DEADLINE_S", DEFAULT_DEADLINE_S)
        ratio = sample_ratio if sample_ratio is not None else _env_float("KEEL_OTEL_SAMPLE", 1.0)
        exporter = make_exporter(kind, endpoint or os.environ.get("KEEL_OTEL_ENDPOINT"),
                                 timeout_s=max(0.5, min(10.0, deadline)))
        return cls(exporter=exporter, metrics=metrics, flush_deadline_s=deadline,
                   sample_ratio=ratio)

    # -- the hot path -----------------------------------------------------------------------
    def on_batch(self, workflow: Workflow, run_id: str, items: Sequence[Item], marks: Marks,
                 tally: BatchTally | None = None) -> None:
        """Called by the runner after a batch's outcomes are persisted (``tally``: the batch
        as the run's summary counted it)."""
        if self._closed or not items:
            return
        try:
            if self.metrics is not None:
                self.metrics.observe_batch(workflow.name, items, marks, tally)
            redactor = self._redactor(workflow)
            if log.isEnabledFor(logging.INFO):
                self._log_batch(workflow, run_id, items, marks, redactor)
            if self.spans is not None:
                self.spans.submit(BatchUnit(workflow.name, workflow.version, run_id, items, marks,
                                            redactor, self._model_names(workflow)))
        except Exception as exc:  # telemetry must never fail a decision
            log_event(log, logging.ERROR, "telemetry failed", error=f"{type(exc).__name__}: {exc}")

    def _redactor(self, workflow: Workflow) -> Redactor:
        red = self._redactors.get(workflow.name)
        if red is None:
            fields = getattr(workflow, "sensitive_fields", ()) or ()
            red = Redactor(fields) if self.redact and fields else DEFAULT
            if not self.redact:
                red = _NoRedaction()
            self._redactors[workflow.name] = red
        return red

    def _model_names(self, workflow: Workflow) -> dict[str, tuple[str, str]]:
        found = self._models.get(workflow.name)
        if found is None:
            models = [workflow.model, *workflow.fallback_chain]
            found = self._models[workflow.name] = {m.version: (m.name, m.kind) for m in models}
        return found

    def _log_batch(self, wf: Workflow, run_id: str, items: Sequence[Item], marks: Marks,
                   redactor: Redactor) -> None:
        counts = Counter(i.disposition or "failed" for i in items)
        stage_ms = {marks[n][0]: round((marks[n][1] - marks[n - 1][1]) / 1e6, 3)
                    for n in range(1, len(marks))}
        log_event(log, logging.INFO, "batch decided", workflow=wf.name,
                  workflow_version=wf.version, run_id=run_id, records=len(items),
                  dispositions=dict(counts), stage_ms=stage_ms,
                  batch_ms=round((marks[-1][1] - marks[0][1]) / 1e6, 3) if marks else None,
                  cost_usd=round(sum(i.cost_usd for i in items), 6))
        if log.isEnabledFor(logging.DEBUG):
            for i in items:
                known = redactor.known_values(i.raw)
                log_event(log, logging.DEBUG, "record decided", workflow=wf.name,
                          record_id=i.record_id, key=redactor.text(i.key, known),
                          stage=_final_stage(i), model_version=i.predicted_by,
                          disposition=i.disposition,
                          reason=redactor.text(i.reason, known) if i.reason else None,
                          confidence=i.prediction.confidence if i.prediction else None,
                          latency_ms=round(i.latency_ms, 3), cost_usd=i.cost_usd)

    # -- drops and exports --------------------------------------------------------------------
    def _dropped(self, reason: str, spans: int) -> None:
        self.dropped_spans += spans
        if self.metrics is not None:
            self.metrics.dropped(reason, spans)

    def _exported(self, spans: int) -> None:
        if self.metrics is not None:
            self.metrics.exported(spans)

    # -- lifecycle ------------------------------------------------------------------------------
    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait (at most ``timeout_s``) until every queued span is exported."""
        if self.spans is None:
            return True
        return self.spans.flush(self.flush_deadline_s if timeout_s is None else timeout_s)

    def shutdown(self, deadline_s: float | None = None) -> float:
        """Export what is queued, within ``deadline_s`` at most; returns the seconds it took."""
        t0 = time.monotonic()
        if not self._closed:
            self._closed = True
            if self.spans is not None:
                self.spans.shutdown(self.flush_deadline_s if deadline_s is None else deadline_s)
        return time.monotonic() - t0

    # -- metrics out ----------------------------------------------------------------------------
    def registry(self, store: Store | None = None,
                 workflows: Sequence[str] | None = None) -> CollectorRegistry:
        return build_registry(store, self, workflows)

    def write_metrics(self, path: str | Path, store: Store | None = None) -> None:
        """Write the Prometheus textfile (node_exporter's textfile collector reads it)."""
        write_to_textfile(str(path), self.registry(store))

    def push_metrics(self, gateway: str, store: Store | None = None, *, job: str = "keel",
                     grouping_key: dict[str, str] | None = None, timeout_s: float = 5.0) -> None:
        """Push to a Prometheus Pushgateway (for batch runs that end before a scrape)."""
        push_to_gateway(gateway, job=job, registry=self.registry(store),
                        grouping_key=grouping_key or {}, timeout=timeout_s)


class _Resource(Resource):
    """A Resource whose hash is computed once: OTLP's encoder groups spans by resource and
    the SDK hashes a resource by JSON-encoding its attributes, for every span (about a fifth
    of encoding a span). A resource's attributes never change, so neither does its hash."""

    _hash: int | None = None

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = super().__hash__()
        return self._hash

    def __eq__(self, other: object) -> bool:
        return self is other or super().__eq__(other)


class _NoRedaction(Redactor):
    """For tests that need to see raw values (``Telemetry(redact=False)``)."""

    def text(self, s: str, known: Sequence[str] = ()) -> str:
        return s

    def value(self, value: Any, known: Sequence[str] = ()) -> Any:
        return value

    def known_values(self, raw: Any) -> tuple[str, ...]:
        return ()


def build_registry(store: Store | None = None, telemetry: Telemetry | None = None,
                   workflows: Sequence[str] | None = None) -> CollectorRegistry:
    """A registry with the pipeline's metrics (when ``telemetry`` has them) and the store's gauges."""
    registry = CollectorRegistry(auto_describe=False)
    if telemetry is not None and telemetry.metrics is not None:
        registry.register(chain(telemetry.metrics.registry))
    if store is not None:
        registry.register(StoreCollector(store, workflows))
    return registry


def metrics_text(store: Store | None = None, telemetry: Telemetry | None = None,
                 workflows: Sequence[str] | None = None) -> bytes:
    """The Prometheus exposition text for ``GET /metrics``."""
    return generate_latest(build_registry(store, telemetry, workflows))
