"""The Python API the CLI and server are thin shells over."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel._sinks import FileSink, Sink
from keel._sources import read_rows
from keel._webhook import WebhookSink
from keel.errors import NotFoundError, UserError
from keel.redact import for_spec
from keel.resilience import RetryPolicy
from keel.runner import ProgressFn, Runner, RunSummary
from keel.stages.screen import Detector
from keel.store import Store
from keel.store import _queries as q
from keel.workflow import Workflow, load_workflow

if TYPE_CHECKING:
    from keel.telemetry import Telemetry


@contextmanager
def _opened(store: Store | None, db: str | None) -> Iterator[Store]:
    """The caller's store as it is, or one opened from ``db`` (and closed after)."""
    if store is not None:
        yield store
        return
    st = Store.open(db)
    try:
        yield st
    finally:
        st.close()


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


def run(workflow: Workflow | str | Path, source: str | Path, *, db: str | None = None,
        out: str | Path | None = None, batch_size: int = 500,
        detectors: Sequence[Detector] = (), retry: RetryPolicy | None = None,
        progress: ProgressFn | None = None, store: Store | None = None,
        webhook: str | WebhookSink | None = None,
        telemetry: Telemetry | None = None) -> RunSummary:
    """Run ``workflow`` over a CSV/JSONL/Parquet file; returns the run's summary.

    ``out`` writes one line per decided record to a file; ``webhook`` (a URL or a
    :class:`keel.WebhookSink`) POSTs each decision with an Idempotency-Key, retried with
    backoff and dead-lettered after repeated failures.

    ``telemetry`` (a :class:`keel.telemetry.Telemetry`) adds metrics, logs and traces; the
    caller shuts it down.
    """
    wf = _workflow(workflow)
    rows = read_rows(source)
    with _opened(store, db) as st:
        runner = _runner(wf, st, out, batch_size, detectors, retry, webhook, telemetry)
        return runner.run(rows, source=str(source), progress=progress)


def replay(workflow: Workflow | str | Path | None, disposition: str, *, db: str | None = None,
           out: str | Path | None = None, batch_size: int = 500,
           store: Store | None = None, progress: ProgressFn | None = None,
           webhook: str | WebhookSink | None = None,
           telemetry: Telemetry | None = None) -> RunSummary:
    """Re-process ``quarantined`` or ``failed`` records with the (fixed) workflow.

    ``workflow=None`` reloads the workflow file the store last ran (when there is one).
    """
    with _opened(store, db) as st:
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


def status(*, db: str | None = None, workflow: str | None = None,
           store: Store | None = None) -> list[dict[str, Any]]:
    with _opened(store, db) as st:
        names = [workflow] if workflow else q.workflow_names(st)
        return [q.status(st, n) for n in names]


def _redacted(st: Store, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with personal data masked, per their workflow's declared sensitive fields."""
    from keel.store._monitor import workflow_specs

    specs = workflow_specs(st)
    out = []
    for row in rows:
        red = for_spec(specs.get(row["workflow"]))
        out.append(red.value(row, red.known_values(row.get("input"))))
    return out


def trace(key: str, *, db: str | None = None, workflow: str | None = None,
          store: Store | None = None, raw: bool = False) -> list[dict[str, Any]]:
    """A record's whole story. Personal data is masked unless ``raw`` (for admins)."""
    with _opened(store, db) as st:
        found = q.trace(st, key, workflow)
        if found and not raw:
            found = _redacted(st, found)
    if not found:
        raise NotFoundError(f"no record with key {key!r}; `keel status` lists what the store holds")
    return found


def quarantined(*, db: str | None = None, workflow: str | None = None,
                store: Store | None = None, raw: bool = False) -> list[dict[str, Any]]:
    """Open quarantine entries; personal data is masked unless ``raw``."""
    with _opened(store, db) as st:
        rows = q.quarantined(st, workflow)
        return rows if raw else _redacted(st, rows)
