"""The Python API the ``keel drift`` commands and the server's scheduled monitor call."""

from __future__ import annotations

import time
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from keel import _json
from keel.errors import ConfigError, NotFoundError
from keel.monitor import _columnar, _source
from keel.monitor._columns import SchemaCounts
from keel.monitor._embed import minilm_available, wordllama_available
from keel.monitor._profile import Profile, ProfileBuilder
from keel.monitor._window import WindowCounter
from keel.sources import ColumnarReadError, columns_readable
from keel.store import Store
from keel.store import drift as sm
from keel.watch import Watch, load_watched
from keel.workflow import Workflow

if TYPE_CHECKING:
    from keel.monitor._drift import DriftReport, DriftSettings

Batch = tuple[dict[str, Any], Sequence[str], SchemaCounts]


class _Counts(Protocol):
    def add(self, batch: Any, keys: Sequence[str] | None = None) -> None: ...
    def add_schema(self, counts: SchemaCounts) -> None: ...


def _wf(workflow: Workflow | Watch | str | Path) -> Workflow | Watch:
    return workflow if isinstance(workflow, (Workflow, Watch)) else load_watched(workflow)


def resolve_embedder(name: str) -> str:
    """``auto`` is MiniLM when the embeddings extra is installed, else WordLlama (part of the
    default install), else TF-IDF."""
    if name == "auto":
        if minilm_available():
            return "minilm"
        return "wordllama" if wordllama_available() else "tfidf"
    return name


def _feed(
    make: Callable[[], _Counts],
    wf: Workflow | Watch,
    store: Store | None,
    source: str | Path | None,
    window: str | None,
    outputs: bool,
) -> tuple[_Counts, str]:
    """Count the rows of a file or a window into a fresh ``make()``; (it, the source's label).

    A CSV or Parquet file is read column by column; when that read fails part-way (bytes that
    are not UTF-8, a quote never closed), counting starts again row by row, where every bad
    row is counted with its rule.
    """
    if (source is None) == (window is None):
        raise ConfigError(
            "say where the rows come from: a file (--from FILE) or a window of "
            "decided records (--window 24h)"
        )
    if source is not None:
        label = f"file:{Path(source).name}"
        if columns_readable(source):
            counts = make()
            try:
                _count(counts, _columnar.file_batches(wf, str(source), _source.file_fields(wf)))
                return counts, label
            except ColumnarReadError:
                pass
        counts = make()
        _count(counts, _source.file_batches(wf, source))
        return counts, label
    if isinstance(wf, Watch):
        raise ConfigError(
            f"{wf.name!r} is a keel.Watch: keel decides none of its records, so there is no "
            "window of them in the store; compare a file instead (--from FILE)"
        )
    assert store is not None and window is not None
    spec = _source.parse_window(window, time.time())
    rows = sm.window_rows(store, wf.name, spec)
    counts = make()
    _count(counts, (_source.store_batch(wf, chunk, outputs) for chunk in rows))
    return counts, f"window:{spec.label}"


def _count(counts: _Counts, batches: Iterable[Batch]) -> None:
    for cols, keys, schema in batches:
        counts.add(cols, keys)
        counts.add_schema(schema)


def build_reference(
    workflow: Workflow | Watch | str | Path,
    *,
    store: Store,
    source: str | Path | None = None,
    window: str | None = None,
    name: str = "reference",
    embedder: str = "auto",
    sample_size: int = 4096,
    ood_fpr: float = 0.01,
    kinds: Mapping[str, str] | None = None,
    seed: int | None = 0,
) -> Profile:
    """Profile a file (e.g. the training data) or a window of decided records, and save it.

    A window also profiles outputs (class mix, confidence, dispositions); a file profiles the
    input fields. Returns the saved profile (``profile.id`` is its version in the store).
    """
    wf = _wf(workflow)
    declared = _source.file_kinds(wf)
    outputs = window is not None
    if outputs and isinstance(wf, Workflow):
        declared |= _source.output_fields(wf)

    def make() -> ProfileBuilder:
        return ProfileBuilder(
            kinds=_source.declared_kinds(declared, kinds), sample_size=sample_size, seed=seed
        )

    counted, label = _feed(make, wf, store, source, window, outputs)
    builder = typing.cast(ProfileBuilder, counted)
    if builder.rows == 0:
        raise NotFoundError(f"no rows in {label} to build a reference from")
    profile = builder.build(
        embedder=resolve_embedder(embedder),
        ood_fpr=ood_fpr,
        meta={
            "workflow": wf.name,
            "name": name,
            "source": label,
            "workflow_version": wf.version,
            "watch": isinstance(wf, Watch),
        },
    )
    pid = sm.save_profile(store, wf.name, name, label, _json.dumps(profile.to_json()))
    profile.meta["id"] = pid
    return profile


def load_reference(
    store: Store, workflow: str, *, name: str = "reference", profile_id: str | None = None
) -> Profile | None:
    """The newest saved profile named ``name`` (or the one with ``profile_id``), or None."""
    found = sm.load_profile(store, workflow, name, profile_id)
    if found is None:
        return None
    pid, text, created = found
    profile = Profile.from_json(_json.loads(text))
    profile.meta.update(id=pid, created_at=created)
    return profile


def drift_report(
    store: Store,
    workflow: Workflow | Watch | str | Path,
    window: str = "24h",
    *,
    source: str | Path | None = None,
    name: str = "reference",
    profile_id: str | None = None,
    settings: DriftSettings | None = None,
    seed: int | None = 0,
) -> DriftReport:
    """Compare a window of decided records (or a file) with the workflow's reference profile.

    The scheduled monitor in ``keel serve`` calls this; ``report.metrics()`` gives the drift
    scores as gauges and ``report.alerts`` the checks that fired.
    """
    wf = _wf(workflow)
    profile = load_reference(store, wf.name, name=name, profile_id=profile_id)
    if profile is None:
        raise NotFoundError(
            f"workflow {wf.name!r} has no reference profile {name!r} in this store; build one "
            "with `keel drift reference WORKFLOW_PY --from TRAINING_FILE` (or --window)"
        )
    outputs = any(k.startswith("output.") for k in profile.kinds)
    counted, label = _feed(
        lambda: WindowCounter(profile, seed=seed),
        wf, store, source, None if source else window, outputs,
    )
    counter = typing.cast(WindowCounter, counted)
    counter.window.meta.update(source=label, counted_at=time.time())
    if counter.window.rows == 0:
        raise NotFoundError(
            f"no records of {wf.name!r} in {label}; widen --window "
            "(e.g. --window all) or run some traffic first"
        )
    from keel.monitor._drift import compare  # start-up: SciPy loads only to compare

    return compare(profile, counter.window, settings, workflow=wf.name)


def list_references(store: Store, workflow: str) -> list[dict[str, Any]]:
    return sm.list_profiles(store, workflow)
