"""The evaluation harness: releases over a labelled file, through the production stages
(contracts, screening, the fallback chain, routing), touching no production record."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keel import _json
from keel._record import Item
from keel.errors import ReleaseError
from keel.monitor import detector_for
from keel.releases._bundle import Release
from keel.releases._registry import by_alias, champion_now, get, model_for, register
from keel.releases._stats import bootstrap_diff, mcnemar_exact, reliability
from keel.resilience import LoopThread
from keel.review import policy_in_force
from keel.sources import read_rows
from keel.stages import ConfidenceRouter, InputValidator, OutputChecker, Predictor, Screener
from keel.stages.predict import chain
from keel.store import Store
from keel.store import releases as sql
from keel.workflow import Workflow


@dataclass
class Labelled:
    """A labelled file as the harness reads it."""

    rows: list[dict[str, Any] | None]  # None: a row the file could not give (kept, counted)
    labels: list[Any]
    slices: list[str | None]
    data_hash: str
    path: str
    problems: list[str] = field(default_factory=list)


def _label_column(wf: Workflow, header: Sequence[str], asked: str | None) -> str:
    fields = list(wf.output.model_fields)
    if asked:
        if asked not in header:
            raise ReleaseError(f"the labels file has no column {asked!r}; its columns are "
                               f"{', '.join(header)} (pass --label-column)")
        return asked
    candidates = list(dict.fromkeys(([wf.policy.class_field] if wf.policy.class_field else [])
                                    + fields + ["label"]))
    for name in candidates:
        if name in header:
            return name
    raise ReleaseError(f"the labels file has no label column: none of "
                       f"{', '.join(candidates)} is among its columns "
                       f"({', '.join(header)}); pass --label-column COLUMN")


def read_labelled(wf: Workflow, path: str | Path, *, label_column: str | None = None,
                  slice_column: str | None = None) -> Labelled:
    """Rows, labels and slice values of a labelled CSV/JSONL/Parquet file."""
    file = Path(path)
    raws = [(r.data, f"{r.source}:{r.line}: {r.error}") for r in read_rows(file)]
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return _labelled(wf, raws, str(file), digest.hexdigest(), label_column, slice_column)


def labelled_rows(wf: Workflow, rows: Sequence[dict[str, Any]], *, label_column: str | None = None,
                  slice_column: str | None = None, name: str = "request") -> Labelled:
    """Labelled records given in memory (an API request)."""
    text = json.dumps(list(rows), sort_keys=True, default=str)  # any JSON a request holds
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return _labelled(wf, [(dict(r), "") for r in rows], name, digest, label_column, slice_column)


def _labelled(wf: Workflow, raws: list[tuple[dict[str, Any] | None, str]], name: str,
              data_hash: str, label_column: str | None, slice_column: str | None) -> Labelled:
    header: list[str] = []
    for data, _problem in raws:
        if data is not None:
            header = list(data)
            break
    if not header:
        raise ReleaseError(f"{name} has no labelled rows to evaluate on; give a file with a "
                           "header and at least one row")
    column = _label_column(wf, header, label_column)
    if slice_column and slice_column not in header:
        raise ReleaseError(f"--slice {slice_column!r} is not a column of {name}; its columns "
                           f"are {', '.join(header)}")
    rows: list[dict[str, Any] | None] = []
    labels: list[Any] = []
    slices: list[str | None] = []
    problems: list[str] = []
    for data, problem in raws:
        if data is None:
            rows.append(None)
            labels.append(None)
            slices.append(None)
            problems.append(problem)
            continue
        row = dict(data)
        label = row.get(column)
        if column not in wf.input.model_fields:
            row.pop(column, None)
        rows.append(row)
        labels.append(None if label in (None, "") else label)
        slices.append(None if not slice_column else str(data.get(slice_column)))
    if not any(label is not None for label in labels):
        raise ReleaseError(f"{name}: column {column!r} is empty in every row; there is "
                           "nothing to evaluate on")
    return Labelled(rows, labels, slices, data_hash, name, problems)


def _truth(wf: Workflow, label: Any) -> dict[str, Any] | None:
    """A label as the output it names: a JSON object as it is, else the value of the output's
    class field (or its only field)."""
    if label is None:
        return None
    if isinstance(label, dict):
        return label
    if isinstance(label, str) and label.startswith("{"):
        try:
            value = _json.loads(label)
        except ValueError:
            value = None
        if isinstance(value, dict):
            return value
    fields = list(wf.output.model_fields)
    name = wf.policy.class_field or (fields[0] if len(fields) == 1 else None)
    if name is None:
        raise ReleaseError(f"labels for {wf.output.__name__} must be JSON objects (it has "
                           f"fields {', '.join(fields)}), or set Policy(class_field=...)")
    return {name: label}


def _agrees(output: dict[str, Any] | None, truth: dict[str, Any] | None) -> bool:
    if output is None or truth is None:
        return False
    return all(str(output.get(k)) == str(v) for k, v in truth.items())


@dataclass
class _Outcome:
    correct: np.ndarray      # bool per row: answered and right
    answered: np.ndarray     # bool: an output that met the contract
    accepted: np.ndarray     # bool: automatic (accepted) under the policy
    confidence: np.ndarray   # float (NaN when no answer)
    predicted: list[str | None]
    metrics: dict[str, Any]


def _run_release(wf: Workflow, store: Store, release: Release, data: Labelled,
                 loop: LoopThread) -> _Outcome:
    model = model_for(wf, store, release)
    model.warm()
    declared = release.policy(wf.policy)
    policy, _note = policy_in_force(store, wf.name, model.version, declared)
    steps = chain([("primary", model)] + [(f"fallback:{n}", m)
                                          for n, m in enumerate(wf.fallback_chain, 1)],
                  loop, default=wf.resilience)
    predictor = Predictor(steps, OutputChecker(wf.output_contract), policy, lambda _rows: None)
    router = ConfidenceRouter(policy)
    detector = detector_for(wf.monitor, store, wf.name) if wf.monitor else None
    detectors = [detector] if detector is not None else []
    items = []
    for n, raw in enumerate(data.rows):
        key = str((raw or {}).get(wf.key) or f"row-{n + 1}")
        items.append(Item(key=key, raw=raw if raw is not None else {"_unparsed": True},
                          source=data.path, record_id=f"eval-{n + 1}"))
    t0 = time.perf_counter()
    InputValidator(wf.input_contract)(items)
    Screener(detectors)(items)
    for start in range(0, len(items), 500):
        part = items[start:start + 500]
        predictor(part)
        router(part)
    elapsed = time.perf_counter() - t0
    truth = [_truth(wf, label) for label in data.labels]
    return _outcome(wf, items, truth, data, elapsed, policy.threshold)


def _model_ms(item: Item) -> float:
    return sum(e.latency_ms or 0.0 for e in item.calls)


def _outcome(wf: Workflow, items: list[Item], truth: list[dict[str, Any] | None],
             data: Labelled, elapsed: float, threshold: float) -> _Outcome:
    labelled = np.array([t is not None for t in truth])
    answered = np.array([i.output is not None for i in items])
    correct = np.array([_agrees(i.output, t) for i, t in zip(items, truth, strict=True)])
    accepted = np.array([i.disposition == "accepted" for i in items])
    conf = np.array([i.prediction.confidence if i.prediction is not None and i.output else math.nan
                     for i in items])
    name = wf.policy.class_field or next(iter(wf.output.model_fields))
    predicted = [None if i.output is None else str(i.output.get(name)) for i in items]
    lab = labelled
    n = int(lab.sum())
    ece, bins = reliability(conf[lab & answered].tolist(), correct[lab & answered].tolist())
    auto = lab & accepted
    latencies = np.array([_model_ms(i) for i in items])
    cost = float(sum(i.cost_usd for i in items))
    metrics: dict[str, Any] = {
        "rows": len(items), "labelled": n,
        "unreadable_rows": sum(1 for r in data.rows if r is None),
        "dispositions": dict(Counter(i.disposition or "undecided" for i in items)),
        "accuracy": _share(correct[lab]),
        "answered": _share(answered[lab]),
        "accuracy_answered": _share(correct[lab & answered]),
        "coverage": _share(accepted[lab]),
        "auto_accuracy": _share(correct[auto]),
        "auto_accepted": int(auto.sum()),
        "threshold": threshold,
        "ece": ece, "reliability": bins,
        "per_class": _per_class(items, truth, name, lab),
        "model_ms": {"p50": _pct(latencies, 50), "p95": _pct(latencies, 95)},
        "cost_usd": round(cost, 6), "cost_per_record": cost / len(items) if items else None,
        "elapsed_s": round(elapsed, 3),
    }
    if any(s is not None for s in data.slices):
        metrics["slices"] = _slices(data.slices, lab, correct, accepted)
    return _Outcome(correct, answered, accepted, conf, predicted, metrics)


def _share(mask: np.ndarray) -> float | None:
    return float(mask.mean()) if len(mask) else None


def _pct(values: np.ndarray, q: float) -> float | None:
    return float(np.percentile(values, q)) if len(values) else None


def _per_class(items: list[Item], truth: list[dict[str, Any] | None], name: str,
               lab: np.ndarray) -> list[dict[str, Any]]:
    """Precision and recall per class of the output's class field."""
    actual = [None if t is None else str(t.get(name)) for t in truth]
    guess = [None if i.output is None else str(i.output.get(name)) for i in items]
    support: Counter[str] = Counter(a for a, keep in zip(actual, lab, strict=True)
                                    if keep and a is not None)
    said: Counter[str] = Counter(g for g, keep in zip(guess, lab, strict=True)
                                 if keep and g is not None)
    hits: Counter[str] = Counter(a for a, g, keep in zip(actual, guess, lab, strict=True)
                                 if keep and a is not None and a == g)
    out = []
    for cls in sorted(set(support) | set(said)):
        out.append({"class": cls, "support": support[cls], "predicted": said[cls],
                    "precision": hits[cls] / said[cls] if said[cls] else None,
                    "recall": hits[cls] / support[cls] if support[cls] else None})
    return out


def _slices(slices: list[str | None], lab: np.ndarray, correct: np.ndarray,
            accepted: np.ndarray) -> list[dict[str, Any]]:
    values = np.array([s if s is not None else "(none)" for s in slices], dtype=object)
    out = []
    for value in sorted(set(values.tolist())):
        m = (values == value) & lab
        out.append({"slice": value, "labelled": int(m.sum()), "accuracy": _share(correct[m]),
                    "coverage": _share(accepted[m]), "auto_accuracy": _share(correct[m & accepted])})
    return out


def _compare(a: _Outcome, b: _Outcome, lab: np.ndarray, confidence: float) -> dict[str, Any]:
    """Paired comparison of release A against B on the same labelled rows."""
    ca, cb = a.correct[lab], b.correct[lab]
    only_a, only_b = int((ca & ~cb).sum()), int((cb & ~ca).sum())
    p = mcnemar_exact(only_a, only_b)
    auto_a = np.where(a.accepted[lab], ca.astype(float), np.nan)
    auto_b = np.where(b.accepted[lab], cb.astype(float), np.nan)
    auto = bootstrap_diff(auto_a, auto_b, "auto_accuracy", confidence)
    cover = bootstrap_diff(a.accepted[lab].astype(float), b.accepted[lab].astype(float),
                           "coverage", confidence)
    alpha = 1 - confidence
    acc_diff = float(ca.mean() - cb.mean()) if len(ca) else 0.0
    worse = (p < alpha and only_b > only_a) or (not math.isnan(auto.high) and auto.high < 0)
    better = (p < alpha and only_a > only_b) or (not math.isnan(auto.low) and auto.low > 0)
    if worse:
        verdict = "worse"
    elif better:
        verdict = "better"
    else:
        verdict = "no detectable difference"
    return {"verdict": verdict, "confidence": confidence,
            "accuracy_difference": acc_diff,
            "mcnemar": {"release_only_right": only_a, "against_only_right": only_b,
                        "p_value": p},
            "auto_accuracy_difference": auto.as_dict(), "coverage_difference": cover.as_dict(),
            "disagreements": int(sum(1 for x, y, keep in zip(a.predicted, b.predicted, lab,
                                                             strict=True) if keep and x != y))}


@dataclass
class EvalReport:
    """What ``keel eval`` found: per release metrics, the comparison, the stored run's id."""

    workflow: str
    data: dict[str, Any]
    releases: dict[str, dict[str, Any]]
    comparison: dict[str, Any] | None
    run_id: str
    elapsed_s: float

    def as_dict(self) -> dict[str, Any]:
        return {"workflow": self.workflow, "data": self.data, "releases": self.releases,
                "comparison": self.comparison, "eval_run": self.run_id,
                "elapsed_s": round(self.elapsed_s, 3)}


def _pick(wf: Workflow, store: Store, name: str | None) -> Release:
    if name is None:  # the champion; before any run, what the workflow file declares
        return champion_now(store, wf.name) or register(wf, store)[0]
    if name in ("champion", "challenger"):
        found = by_alias(store, wf.name, name)
        if found is None:
            raise ReleaseError(f"{wf.name} has no {name} now (`keel releases list`)")
        return found
    return get(store, wf.name, name)


def evaluate(wf: Workflow, store: Store, labels: str | Path | Labelled, *,
             release: str | None = None, against: str | None = None,
             label_column: str | None = None, slice_column: str | None = None,
             confidence: float = 0.95) -> EvalReport:
    """Evaluate ``release`` (default: the champion), and with ``against`` compare the two on
    the same rows. The result is stored as an eval run (with the data's hash)."""
    t0 = time.perf_counter()
    data = labels if isinstance(labels, Labelled) else read_labelled(
        wf, labels, label_column=label_column, slice_column=slice_column)
    a = _pick(wf, store, release)
    b = _pick(wf, store, against) if against is not None else None
    if b is not None and b.id == a.id:
        raise ReleaseError(f"--release and --against are the same release ({a.name})")
    loop = LoopThread()
    try:
        out_a = _run_release(wf, store, a, data, loop)
        out_b = _run_release(wf, store, b, data, loop) if b is not None else None
    finally:
        loop.close()
    lab = np.array([label is not None for label in data.labels])
    comparison = _compare(out_a, out_b, lab, confidence) if out_b is not None else None
    if comparison is not None and b is not None:
        comparison.update(release=a.name, against=b.name)
    per = {a.name: {"release_id": a.id, **out_a.metrics}}
    if b is not None and out_b is not None:
        per[b.name] = {"release_id": b.id, **out_b.metrics}
    info = {"path": data.path, "sha256": data.data_hash, "rows": len(data.rows),
            "labelled": int(lab.sum()), "problems": data.problems[:20]}
    run_id = sql.save_eval_run(store, {
        "workflow": wf.name, "release_id": a.id, "against_id": b.id if b else None,
        "data_hash": data.data_hash, "rows": len(data.rows),
        "metrics": {"data": info, "releases": per, "comparison": comparison}})
    return EvalReport(wf.name, info, per, comparison, run_id, time.perf_counter() - t0)
