"""The Python API for deciding: run and replay (the CLI and server are thin shells over it)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace as dataclass_replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel._record import RawRow
from keel.deliver import FileSink, Sink, WebhookSink
from keel.errors import UserError
from keel.resilience import RateLimits, Resilience, RetryPolicy
from keel.runtime._runner import ProgressFn, Runner, RunSummary
from keel.sources import read_rows
from keel.stages.screen import Detector
from keel.store import Store, opened
from keel.store import queries as q
from keel.workflow import Workflow, load_workflow

if TYPE_CHECKING:
    from keel.telemetry import Telemetry


def _workflow(workflow: Workflow | str | Path) -> Workflow:
    return workflow if isinstance(workflow, Workflow) else load_workflow(workflow)


def _runner(wf: Workflow, store: Store, out: str | Path | None, batch_size: int,
            detectors: Sequence[Detector], retry: RetryPolicy | None,
            webhook: str | WebhookSink | None = None,
            telemetry: Telemetry | None = None) -> Runner:
    sinks: list[Sink] = [FileSink(out, list(wf.output.model_fields))] if out else []
    if webhook:
        sinks.append(webhook if isinstance(webhook, WebhookSink) else WebhookSink(webhook))
    return Runner(wf, store, batch_size=batch_size, sinks=sinks, detectors=detectors,
                  retry=retry, telemetry=telemetry)


def run(workflow: Workflow | str | Path, source: str | Path | Iterable[Mapping[str, Any]], *,
        db: str | None = None,
        out: str | Path | None = None, batch_size: int = 500,
        detectors: Sequence[Detector] = (), retry: RetryPolicy | None = None,
        progress: ProgressFn | None = None, store: Store | None = None,
        webhook: str | WebhookSink | None = None,
        telemetry: Telemetry | None = None, encoding: str | None = None) -> RunSummary:
    """Run ``workflow`` over a CSV/JSONL/Parquet file (or records in memory: an iterable of
    dicts); returns the run's summary.

    ``encoding`` declares the file's text encoding (default: a byte-order mark, else UTF-16
    by its zero bytes, else UTF-8); gzip, bzip2 and xz files are read as they are.

    ``out`` writes one line per decided record to a file; ``webhook`` (a URL or a
    :class:`keel.WebhookSink`) POSTs each decision with an Idempotency-Key, retried with
    backoff and dead-lettered after repeated failures.

    ``telemetry`` (a :class:`keel.telemetry.Telemetry`) adds metrics, logs and traces; the
    caller shuts it down.
    """
    wf = _workflow(workflow)
    if isinstance(source, (str, Path)):
        rows: Iterable[RawRow] = read_rows(source, encoding=encoding)
        name = str(source)
    else:
        rows = (RawRow("records", n, dict(r)) for n, r in enumerate(source, 1))
        name = "records"
    with opened(store, db) as st:
        runner = _runner(wf, st, out, batch_size, detectors, retry, webhook, telemetry)
        summary = runner.run(rows, source=name, progress=progress)
        if wf.retrain is not None:  # the feedback loop: retrain when the policy says so
            from keel.releases import tend_retraining  # start-up: SciPy, only when declared

            summary.retraining = tend_retraining(wf, st)
        return summary


def replay(workflow: Workflow | str | Path | None, disposition: str, *, db: str | None = None,
           out: str | Path | None = None, batch_size: int = 500,
           store: Store | None = None, progress: ProgressFn | None = None,
           webhook: str | WebhookSink | None = None,
           telemetry: Telemetry | None = None) -> RunSummary:
    """Re-process ``quarantined`` or ``failed`` records with the (fixed) workflow.

    ``workflow=None`` reloads the workflow file the store last ran (when there is one).
    """
    with opened(store, db) as st:
        wf = _workflow(workflow if workflow is not None else _last_source(st))
        runner = _runner(wf, st, out, batch_size, (), None, webhook, telemetry)
        return runner.replay(disposition, progress=progress)


def _last_source(store: Store) -> str:
    sources = q.workflow_sources(store)
    if len(sources) != 1:
        names = ", ".join(sorted(sources)) or "none"
        raise UserError(f"name the workflow file to replay (workflows in this store: {names})")
    (path,) = sources.values()
    if not path or not Path(path).is_file():
        raise UserError(f"the workflow file the store last ran ({path}) is gone; pass its path")
    return path


def _concurrency(wf: Workflow, n: int | None) -> Resilience | None:
    """The workflow's resilience with ``n`` model calls in flight (async: the concurrency
    limit; sync: that many threads), or None to keep it as declared."""
    if n is None:
        return None
    if n < 1:
        raise UserError("--concurrency is at least 1")
    base = wf.resilience or Resilience()
    if wf.model.is_async:
        return dataclass_replace(base, limits=dataclass_replace(base.limits or RateLimits(),
                                                                max_concurrency=n))
    return dataclass_replace(base, threads=n)


def submit(workflow: Workflow | str | Path, source: str | Path, *, db: str | None = None,
           store: Store | None = None, priority: int = 0, batch_size: int = 2000,
           progress: ProgressFn | None = None, encoding: str | None = None) -> RunSummary:
    """Queue a file's records for workers (`keel submit`): admitted and deduplicated by key,
    bad rows quarantined, the rest pending in the store until a worker decides them."""
    from keel.runtime._worker import submit as _submit  # start-up: workers only

    wf = _workflow(workflow)
    with opened(store, db) as st:
        runner = Runner(wf, st, batch_size=batch_size)
        return _submit(runner, read_rows(source, encoding=encoding), source=str(source),
                       priority=priority, progress=progress)


def work(workflow: Workflow | str | Path, *, db: str | None = None, store: Store | None = None,
         stop: threading.Event | None = None, batch_size: int = 100,
         concurrency: int | None = None, lease_s: float = 60.0, until_empty: bool = False,
         telemetry: Telemetry | None = None) -> RunSummary:
    """Be a worker (`keel worker`): decide queued records until ``stop`` is set (or the
    queue is empty, with ``until_empty``)."""
    from keel.runtime._worker import work as _work  # start-up: workers only

    wf = _workflow(workflow)
    with opened(store, db) as st:
        runner = Runner(wf, st, batch_size=batch_size, resilience=_concurrency(wf, concurrency),
                        telemetry=telemetry)
        return _work(runner, stop=stop or threading.Event(), lease_s=lease_s,
                     until_empty=until_empty)
