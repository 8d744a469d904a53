"""Prometheus metrics: what the pipeline did (counters, histograms) and what the store holds.

Labels are always bounded: workflow, disposition, a reason *class* (review reason, error code,
contract rule), stage, model version. Never a key, an id, an input value or a message.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client import Counter as PCounter
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from keel._record import BatchTally, Item
from keel.store import Store
from keel.store import monitoring as mon
from keel.store import queue as queue_sql
from keel.store.releases import release_summary

_RECORD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0, 30.0, 60.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                  5.0, 10.0, 30.0)

#: ``fn(store, workflow) -> {feature: score}``; registered by drift monitoring.
DriftSource = Callable[["Store", str], Mapping[str, float]]
_DRIFT_SOURCES: list[DriftSource] = []


def register_drift_source(fn: DriftSource) -> None:
    """Let drift monitoring feed ``keel_drift_score`` gauges and the ``drift_score`` alert rule."""
    if fn not in _DRIFT_SOURCES:
        _DRIFT_SOURCES.append(fn)


def drift_scores(store: Store, workflow: str) -> dict[str, float]:
    """Every registered source's scores for ``workflow`` (a failing source is skipped)."""
    out: dict[str, float] = {}
    for source in list(_DRIFT_SOURCES):
        try:
            out.update({str(k): float(v) for k, v in source(store, workflow).items()})
        except Exception:  # drift is advisory; a broken source must not break a scrape
            continue
    return out


_SCORE = re.compile(r'keel_drift_score\{field="(?P<field>[^"]*)",test="(?P<test>[^"]*)"\}')
#: The latest drift report's verdicts per workflow: (scores by "field/test", share drifted).
_LATEST: dict[str, tuple[dict[str, float], float]] = {}


def record_drift(report: Any) -> None:
    """Publish a drift report (``keel.monitor`` ``DriftReport``): its scores become
    ``keel_drift_score`` gauges and the share of checks it flagged feeds ``drift_score`` alerts.

    ``keel serve``'s scheduled drift monitor calls this after each report.
    """
    scores = {f"{m['field']}/{m['test']}": float(v) for k, v in report.metrics().items()
              if (m := _SCORE.fullmatch(k))}
    checks = len(scores)
    share = len(report.alerts) / checks if checks else 0.0
    _LATEST[str(report.workflow)] = (scores, share)
    register_drift_source(_latest_scores)


def _latest_scores(_store: Store, workflow: str) -> Mapping[str, float]:
    return _LATEST.get(workflow, ({}, 0.0))[0]


def drift_signal(store: Store, workflow: str) -> float | None:
    """The ``drift_score`` alert signal: the share of checks the latest report flagged, or
    (from custom sources only) the highest score; None when nothing reported drift scores."""
    if workflow in _LATEST:
        return _LATEST[workflow][1]
    scores = drift_scores(store, workflow)
    return max(scores.values()) if scores else None


class BatchHistogram(Collector):
    """A Prometheus histogram observed a batch at a time: bucket counts in NumPy, exposed
    through the client's custom-collector API (one ``observe`` call per record cost more
    than the rest of the pipeline's metrics together)."""

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str],
                 buckets: Sequence[float], registry: CollectorRegistry) -> None:
        self.name, self.documentation = name, documentation
        self.labelnames = list(labelnames)
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._series: dict[tuple[str, ...], list[Any]] = {}  # labels -> [counts, sum]
        self._lock = threading.Lock()
        registry.register(self)

    def observe_many(self, labels: tuple[str, ...], values: Sequence[float],
                     scale: float = 1.0) -> None:
        """Observe ``values`` (each multiplied by ``scale``: milliseconds to seconds, say)."""
        if not values:
            return
        v = np.asarray(values, dtype=np.float64)
        if scale != 1.0:
            v *= scale
        counts = np.bincount(np.searchsorted(self.bounds, v, side="left"),
                             minlength=len(self.bounds) + 1)
        with self._lock:
            series = self._series.get(labels)
            if series is None:
                series = self._series[labels] = [np.zeros(len(self.bounds) + 1, np.int64), 0.0]
            series[0] += counts
            series[1] += float(v.sum())

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        with self._lock:
            for labels, (counts, total) in self._series.items():
                cumulative = np.cumsum(counts).tolist()
                les = [repr(float(b)) for b in self.bounds] + ["+Inf"]
                family.add_metric(list(labels), list(zip(les, cumulative, strict=True)), total)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)


class PipelineMetrics:
    """Counters and histograms the runner feeds once per batch."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records = PCounter("keel_records", "Records decided, by disposition and reason class.",
                                ["workflow", "disposition", "reason"], registry=r)
        self.latency = BatchHistogram("keel_record_latency_seconds",
                                      "Admission to persisted decision, per record.",
                                      ["workflow", "disposition"], _RECORD_BUCKETS, r)
        self.stage = Histogram("keel_stage_duration_seconds", "Time a batch spent in each stage.",
                               ["workflow", "stage"], buckets=_STAGE_BUCKETS, registry=r)
        self.model_calls = PCounter("keel_model_calls", "Model attempts, by outcome.",
                                    ["workflow", "model_version", "outcome"], registry=r)
        self.model_errors = PCounter("keel_model_errors", "Failed model attempts, by error class.",
                                     ["workflow", "model_version", "error"], registry=r)
        self.retries = PCounter("keel_model_retries", "Model attempts beyond the first per record.",
                                ["workflow", "model_version"], registry=r)
        self.model_latency = BatchHistogram("keel_model_call_seconds",
                                            "Model attempt latency per record.",
                                            ["workflow", "model_version"], _RECORD_BUCKETS, r)
        self.tokens = PCounter("keel_model_tokens", "Tokens used, by direction.",
                               ["workflow", "model_version", "direction"], registry=r)
        self.cost = PCounter("keel_cost_usd", "Money spent on model calls.",
                             ["workflow", "model_version"], registry=r)
        self.cost_component = PCounter(
            "keel_cost_component_usd", "Money spent on model calls, by component: the primary "
            "model or the fallback chain (review cost: keel_cost_window_usd).",
            ["workflow", "component"], registry=r)
        self.spans_exported = PCounter("keel_telemetry_spans_exported", "Spans handed to the exporter.",
                                       registry=r)
        self.spans_dropped = PCounter("keel_telemetry_spans_dropped",
                                      "Spans dropped instead of slowing a decision, by reason.",
                                      ["reason"], registry=r)
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}

    def _child(self, metric: PCounter | Histogram, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (the lookup costs more than the observation)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_batch(self, workflow: str, items: Sequence[Item],
                      marks: Sequence[tuple[str, int]], tally: BatchTally | None = None) -> None:
        """A stored batch's metrics; ``tally`` is the batch as the run's summary counted it
        (computed here when not given)."""
        child = self._child
        for n in range(1, len(marks)):
            child(self.stage, workflow, marks[n][0]).observe((marks[n][1] - marks[n - 1][1]) / 1e9)
        if tally is None:
            tally = BatchTally.of(items)
        for (disp, reason), count in tally.outcomes.items():
            child(self.records, workflow, disp, reason).inc(count)
        for disp, values in tally.latencies_ms.items():
            self.latency.observe_many((workflow, disp), values, 1e-3)
        self._observe_models(workflow, items)

    def _observe_models(self, workflow: str, items: Sequence[Item]) -> None:
        # per model version: [ok, errors, input tokens, output tokens, retries, cost, latencies]
        per_version: dict[str, list[Any]] = {}
        errors: Counter[tuple[str, str]] = Counter()
        fallback_usd = 0.0
        for item in items:
            for ev in item.calls:
                mv = ev.model_version or "unknown"
                acc = per_version.get(mv)
                if acc is None:
                    acc = per_version[mv] = [0, 0, 0, 0, 0, 0.0, []]
                d = ev.detail or {}
                if ev.kind == "predicted":
                    acc[0] += 1
                    acc[2] += d.get("input_tokens") or 0
                    acc[3] += d.get("output_tokens") or 0
                else:
                    acc[1] += 1
                    errors[mv, str(d.get("code") or "unknown")] += 1
                if (d.get("attempt") or 1) > 1:
                    acc[4] += 1
                if ev.latency_ms is not None:
                    acc[6].append(ev.latency_ms)
                if ev.cost_usd:
                    acc[5] += ev.cost_usd
                    if d.get("step", "primary") != "primary":
                        fallback_usd += ev.cost_usd
        child = self._child
        total = sum(acc[5] for acc in per_version.values())
        if total:
            if total - fallback_usd:
                child(self.cost_component, workflow, "model").inc(total - fallback_usd)
            if fallback_usd:
                child(self.cost_component, workflow, "fallback").inc(fallback_usd)
        for mv, (ok, failed, tokens_in, tokens_out, retries, usd, ms) in per_version.items():
            for metric, label, n in ((self.model_calls, "ok", ok), (self.model_calls, "error", failed),
                                     (self.tokens, "input", tokens_in),
                                     (self.tokens, "output", tokens_out)):
                if n:
                    child(metric, workflow, mv, label).inc(n)
            if retries:
                child(self.retries, workflow, mv).inc(retries)
            if usd:
                child(self.cost, workflow, mv).inc(usd)
            self.model_latency.observe_many((workflow, mv), ms, 1e-3)
        for (mv, code), n in errors.items():
            child(self.model_errors, workflow, mv, code).inc(n)

    def dropped(self, reason: str, spans: int) -> None:
        self.spans_dropped.labels(reason).inc(spans)

    def exported(self, spans: int) -> None:
        self.spans_exported.inc(spans)


class _Chain(Collector):
    """Exposes another registry's metrics inside this one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.inner = registry

    def collect(self) -> Iterable[Metric]:
        return self.inner.collect()


class StoreCollector(Collector):
    """Gauges read from the store at scrape time: backlog, accuracy, breakers, drift, alerts."""

    def __init__(self, store: Store, workflows: Sequence[str] | None = None) -> None:
        self.store = store
        self.workflows = workflows

    def collect(self) -> Iterator[Metric]:
        snap = mon.snapshot(self.store, self.workflows)
        names = list(snap["workflows"])
        yield _gauge("keel_decisions_stored", "Decisions in the store, by disposition.",
                     ["workflow", "disposition"],
                     ((wf, d, n) for wf in names for d, n in snap["workflows"][wf]["dispositions"].items()))
        yield _gauge("keel_review_backlog", "Open review tasks, by reason.", ["workflow", "reason"],
                     ((wf, r, n) for wf in names for r, n in snap["workflows"][wf]["backlog"].items()))
        yield _gauge("keel_review_oldest_task_age_seconds", "Age of the oldest open review task.",
                     ["workflow"], ((wf, snap["workflows"][wf]["oldest_age_s"]) for wf in names
                                    if snap["workflows"][wf]["oldest_age_s"] is not None))
        yield _gauge("keel_review_overdue", "Open review tasks past their due time.", ["workflow"],
                     ((wf, snap["workflows"][wf]["overdue"]) for wf in names))
        yield _gauge("keel_realized_accuracy", "Share of audited automatic decisions a person confirmed.",
                     ["workflow"], ((wf, snap["workflows"][wf]["accuracy"]) for wf in names
                                    if snap["workflows"][wf]["accuracy"] is not None))
        yield _gauge("keel_audits_decided", "Audit-sample review tasks decided by a person.",
                     ["workflow"], ((wf, snap["workflows"][wf]["audits"]) for wf in names))
        yield _gauge("keel_breaker_state",
                     "Circuit breaker state per workflow and model version (1 = current).",
                     ["workflow", "model_version", "state"],
                     ((wf, mv, st, 1) for (wf, mv), st in snap["breakers"].items()))
        yield _gauge("keel_alerts_firing", "Alert rules currently firing.", ["workflow", "rule"],
                     ((wf, rule, 1) for wf, rule in snap["firing"]))
        yield _gauge("keel_drift_score", "Latest drift score per feature (from drift monitoring).",
                     ["workflow", "feature"],
                     ((wf, f, v) for wf in names for f, v in drift_scores(self.store, wf).items()))
        yield from self._releases(names)
        yield from self._queue(names)

    def _queue(self, names: list[str]) -> Iterator[Metric]:
        found = {wf: queue_sql.depth(self.store, wf) for wf in names}
        yield _gauge("keel_queue_depth", "Records queued for workers, by status.",
                     ["workflow", "status"], ((wf, s, q[s]) for wf, q in found.items()
                                              for s in ("pending", "leased")))
        yield _gauge("keel_queue_oldest_pending_age_seconds",
                     "Age of the oldest record waiting for a worker.", ["workflow"],
                     ((wf, q["oldest_pending_age_s"]) for wf, q in found.items()
                      if q["oldest_pending_age_s"] is not None))
        live = [w for w in queue_sql.workers(self.store) if w["alive"]]
        yield _gauge("keel_worker_records_per_second",
                     "Records a live worker decided per second since it started.",
                     ["workflow", "worker"],
                     ((w["workflow"], w["id"], w["records_per_s"]) for w in live))

    def _releases(self, names: list[str]) -> Iterator[Metric]:
        found = {wf: release_summary(self.store, wf) for wf in names}
        live = {wf: r for wf, r in found.items() if r is not None}
        yield _gauge("keel_release_live", "The release each alias points at (1 = current).",
                     ["workflow", "alias", "release"],
                     ((wf, alias, r[alias], 1) for wf, r in live.items()
                      for alias in ("champion", "challenger") if r.get(alias)))
        yield _gauge("keel_rollout_share", "Share of traffic (percent) the challenger decides "
                     "(0 in a shadow step).", ["workflow", "release", "status"],
                     ((wf, r["rollout"]["challenger"], r["rollout"]["status"],
                       r["rollout"]["share"]) for wf, r in live.items() if r["rollout"]))
        yield _gauge("keel_rollout_step", "The rollout's step (1 = first).", ["workflow", "release"],
                     ((wf, r["rollout"]["challenger"], r["rollout"]["step"])
                      for wf, r in live.items() if r["rollout"]))
        yield _gauge("keel_release_agreement", "Share of a release's reviewed answers people kept.",
                     ["workflow", "release"],
                     ((wf, name, a["agreement"]) for wf, r in live.items()
                      for name, a in r["agreement"].items() if a["agreement"] is not None))
        yield _gauge("keel_release_reviewed", "A release's answers people reviewed.",
                     ["workflow", "release"],
                     ((wf, name, a["reviewed"]) for wf, r in live.items()
                      for name, a in r["agreement"].items()))


def _gauge(name: str, doc: str, labels: list[str], rows: Iterable[tuple[object, ...]]) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=labels)
    for row in rows:
        g.add_metric([str(x) for x in row[:-1]], float(row[-1]))  # type: ignore[arg-type]
    return g


def chain(registry: CollectorRegistry) -> Collector:
    return _Chain(registry)
