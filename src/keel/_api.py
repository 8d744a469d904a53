"""The Python API the CLI and server are thin shells over."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from keel._sinks import FileSink, Sink
from keel._sources import read_rows
from keel._webhook import WebhookSink
from keel.errors import NotFoundError
from keel.resilience import RetryPolicy
from keel.runner import ProgressFn, Runner, RunSummary
from keel.stages.screen import Detector
from keel.store import Store
from keel.store import _queries as q
from keel.workflow import Workflow, load_workflow


def _workflow(workflow: Workflow | str | Path) -> Workflow:
    return workflow if isinstance(workflow, Workflow) else load_workflow(workflow)


def _runner(wf: Workflow, store: Store, out: str | Path | None, batch_size: int,
            detectors: Sequence[Detector], retry: RetryPolicy | None,
            webhook: str | WebhookSink | None = None) -> Runner:
    sinks: list[Sink] = [FileSink(out, list(wf.output.model_fields))] if out else []
    if webhook:
        sinks.append(webhook if isinstance(webhook, WebhookSink) else WebhookSink(webhook))
    return Runner(wf, store, batch_size=batch_size, sinks=sinks, detectors=detectors,
                  retry=retry)


def run(workflow: Workflow | str | Path, source: str | Path, *, db: str | None = None,
        out: str | Path | None = None, batch_size: int = 500,
        detectors: Sequence[Detector] = (), retry: RetryPolicy | None = None,
        progress: ProgressFn | None = None, store: Store | None = None,
        webhook: str | WebhookSink | None = None) -> RunSummary:
    """Run ``workflow`` over a CSV/JSONL/Parquet file; returns the run's summary.

    ``out`` writes one line per decided record to a file; ``webhook`` (a URL or a
    :class:`keel.WebhookSink`) POSTs each decision with an Idempotency-Key, retried with
    backoff and dead-lettered after repeated failures.
    """
    wf = _workflow(workflow)
    rows = read_rows(source)
    own = store is None
    st = store or Store.open(db)
    try:
        runner = _runner(wf, st, out, batch_size, detectors, retry, webhook)
        return runner.run(rows, source=str(source), progress=progress)
    finally:
        if own:
            st.close()


def replay(workflow: Workflow | str | Path, disposition: str, *, db: str | None = None,
           out: str | Path | None = None, batch_size: int = 500,
           store: Store | None = None, progress: ProgressFn | None = None,
           webhook: str | WebhookSink | None = None) -> RunSummary:
    """Re-process ``quarantined`` or ``failed`` records with the (fixed) workflow."""
    wf = _workflow(workflow)
    own = store is None
    st = store or Store.open(db)
    try:
        runner = _runner(wf, st, out, batch_size, (), None, webhook)
        return runner.replay(disposition, progress=progress)
    finally:
        if own:
            st.close()


def status(*, db: str | None = None, workflow: str | None = None,
           store: Store | None = None) -> list[dict[str, Any]]:
    st = store or Store.open(db)
    try:
        names = [workflow] if workflow else q.workflow_names(st)
        return [q.status(st, n) for n in names]
    finally:
        if store is None:
            st.close()


def trace(key: str, *, db: str | None = None, workflow: str | None = None,
          store: Store | None = None) -> list[dict[str, Any]]:
    st = store or Store.open(db)
    try:
        found = q.trace(st, key, workflow)
    finally:
        if store is None:
            st.close()
    if not found:
        raise NotFoundError(f"no record with key {key!r}; `keel status` lists what the store holds")
    return found


def quarantined(*, db: str | None = None, workflow: str | None = None,
                store: Store | None = None) -> list[dict[str, Any]]:
    st = store or Store.open(db)
    try:
        return q.quarantined(st, workflow)
    finally:
        if store is None:
            st.close()
