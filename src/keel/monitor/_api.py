"""The Python API the ``keel drift`` commands and the server's scheduled monitor call."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from keel import _json
from keel.errors import ConfigError, NotFoundError
from keel.monitor import _source
from keel.monitor._drift import DriftReport, DriftSettings, compare
from keel.monitor._embed import minilm_available
from keel.monitor._profile import Profile, ProfileBuilder
from keel.monitor._window import WindowCounter
from keel.store import Store
from keel.store import drift as sm
from keel.workflow import Workflow, load_workflow

Batch = tuple[dict[str, list[Any]], list[str], list[dict[str, Any]], list[str | None]]


def _wf(workflow: Workflow | str | Path) -> Workflow:
    return workflow if isinstance(workflow, Workflow) else load_workflow(workflow)


def resolve_embedder(name: str) -> str:
    """``auto`` is MiniLM when the embeddings extra is installed, TF-IDF otherwise."""
    if name == "auto":
        return "minilm" if minilm_available() else "tfidf"
    return name


def _batches(
    wf: Workflow, store: Store | None, source: str | Path | None, window: str | None, outputs: bool
) -> tuple[Iterator[Batch], str]:
    if (source is None) == (window is None):
        raise ConfigError(
            "say where the rows come from: a file (--from FILE) or a window of "
            "decided records (--window 24h)"
        )
    if source is not None:
        return _source.file_batches(wf, source), f"file:{Path(source).name}"
    assert store is not None and window is not None
    spec = _source.parse_window(window, time.time())
    rows = sm.window_rows(store, wf.name, spec)
    return (_source.store_batch(wf, chunk, outputs) for chunk in rows), f"window:{spec.label}"


def build_reference(
    workflow: Workflow | str | Path,
    *,
    store: Store,
    source: str | Path | None = None,
    window: str | None = None,
    name: str = "reference",
    embedder: str = "auto",
    sample_size: int = 4096,
    ood_fpr: float = 0.01,
    kinds: Mapping[str, str] | None = None,
    seed: int | None = None,
) -> Profile:
    """Profile a file (e.g. the training data) or a window of decided records, and save it.

    A window also profiles outputs (class mix, confidence, dispositions); a file profiles the
    input fields. Returns the saved profile (``profile.id`` is its version in the store).
    """
    wf = _wf(workflow)
    declared = _source.input_fields(wf)
    outputs = window is not None
    if outputs:
        declared |= _source.output_fields(wf)
    builder = ProfileBuilder(
        kinds=_source.declared_kinds(declared, kinds), sample_size=sample_size, seed=seed
    )
    batches, label = _batches(wf, store, source, window, outputs)
    for cols, keys, raws, rules in batches:
        builder.add(cols, keys)
        builder.add_raw(raws, rules)
    if builder.rows == 0:
        raise NotFoundError(f"no rows in {label} to build a reference from")
    profile = builder.build(
        embedder=resolve_embedder(embedder),
        ood_fpr=ood_fpr,
        meta={"workflow": wf.name, "name": name, "source": label, "workflow_version": wf.version},
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
    workflow: Workflow | str | Path,
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
    counter = WindowCounter(profile, seed=seed)
    outputs = any(k.startswith("output.") for k in profile.kinds)
    batches, label = _batches(wf, store, source, None if source else window, outputs)
    for cols, keys, raws, rules in batches:
        counter.add(cols, keys)
        counter.add_raw(raws, rules)
    counter.window.meta.update(source=label, counted_at=time.time())
    if counter.window.rows == 0:
        raise NotFoundError(
            f"no records of {wf.name!r} in {label}; widen --window "
            "(e.g. --window all) or run some traffic first"
        )
    return compare(profile, counter.window, settings, workflow=wf.name)


def list_references(store: Store, workflow: str) -> list[dict[str, Any]]:
    return sm.list_profiles(store, workflow)
