"""keel calibrate: certify a confidence threshold from labels and make it the routing policy.

Labels come from a file (input columns plus the right output) or from the store's review and
audit decisions. The workflow's current model answers every labelled input again, so the
threshold is certified for the model that will use it, whatever model the labels came from.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from keel._prediction import Prediction
from keel.errors import CalibrationError, ConfigError, ModelError
from keel.resilience import LoopThread, build_caller
from keel.review import _risk
from keel.sources import read_rows
from keel.store import Store
from keel.store import reviews as sql
from keel.workflow import NEVER, Workflow

_BATCH = 256


@dataclass
class Example:
    input: BaseModel
    label: dict[str, Any] | None     # None: a reviewer rejected every output


@dataclass
class CalibrationResult:
    workflow: str
    model_version: str
    source: str
    method: str
    target_accuracy: float
    delta: float
    labels: int                       # examples read
    used: int                         # examples with a model answer to judge
    threshold: float | None
    per_class: dict[str, float | None] = field(default_factory=dict)
    class_field: str | None = None
    coverage: float = 0.0             # share of the labelled inputs that would be automated
    accepted: int = 0
    errors: int = 0
    error_bound: float = 1.0          # with prob >= 1 - delta, error above threshold <= this
    skipped: dict[str, int] = field(default_factory=dict)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_min_labels: int | None = None  # per-class: labels a class needs for its own threshold
    version: str | None = None        # the stored routing policy, when activated
    warnings: list[str] = field(default_factory=list)
    score: str = "confidence"         # what the threshold is on (an LLM's confidence strategy)
    cost_usd: float = 0.0             # what the model's answers to the labels cost
    cost_unknown: int = 0             # answers from a model with no known price
    uncertified_threshold: float | None = None  # lowest threshold at the target on these labels
    uncertified_coverage: float = 0.0  # what it would automate, with no guarantee
    needed_accuracy: float | None = None  # observed accuracy the bound needs above threshold
    evidence: dict[str, Any] | None = field(default=None, repr=False)  # for --html; not kept

    @property
    def accuracy_bound(self) -> float:
        return 1.0 - self.error_bound

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "evidence"}
        out["threshold"] = None if self.threshold in (None, NEVER) else self.threshold
        out["accuracy_bound"] = self.accuracy_bound
        out["empirical_accuracy"] = (1 - self.errors / self.accepted) if self.accepted else None
        out["coverage_left"] = max(0.0, self.uncertified_coverage - self.coverage)
        out["margin"] = (None if self.needed_accuracy is None
                         else self.needed_accuracy - self.target_accuracy)
        return out


# -- labelled examples ---------------------------------------------------------------------
def _input_of(wf: Workflow, data: dict[str, Any]) -> BaseModel | None:
    fields = wf.input_contract.fields
    raw = {f: data[f"input.{f}"] if f"input.{f}" in data else data.get(f) for f in fields
           if f in data or f"input.{f}" in data}
    value, problems = wf.input_contract.validate(raw)
    return None if problems else value


def _label_columns(wf: Workflow, columns: Sequence[str],
                   label_column: str | None) -> dict[str, str]:
    """Which column holds each output field."""
    outs = list(wf.output_contract.fields)
    if label_column is not None:
        if len(outs) != 1:
            raise ConfigError(f"--label-column works for a one-field output; {wf.output.__name__} "
                              f"has {outs}: name columns label.<field> instead")
        if label_column not in columns:
            raise ConfigError(f"label column {label_column!r} is not in the file; "
                              f"columns are {list(columns)}")
        return {outs[0]: label_column}
    found = {f: (f"label.{f}" if f"label.{f}" in columns else f) for f in outs}
    missing = [c for c in found.values() if c not in columns]
    if missing:
        raise ConfigError(f"the labels file has no column for {missing}; name the right output "
                          f"in columns label.<field> (or <field>), or pass --label-column")
    return found


def examples_from_file(wf: Workflow, path: str | Path, label_column: str | None,
                       skipped: Counter[str]) -> list[Example]:
    out: list[Example] = []
    mapping: dict[str, str] | None = None
    for row in read_rows(path):
        if row.data is None:
            skipped["unreadable row"] += 1
            continue
        if mapping is None:
            mapping = _label_columns(wf, list(row.data), label_column)
        value = _input_of(wf, row.data)
        if value is None:
            skipped["input breaks the input contract"] += 1
            continue
        if str(row.data.get("decision", "")).strip() == "reject":
            out.append(Example(value, None))
            continue
        label, problems = wf.output_contract.validate({f: row.data[c] for f, c in mapping.items()})
        if label is None or problems:
            skipped["label breaks the output contract"] += 1
            continue
        out.append(Example(value, label.model_dump(mode="json")))
    return out


def examples_from_store(wf: Workflow, store: Store, skipped: Counter[str],
                        every: bool = False) -> list[Example]:
    """The store's labels from the uniform audit sample, or (``every``) all of them, reviews
    too (the latest label per record)."""
    latest: dict[str, dict[str, Any]] = {}
    for row in sql.labels(store, wf.name):
        if not row["sampled"] and not every:
            skipped["not in the uniform audit sample"] += 1
            continue
        if row["record_id"] in latest:
            skipped["superseded by a later label"] += 1
        latest[row["record_id"]] = row
    out = []
    for row in latest.values():
        value = _input_of(wf, row["input"])
        if value is None:
            skipped["input breaks the input contract"] += 1
            continue
        out.append(Example(value, row["label"]))
    return out


# -- the model's answers ---------------------------------------------------------------------
def _predict(wf: Workflow, inputs: list[BaseModel]) -> list[Any]:
    """The model's answers through its resilience layers (retries, rate limits, timeout; no
    breaker): an endpoint that limits its rate answers calibration as it answers traffic."""
    loop = LoopThread()
    loop.on_close.append(wf.model.aclose)
    caller = build_caller(wf.model, resilience=wf.resilience, loop=loop)
    out: list[Any] = []
    try:
        for start in range(0, len(inputs), _BATCH):
            out.extend(r.outcome for r in caller(inputs[start:start + _BATCH]))
    finally:
        loop.close()
    return out


def judge(wf: Workflow, examples: list[Example], skipped: Counter[str],
          spent: list[float] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """(confidence, model right?, output) for each example the model answered validly;
    ``spent`` gets [cost in USD, calls whose cost is unknown]."""
    conf, right, outputs = [], [], []
    cost, unknown = 0.0, 0
    for ex, outcome in zip(examples, _predict(wf, [e.input for e in examples]), strict=True):
        usage = outcome.usage if isinstance(outcome, (Prediction, ModelError)) else None
        if usage is not None:
            cost += usage.cost_usd
            unknown += not usage.priced
        if not isinstance(outcome, Prediction):
            skipped["model failed (never automated)"] += 1
            continue
        value, problems = wf.output_contract.validate(outcome.output)
        if value is None or problems:
            skipped["output breaks the contract (never automated)"] += 1
            continue
        out = value.model_dump(mode="json")
        conf.append(outcome.confidence)
        right.append(ex.label is not None and out == ex.label)
        outputs.append(out)
    if spent is not None:
        spent[:] = [cost, unknown]
    return np.asarray(conf, dtype=np.float64), np.asarray(right, dtype=bool), outputs


# -- calibrate -------------------------------------------------------------------------------
def calibrate(wf: Workflow, store: Store, *, labels_file: str | Path | None = None,
              label_column: str | None = None, target_accuracy: float = 0.98,
              delta: float = 0.05, method: str = "binomial", per_class: bool = False,
              class_field: str | None = None, activate: bool = True,
              all_labels: bool = False, evidence: bool = False) -> CalibrationResult:
    """Certify a threshold (or per-class thresholds) and, with ``activate``, put it in force.

    ``all_labels``: every label the store holds (reviews as well as the audit sample) counts,
    beside the file's if one is given; a record labelled in both counts once, from the file.
    ``evidence``: keep what `keel calibrate --html` draws (the curve, the classes).
    """
    _check_args(target_accuracy, delta, method)
    skipped: Counter[str] = Counter()
    examples: list[Example] = []
    source: list[str] = []
    if labels_file is not None:
        examples = examples_from_file(wf, labels_file, label_column, skipped)
        source.append(f"file:{labels_file}")
    # the file's records only: the store's labels are of traffic by nature
    warnings = _overlap_warning(wf, store, examples) if labels_file is not None else []
    if labels_file is None or all_labels:
        examples = _merge(wf, examples, examples_from_store(wf, store, skipped, all_labels))
        source.append("store:all-labels" if all_labels else "store:audit-sample")
    wf.model.warm()
    spent: list[float] = []
    conf, right, outputs = judge(wf, examples, skipped, spent)
    strategy = getattr(wf.model, "confidence", None)
    res = CalibrationResult(workflow=wf.name, model_version=wf.model.version,
                            source="+".join(source),
                            method=method, target_accuracy=target_accuracy, delta=delta,
                            labels=len(examples), used=int(conf.size), threshold=None,
                            skipped=dict(skipped), warnings=warnings,
                            score=strategy.kind if strategy is not None else "confidence",
                            cost_usd=spent[0], cost_unknown=int(spent[1]))
    if per_class:
        _per_class(wf, res, conf, right, outputs, class_field)
    else:
        _global(res, conf, right, labels_file is None and not all_labels, wf.policy.audit_rate)
    _left_on_the_table(res, conf, right)
    if evidence:
        res.evidence = _evidence(wf, res, conf, right, outputs, class_field)
    if activate:
        res.version = sql.save_routing_policy(store, wf.name, _params(res), res.as_dict())
    return res


def _merge(wf: Workflow, first: list[Example], more: list[Example]) -> list[Example]:
    keys = {str(getattr(e.input, wf.key)) for e in first}
    return first + [e for e in more if str(getattr(e.input, wf.key)) not in keys]


def _overlap_warning(wf: Workflow, store: Store, examples: list[Example]) -> list[str]:
    """Labelled records that are also traffic this store decided: the guarantee would then be
    checked on the very records it was certified on."""
    keys = [str(getattr(e.input, wf.key)) for e in examples]
    seen = sum(len(store.lookup(wf.name, keys[i:i + 500])) for i in range(0, len(keys), 500))
    if not seen:
        return []
    return [f"{seen:,} of the {len(keys):,} labelled records were also decided as traffic in "
            "this store: realized accuracy measured on them overstates the guarantee. Calibrate "
            "on labelled records kept apart from the traffic (a held-out file)."]


def _check_args(target: float, delta: float, method: str) -> None:
    if not 0.5 <= target < 1.0:
        raise ConfigError(f"--target-accuracy must be in [0.5, 1), got {target}")
    if not 0.0 < delta < 0.5:
        raise ConfigError(f"--delta must be in (0, 0.5), got {delta}")
    if method not in _risk.METHODS:
        raise ConfigError(f"--method must be one of {', '.join(_risk.METHODS)}, got {method!r}")


def _global(res: CalibrationResult, conf: np.ndarray, right: np.ndarray, from_store: bool,
            audit_rate: float) -> None:
    choice = _risk.learn_then_test(conf, right, target_accuracy=res.target_accuracy,
                                   delta=res.delta, method=res.method)
    if choice.threshold is None:
        hint = (f"; from the store only the uniform audit sample counts (audit_rate "
                f"{audit_rate:g}): pass --labels FILE or raise audit_rate" if from_store else
                "; label more examples, lower --target-accuracy, or improve the model")
        raise CalibrationError(f"cannot calibrate {res.workflow}: {choice.refusal}{hint}")
    res.threshold, res.accepted, res.errors = choice.threshold, choice.accepted, choice.errors
    res.coverage, res.error_bound = choice.coverage, choice.bound
    res.groups["*"] = choice.as_dict()


def _left_on_the_table(res: CalibrationResult, conf: np.ndarray, right: np.ndarray) -> None:
    """What a threshold picked on the same labels with no guarantee would automate, and the
    observed accuracy the bound needs above the certified threshold (its margin)."""
    res.uncertified_threshold, res.uncertified_coverage = _risk.uncertified_point(
        conf, right, res.target_accuracy)
    if res.accepted:
        res.needed_accuracy = _risk.needed_accuracy(res.method, res.accepted,
                                                    res.target_accuracy, res.delta)


def _evidence(wf: Workflow, res: CalibrationResult, conf: np.ndarray, right: np.ndarray,
              outputs: list[dict[str, Any]], class_field: str | None) -> dict[str, Any]:
    from keel.review import _report

    fields = list(wf.output_contract.fields)
    name = res.class_field or class_field or (fields[0] if len(fields) == 1 else None)
    classes = [str(o.get(name)) if name else json.dumps(o, sort_keys=True) for o in outputs]
    lam = np.asarray([_threshold(res, c) for c in classes], dtype=np.float64)
    return _report.evidence(conf, right, classes, lam, res)


def _per_class(wf: Workflow, res: CalibrationResult, conf: np.ndarray, right: np.ndarray,
               outputs: list[dict[str, Any]], class_field: str | None) -> None:
    fields = list(wf.output_contract.fields)
    name = class_field or (fields[0] if len(fields) == 1 else None)
    if name is None or name not in fields:
        raise ConfigError(f"per-class thresholds need the output field that names the class; "
                          f"pass --class-field (one of {fields})")
    predicted = [str(o.get(name)) for o in outputs]
    grouped = _risk.per_class_thresholds(conf, right, predicted, delta=res.delta,
                                         target_accuracy=res.target_accuracy, method=res.method)
    assert grouped.rest is not None
    choices = [*grouped.groups.values(), grouped.rest]
    if all(c.threshold is None for c in choices):
        raise CalibrationError(f"cannot calibrate {res.workflow} per class: {grouped.rest.refusal}")
    res.class_field, res.per_class = name, dict(grouped.per_class)
    res.class_min_labels = grouped.class_min_labels
    res.threshold = grouped.rest.threshold if grouped.rest.threshold is not None else NEVER
    lam = np.asarray([_threshold(res, p) for p in predicted], dtype=np.float64)
    auto = conf >= lam
    res.accepted, res.errors = int(auto.sum()), int((auto & ~right).sum())
    res.coverage = float(auto.mean()) if auto.size else 0.0
    res.error_bound = max(c.bound for c in choices if c.threshold is not None)
    res.groups = {**{k: v.as_dict() for k, v in grouped.groups.items()},
                  "*rest": grouped.rest.as_dict(), "delta_each": {"value": grouped.delta_each}}


def _threshold(res: CalibrationResult, cls: str) -> float:
    if cls in res.per_class:
        value = res.per_class[cls]
        return NEVER if value is None else value
    return res.threshold if res.threshold is not None else NEVER


def _params(res: CalibrationResult) -> dict[str, Any]:
    return {"threshold": None if res.threshold in (None, NEVER) else res.threshold,
            "per_class": res.per_class, "class_field": res.class_field,
            "target_accuracy": res.target_accuracy, "delta": res.delta, "method": res.method,
            "model_version": res.model_version, "calibrated_at": time.time()}


def scored_labels(wf: Workflow, store: Store, labels_file: str | Path | None = None,
                  label_column: str | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """The current model's (confidence, right?) on labelled examples: a labels file, else the
    store's uniform audit sample; and where they came from."""
    skipped: Counter[str] = Counter()
    if labels_file is not None:
        examples = examples_from_file(wf, labels_file, label_column, skipped)
        source = f"file:{labels_file}"
    else:
        examples = examples_from_store(wf, store, skipped)
        source = "store:audit-sample"
    wf.model.warm()
    conf, right, _outputs = judge(wf, examples, skipped)
    return conf, right, source
