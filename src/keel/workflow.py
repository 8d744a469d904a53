"""The declaration of a workflow: contracts, model, fallback, routing policy, alert rules,
drift monitoring, owners. Plain settings: nothing here runs a record."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from keel._money import Cost
from keel.contracts import Check, Contract, Unique
from keel.errors import WorkflowLoadError
from keel.models import FunctionModel, Model, Rules
from keel.redact import STORAGE_POLICIES
from keel.resilience import Resilience

# -- routing policy -------------------------------------------------------------------------
#: A threshold no confidence reaches: this class (or everything) always goes to a person.
NEVER = math.inf


@dataclass(frozen=True)
class Policy:
    """Accept when confidence >= the threshold (per class when given), else send to review.

    A threshold of ``NEVER`` (infinity; ``None`` in a per-class map) automates nothing.

    ``audit_rate`` is the share of auto-accepted decisions also sent to review to measure real
    accuracy (chosen by a hash of the key, so a replay picks the same records).
    ``on_model_failure`` is ``"fail"`` (record ends ``failed``, replayable) or ``"review"``.
    ``review_sla_s`` gives the due time per review reason.
    ``second_review_above``: when a reviewer disagrees with a model output at least this
    confident, a second reviewer must confirm before the record is decided (None: never).
    ``on_void``: what a calibrated policy does once the audits of its own decisions contradict
    its guarantee (``keel status`` says VOID): ``"keep"`` automates as before (the alert and
    the status say so), ``"review"`` sends every answered record to a person with the reason
    ``guarantee_void`` until ``keel calibrate`` stores a policy whose guarantee holds.
    """

    threshold: float = 0.8
    per_class: dict[str, float | None] = field(default_factory=dict)
    class_field: str | None = None
    audit_rate: float = 0.02
    on_model_failure: str = "fail"
    review_sla_s: dict[str, float] = field(
        default_factory=lambda: {
            "output_invalid": 4 * 3600.0,
            "model_failed": 4 * 3600.0,
            "out_of_distribution": 8 * 3600.0,
            "low_confidence": 24 * 3600.0,
            "audit_sample": 72 * 3600.0,
            "release_check": 24 * 3600.0,
            "prototype": 72 * 3600.0,
            "guarantee_void": 24 * 3600.0,
            "second_review": 24 * 3600.0,
            "manual": 24 * 3600.0,
        }
    )
    review_priority: dict[str, int] = field(
        default_factory=lambda: {
            "output_invalid": 80,
            "model_failed": 80,
            "out_of_distribution": 60,
            "low_confidence": 50,
            "audit_sample": 10,
            "release_check": 40,
            "prototype": 20,
            "guarantee_void": 50,
            "second_review": 70,
            "manual": 70,
        }
    )
    second_review_above: float | None = None
    #: "declared": the workflow file's own policy; "<workflow>@<n>": one `keel calibrate` stored
    version: str = "declared"
    #: send every answered record to a person with this reason, whatever its confidence (a
    #: gated workflow in its ``prototype`` stage: nothing is decided automatically)
    review_all: str | None = None
    on_void: str = "keep"

    def __post_init__(self) -> None:
        if not (0.0 <= self.threshold <= 1.0 or self.threshold == NEVER):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit_rate must be in [0, 1], got {self.audit_rate}")
        if self.on_model_failure not in ("fail", "review"):
            raise ValueError("on_model_failure must be 'fail' or 'review'")
        if self.on_void not in ("keep", "review"):
            raise ValueError("on_void must be 'keep' or 'review'")

    def threshold_for(self, output: dict[str, Any] | None) -> float:
        if self.per_class and self.class_field and output is not None:
            label = output.get(self.class_field)
            if label is not None and str(label) in self.per_class:
                value = self.per_class[str(label)]
                return NEVER if value is None else value
        return self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "per_class": self.per_class,
            "class_field": self.class_field,
            "audit_rate": self.audit_rate,
            "on_model_failure": self.on_model_failure,
            "second_review_above": self.second_review_above,
            "on_void": self.on_void,
            "review_sla_s": self.review_sla_s,
            "review_priority": self.review_priority,
            "version": self.version,
        }


# -- alert rules ------------------------------------------------------------------------------
#: What a rule can watch. Each is computed from the store over the rule's window, except
#: ``drift_score``: the share of drift checks the latest drift report flagged (fed by
#: ``keel.telemetry.record_drift``, which ``keel serve``'s drift monitor calls).
#: ``queue_age_s``: the age of the oldest record queued for workers (``keel submit``).
#: ``guarantee_void``: 1 once the audits of the calibrated policy's decisions contradict its
#: guarantee (the sequential test `keel status` shows), else 0.
#: ``budget_burn_rate``: the day budget's spend over its share of the day gone (keel.Cost).
SIGNALS = ("error_rate", "fallback_rate", "failure_rate", "p95_latency_ms",
           "review_backlog_age_s", "realized_accuracy", "daily_cost_usd", "drift_score",
           "queue_age_s", "guarantee_void", "budget_burn_rate")
_ONE_DAY = 86400.0


@dataclass(frozen=True)
class AlertRule:
    """Fire when ``signal`` goes ``above`` (or ``below``) a threshold, and stays there.

    ``clear`` is where a firing alert resolves (default: 20% back from the threshold).
    ``window_s`` is the look-back of each evaluation, ``for_s`` how long a breach must last
    before it fires, ``min_count`` how many observations the window needs to say anything.
    """

    signal: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None
    window_s: float = 900.0
    for_s: float = 0.0
    min_count: int = 20
    name: str | None = None
    severity: str = "warning"

    def __post_init__(self) -> None:
        if self.signal not in SIGNALS:
            raise ValueError(f"unknown alert signal {self.signal!r}; use one of {', '.join(SIGNALS)}")
        if (self.above is None) == (self.below is None):
            raise ValueError(f"alert rule on {self.signal}: give exactly one of above= or below=")
        limit = self.threshold
        if self.clear is None:
            object.__setattr__(self, "clear", self._default_clear(limit))
        elif not self.cleared(self.clear) or self.breached(self.clear):
            raise ValueError(f"alert rule on {self.signal}: clear={self.clear} must be on the "
                             f"healthy side of the threshold {limit}")
        if self.window_s <= 0 or self.for_s < 0 or self.min_count < 0:
            raise ValueError("window_s must be > 0, for_s and min_count >= 0")

    def _default_clear(self, limit: float) -> float:
        if self.above is not None:
            return limit * 0.8
        return limit + 0.2 * (1.0 - limit) if limit < 1.0 else limit * 1.2

    @property
    def threshold(self) -> float:
        return float(self.above if self.above is not None else self.below)  # type: ignore[arg-type]

    @property
    def rule_name(self) -> str:
        if self.name:
            return self.name
        side = "above" if self.above is not None else "below"
        return f"{self.signal}_{side}_{self.threshold:g}"

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.above is not None else value < self.threshold

    def cleared(self, value: float) -> bool:
        assert self.clear is not None
        return value <= self.clear if self.above is not None else value >= self.clear

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AlertRule:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule("error_rate", above=0.2, clear=0.1),
    AlertRule("fallback_rate", above=0.3, clear=0.15),
    AlertRule("failure_rate", above=0.05, clear=0.02),
    AlertRule("p95_latency_ms", above=5000.0, clear=3000.0),
    AlertRule("review_backlog_age_s", above=_ONE_DAY, clear=_ONE_DAY / 2, min_count=1),
    AlertRule("realized_accuracy", below=0.9, clear=0.92, window_s=7 * _ONE_DAY),
    AlertRule("guarantee_void", above=0.5, min_count=1),  # audits contradict the guarantee
    AlertRule("drift_score", above=0.0, min_count=1),  # any check the drift monitor flags
)


# -- drift monitoring -------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftMonitor:
    """Declares drift monitoring on a workflow: ``Workflow(..., monitor=keel.DriftMonitor())``.

    With ``ood=True`` the screen stage scores each record against the workflow's newest
    stored reference profile named ``reference`` (built by ``keel drift reference``) and
    sends out-of-distribution records to review. Without a stored profile it does nothing,
    and it picks up a newer profile within ``refresh_s`` seconds. Under ``keel serve`` it
    also checks the recent window for drift on a schedule (``check_every_s``).
    """

    reference: str = "reference"
    ood: bool = True
    fields: tuple[str, ...] | None = None
    refresh_s: float = 60.0
    #: ``keel serve`` compares the last ``check_window`` of decided records with the
    #: reference every ``check_every_s`` seconds (0: never) and publishes the scores as
    #: ``keel_drift_score`` gauges for /metrics and the ``drift_score`` alert rule.
    check_every_s: float = 600.0
    check_window: str = "1h"


# -- releases: how a challenger is tried, and when keel retrains ----------------------------------
@dataclass(frozen=True)
class Rollout:
    """How a challenger release is tried on live traffic (``keel rollout start``).

    ``steps`` are the canary's shares of traffic in percent (0 is a shadow step: the
    challenger answers every record, nothing it says is acted on). A step ends when its
    evidence says so, judged after at least ``min_decisions`` of the challenger's decisions
    in the step and ``min_reviewed`` records people reviewed (counted over the whole
    rollout): *promote* (next step, or the champion alias at the last), *roll back* (at
    once), or *hold*. ``canary_audit_rate`` replaces the policy's audit rate for the
    challenger's automatic decisions, so reviewers see enough of them.

    Agreement with reviewers is compared by an anytime-valid confidence sequence at
    ``confidence``: valid however often it is looked at. The challenger is rolled back when
    it is surely less often right than the champion on the records people reviewed; it is
    promoted when it is surely not worse by more than ``tolerance``. Guard rails roll back
    on a failed-call rate ``max_error_rate_increase`` above the champion's, a mean latency
    over ``max_latency_ratio`` times, or a cost per decision over ``max_cost_ratio`` times
    the champion's. ``auto_canary``: after a passed shadow step the canary starts on its
    own; otherwise it waits for a person (``keel rollout resume``).
    ``check_every_s``: how often a running ``keel run``/``keel serve`` looks at the evidence.
    """

    steps: tuple[float, ...] = (5.0, 25.0, 50.0, 100.0)
    min_decisions: int = 100
    min_reviewed: int = 30
    canary_audit_rate: float = 0.25
    confidence: float = 0.95
    tolerance: float = 0.05
    max_error_rate_increase: float = 0.05
    max_latency_ratio: float = 3.0
    max_cost_ratio: float = 1.5
    auto_canary: bool = False
    check_every_s: float = 5.0

    def __post_init__(self) -> None:
        steps = tuple(float(s) for s in self.steps)
        object.__setattr__(self, "steps", steps)
        if not steps or any(not 0.0 <= s <= 100.0 for s in steps):
            raise ValueError(f"rollout steps are percentages in [0, 100], got {list(steps)}")
        if list(steps) != sorted(steps) or len(set(steps)) != len(steps):
            raise ValueError(f"rollout steps must rise, e.g. 5,25,50,100; got {list(steps)}")
        if not 0.0 <= self.canary_audit_rate <= 1.0:
            raise ValueError("canary_audit_rate must be in [0, 1]")
        if not 0.5 < self.confidence < 1.0:
            raise ValueError("confidence must be in (0.5, 1), e.g. 0.95")
        if self.min_decisions < 1 or self.min_reviewed < 0 or self.tolerance < 0:
            raise ValueError("min_decisions >= 1, min_reviewed >= 0 and tolerance >= 0")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rollout:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class Retrain:
    """When keel retrains on its own (``keel serve``, and after each ``keel run``).

    A trigger: ``after_labels`` new labels from reviews and audits since the last
    candidate, a drift alert firing (``on_drift``), or ``every_s`` seconds since it. The
    candidate is trained on the labels outside a held-out share (``holdout``, chosen by a
    hash of the key, so a record stays on its side), evaluated against the champion on the
    held-out ones, and, when not worse, tried in a rollout: a shadow step, then the canary
    where ``Rollout.auto_canary`` allows it. Each step is a release event with its evidence.
    """

    after_labels: int | None = 500
    on_drift: bool = False
    every_s: float | None = None
    holdout: float = 0.3
    shadow: bool = True

    def __post_init__(self) -> None:
        if self.after_labels is None and not self.on_drift and self.every_s is None:
            raise ValueError("Retrain needs a trigger: after_labels, on_drift or every_s")
        if not 0.0 < self.holdout < 1.0:
            raise ValueError("holdout is the share of labels kept for evaluation, in (0, 1)")


# -- gates: construction stages and what each asks for ----------------------------------------------
#: A workflow's construction stages, in order.
STAGES = ("prototype", "mvp", "production")
_DAY = 86400.0


@dataclass(frozen=True)
class Criterion:
    """A readiness criterion of a team's own, checked by ``keel gate`` beside the defaults.

    ``check(store, workflow)`` returns True (pass), False (fail), None (unknown), or a tuple
    (one of those, a line of detail). It may read anything in the store (``keel.store``'s
    public modules). ``section`` is one of Data, Model, Operations, Monitoring, People.
    """

    id: str
    title: str
    check: Callable[[Any, Any], Any]
    section: str = "Operations"
    needed_for: str = "production"
    fix: str = ""

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"criterion {self.id}: section {self.section!r}; use one of "
                             f"{', '.join(SECTIONS)}")
        if self.needed_for not in STAGES[1:]:
            raise ValueError(f"criterion {self.id}: needed_for is 'mvp' or 'production'")


#: The sections a readiness report scores (ML Test Score style: the minimum section counts).
SECTIONS = ("Data", "Model", "Operations", "Monitoring", "People")


@dataclass(frozen=True)
class MvpLimits:
    """An MVP is bounded, controlled real use: at most ``daily_volume`` records decided a day
    (beyond it records are quarantined with the reason, and replay once the day turns), only
    the input files matching ``sources`` (glob patterns; empty: any) and the API keys named in
    ``api_keys`` (empty: any submitter) may submit, and ``audit_rate`` of automatic
    decisions is audited (at least)."""

    daily_volume: int | None = 1000
    sources: tuple[str, ...] = ()
    api_keys: tuple[str, ...] = ()
    audit_rate: float = 0.10

    def __post_init__(self) -> None:
        if self.daily_volume is not None and self.daily_volume < 1:
            raise ValueError("daily_volume is at least 1 (None: no cap)")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError("audit_rate must be in [0, 1]")


@dataclass(frozen=True)
class Gates:
    """Construction stages for a workflow: ``Workflow(..., gates=keel.Gates())``.

    A gated workflow starts as a ``prototype`` (nothing decided automatically: every record
    goes to a person), becomes an ``mvp`` (automatic within the calibrated guarantee, bounded
    by ``mvp``) and then ``production`` (the declared policy, under change control: the
    workflow file that runs must be a registered release), each step through ``keel promote``
    once ``keel gate`` says it is ready. The numbers below are what the default criteria ask;
    ``criteria`` adds a team's own, ``not_applicable`` sets a default one aside with a reason.
    """

    target_accuracy: float = 0.98
    min_eval_records: int = 300
    min_audits: int = 30
    profile_max_age_s: float = 30 * _DAY
    eval_max_age_s: float = 90 * _DAY
    drill_max_age_s: float = 30 * _DAY
    admin_key_max_age_s: float = 90 * _DAY
    #: where alerts go (a webhook URL: Slack-compatible); ``keel serve`` and
    #: ``keel alerts check`` send there when no ``--alert-webhook`` is given
    alerts_to: str | None = None
    mvp: MvpLimits = field(default_factory=MvpLimits)
    criteria: Sequence[Criterion] = ()
    not_applicable: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.5 < self.target_accuracy < 1.0:
            raise ValueError("target_accuracy is in (0.5, 1), e.g. 0.98")
        for name, why in self.not_applicable.items():
            if not str(why).strip():
                raise ValueError(f"not_applicable[{name!r}] needs a reason")


# -- the workflow -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Owners:
    """Who answers for the workflow: the business owner and the support owner."""

    business: str
    support: str
    escalation: str | None = None


def _as_model(item: Model | Callable[[Any], Any]) -> Model:
    if isinstance(item, Model):
        return item
    if callable(item):
        return Rules(item)
    raise TypeError(f"a fallback must be a keel Model or a function, got {type(item).__name__}")


#: When model answers are committed (see :class:`Workflow`).
CHECKPOINTS = ("auto", "always")

Fallbacks = Model | Callable[[Any], Any] | Sequence[Model | Callable[[Any], Any]] | None


def _fallback_chain(chain: Fallbacks) -> tuple[Model, ...]:
    if chain is None:
        return ()
    if isinstance(chain, (list, tuple)):
        return tuple(_as_model(c) for c in chain)
    return (_as_model(chain),)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Step:
    """One step of a multi-step workflow: ``Workflow(..., steps=[keel.Step(...), ...])``.

    The first step takes the record's input; each later step takes the output of the one
    before (parsed into that step's ``output`` model). ``model`` is any keel model or a
    function (wrapped in :class:`keel.FunctionModel`); ``fallback`` is tried in order when
    the model fails or its output breaks the step's contract (``output`` plus ``checks``);
    ``resilience`` sets this step's retry, timeout and breaker (default: the workflow's).
    ``threshold``: below this confidence the record goes to review naming this step (None:
    the workflow policy's threshold). The last step's output is the workflow's output: its
    contract is the workflow's ``output`` with ``output_checks`` added to the step's checks.
    """

    name: str
    model: Model | Callable[[Any], Any]
    output: type[BaseModel] | None = None
    checks: Sequence[Check] = ()
    fallback: Fallbacks = None
    resilience: Resilience | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class PlannedStep:
    """A declared step made ready: its model, contract and fallback models."""

    name: str
    model: Model
    contract: Contract
    fallbacks: tuple[Model, ...]
    resilience: Resilience | None
    threshold: float | None


def _step_model(item: Model | Callable[[Any], Any], name: str) -> Model:
    if isinstance(item, Model):
        return item
    if callable(item):
        return FunctionModel(item, name=name)
    raise TypeError(f"step {name!r}: model must be a keel Model or a function, "
                    f"got {type(item).__name__}")


def plan_steps(steps: Sequence[Step], output: type[BaseModel],
               output_checks: Sequence[Check]) -> tuple[PlannedStep, ...]:
    """Check a workflow's steps and make each ready (its contract, its fallback chain)."""
    names = [s.name for s in steps]
    for s in steps:
        if not isinstance(s, Step):
            raise ValueError(f"steps takes keel.Step objects, got {type(s).__name__}")
        if not s.name or not s.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"step name {s.name!r}: use letters, digits, '-' and '_'")
        if s.threshold is not None and not 0.0 <= s.threshold <= 1.0:
            raise ValueError(f"step {s.name!r}: threshold must be in [0, 1]")
    if len(set(names)) != len(names):
        raise ValueError(f"step names must be unique, got {names}")
    planned = []
    for n, s in enumerate(steps):
        last = n == len(steps) - 1
        if not last and s.output is None:
            raise ValueError(f"step {s.name!r} needs output=: the model of what it hands on")
        if last and s.output is not None and s.output is not output:
            raise ValueError(f"the last step ({s.name!r}) answers the workflow's output: leave "
                             f"its output= out or set it to {output.__name__}")
        checks = (*s.checks, *output_checks) if last else tuple(s.checks)
        contract = Contract(output if last else s.output, checks)  # type: ignore[arg-type]
        model = _step_model(s.model, s.name)
        fallbacks = _fallback_chain(s.fallback)
        for m in (model, *fallbacks):
            m.bind(contract)
        planned.append(PlannedStep(s.name, model, contract, fallbacks, s.resilience, s.threshold))
    return tuple(planned)


@dataclass
class Workflow:
    """A named, governed AI decision process.

    ``fallback`` is one model or rules function, or a list tried in order when the primary
    model fails or its output breaks the output contract (a function is wrapped in
    :class:`keel.Rules`). ``resilience`` sets retry, timeout, circuit breaker and rate limits
    for every model that carries no ``resilience`` of its own. Declaring a workflow has no
    side effects: models load on first use.

    ``sensitive_fields`` name input (or output) fields holding personal data: their values are
    masked in logs, traces, exports and ``keel trace``. ``storage`` says what the store keeps
    of each input: ``"raw"``, ``"redacted"`` (personal data masked) or ``"hash"`` (replaced by
    keyed hashes, so equal values still match). ``alerts`` are the rules ``keel alerts check``
    and ``keel serve`` evaluate (None: :data:`keel.workflow.DEFAULT_RULES`).

    ``checkpoint`` says when a model's answers are committed. ``"always"``: right after the
    call, before routing acts on them. ``"auto"`` (default): right after the call when they
    cost money or the call took at least 0.1 ms per record, otherwise in the batch's one
    transaction with the decisions (atomically: never a decision without its answer). A crash
    then re-asks only answers that were cheaper to recompute than to commit on their own.

    ``steps`` declares a chain of steps instead of one ``model`` (see :class:`Step`): each
    step's answer is checkpointed under (record, step) before the next step starts (always,
    whatever ``checkpoint`` says), so a run that stops after a step resumes at the next one.
    A record is accepted automatically only when every step answered confidently and within
    its contract; otherwise its review task names the step and why. ``model`` is then the
    last step's model (a release of the workflow swaps that one).
    """

    name: str
    input: type[BaseModel]
    output: type[BaseModel]
    key: str
    model: Model = None  # type: ignore[assignment]  # None: given by steps=
    owners: Owners = None  # type: ignore[assignment]  # required: checked in __post_init__
    fallback: Fallbacks = None
    policy: Policy = field(default_factory=Policy)
    input_checks: Sequence[Check] = ()
    output_checks: Sequence[Check] = ()
    train: Callable[..., Model] | None = None
    resilience: Resilience | None = None
    description: str = ""
    source_path: str | None = None
    sensitive_fields: Sequence[str] = ()
    storage: str = "raw"
    alerts: Sequence[AlertRule] | None = None
    #: drift monitoring: ``keel.DriftMonitor()`` routes out-of-distribution records to review
    monitor: DriftMonitor | None = None
    checkpoint: str = "auto"
    #: how a challenger release is tried on live traffic (``keel rollout``)
    rollout: Rollout = field(default_factory=Rollout)
    #: when keel retrains on its own (None: only when someone runs ``keel retrain``)
    retrain: Retrain | None = None
    #: construction stages and readiness criteria (None: ungated, the declared policy applies)
    gates: Gates | None = None
    #: prices, review and error costs, value of automation, budgets (None: no accounting
    #: beyond what the model adapters report)
    cost: Cost | None = None
    #: a chain of steps instead of one ``model`` (see :class:`Step`)
    steps: Sequence[Step] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"workflow name {self.name!r}: use letters, digits, '-' and '_'")
        if self.key not in self.input.model_fields:
            raise ValueError(
                f"key field {self.key!r} is not a field of {self.input.__name__}; "
                f"fields are {sorted(self.input.model_fields)}"
            )
        self._check_privacy()
        if self.cost is not None and not isinstance(self.cost, Cost):
            raise ValueError(f"cost takes a keel.Cost, got {type(self.cost).__name__}")
        if self.retrain is not None and self.train is None:
            raise ValueError("retrain=keel.Retrain(...) needs a train function: add "
                             "train=my_train to the Workflow")
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint {self.checkpoint!r}: use one of {', '.join(CHECKPOINTS)}")
        if not isinstance(self.owners, Owners):
            raise ValueError("owners= is required: keel.Owners(business=..., support=...)")
        self.input_contract = Contract(self.input, self.input_checks)
        self.planned_steps: tuple[PlannedStep, ...] = ()
        self.output_contract: Contract
        if self.steps:
            if self.model is not None or self.fallback is not None:
                raise ValueError("give either model= (and fallback=) or steps=, not both: "
                                 "each step has its own model and fallback")
            self.planned_steps = plan_steps(self.steps, self.output, self.output_checks)
            self.model = self.planned_steps[-1].model
            self.output_contract = self.planned_steps[-1].contract
        elif self.model is None:
            raise ValueError("a workflow needs model= (one step) or steps=[keel.Step(...), ...]")
        else:
            self.output_contract = Contract(self.output, self.output_checks)
        self.fallback_chain: tuple[Model, ...] = _fallback_chain(self.fallback)
        if not self.steps:
            for m in (self.model, *self.fallback_chain):
                m.bind(self.output_contract)
        self._source_hash: str | None = None
        #: the module the workflow file was imported as (``load_workflow``): what is defined
        #: there is kept by value in a release's artifact, since no other process can import it
        self.module_name: str | None = None

    def _check_privacy(self) -> None:
        if self.storage not in STORAGE_POLICIES:
            raise ValueError(f"storage {self.storage!r}: use one of {', '.join(STORAGE_POLICIES)}")
        if isinstance(self.sensitive_fields, str):
            raise ValueError("sensitive_fields is a list of field names, e.g. ['email']")
        known = set(self.input.model_fields) | set(self.output.model_fields)
        unknown = sorted(set(self.sensitive_fields) - known)
        if unknown:
            raise ValueError(f"sensitive_fields {unknown} are not fields of {self.input.__name__} "
                             f"or {self.output.__name__}; fields are {sorted(known)}")
        if self.key in self.sensitive_fields:
            raise ValueError(f"the key field {self.key!r} cannot be sensitive: keel stores keys to "
                             "deduplicate; key records by an id instead")
        for rule in self.alerts or ():
            if not isinstance(rule, AlertRule):
                raise ValueError(f"alerts takes keel.AlertRule objects, got {type(rule).__name__}")

    @property
    def unique_checks(self) -> tuple[Unique, ...]:
        """The :func:`keel.unique` checks of its output contract (and its steps')."""
        contracts = [self.output_contract, *(p.contract for p in self.planned_steps)]
        return tuple({id(c): c for k in contracts for c in k.unique}.values())

    @property
    def version(self) -> str:
        """Content hash of the workflow's source file (or its declaration when defined inline)."""
        if self._source_hash is None:
            self._source_hash = content_hash(
                self.source_path,
                lambda: (self.name, self.key, self.input.model_json_schema(),
                         self.output.model_json_schema(), self.policy))
        return self._source_hash

    def spec(self) -> dict[str, Any]:
        out = self._spec()
        if self.planned_steps:
            out["steps"] = [{"name": p.name, "model": p.model.name,
                             "output": p.contract.model.__name__,
                             "checks": [c.name for c in p.contract.checks],
                             "fallback": [m.name for m in p.fallbacks], "threshold": p.threshold}
                            for p in self.planned_steps]
        return out

    def _spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "owners": {"business": self.owners.business, "support": self.owners.support,
                       "escalation": self.owners.escalation},
            "input": self.input.__name__,
            "output": self.output.__name__,
            "model": self.model.name,
            "fallback": [m.name for m in self.fallback_chain],
            "policy": self.policy.as_dict(),
            "input_checks": [c.name for c in self.input_checks],
            "output_checks": [c.name for c in self.output_checks],
            "sensitive_fields": list(self.sensitive_fields),
            "storage": self.storage,
            "checkpoint": self.checkpoint,
            "alerts": None if self.alerts is None else [r.as_dict() for r in self.alerts],
            "rollout": self.rollout.as_dict(),
            "retrain": None if self.retrain is None else asdict(self.retrain),
            "cost": None if self.cost is None else self.cost.as_dict(),
        }


def content_hash(source_path: str | None, declared: Callable[[], object]) -> str:
    """A declaration's version: the hash of its source file, or of ``declared()`` when it was
    defined inline."""
    if source_path and Path(source_path).exists():
        blob = Path(source_path).read_bytes()
    else:
        blob = repr(declared()).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def load_workflow(path: str | Path) -> Workflow:
    """Import a ``workflow.py`` file and return the Workflow it declares.

    The module may hold exactly one :class:`Workflow`, or name the one to use ``workflow``.
    """
    file = Path(path)
    module, mod_name = import_declarations(file)
    found = {k: v for k, v in vars(module).items() if isinstance(v, Workflow)}
    if not found:
        watching = any(type(v).__name__ == "Watch" for v in vars(module).values())
        raise WorkflowLoadError(
            f"{file} declares a keel.Watch (monitor-only, no model): `keel drift` watches its "
            "data; to decide records, declare a keel.Workflow"
            if watching
            else f"{file} declares no keel.Workflow; assign one at module level, "
            "e.g. workflow = keel.Workflow(...)"
        )
    if len(found) > 1 and "workflow" not in found:
        raise WorkflowLoadError(
            f"{file} declares {len(found)} workflows ({', '.join(sorted(found))}); "
            "name the one to run 'workflow'"
        )
    wf = found.get("workflow") or next(iter(found.values()))
    wf.source_path = str(file.resolve())
    wf.module_name = mod_name
    wf._source_hash = None
    return wf


def import_declarations(file: Path) -> tuple[Any, str]:
    """Import a declaration file as a fresh module: (module, its name in sys.modules)."""
    if not file.is_file():
        raise WorkflowLoadError(f"workflow file {str(file)!r} does not exist; pass the path to a workflow.py")
    mod_name = f"keel_workflow_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise WorkflowLoadError(f"{file} is not a Python file keel can import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise WorkflowLoadError(
            f"{file}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again"
        ) from exc
    except Exception as exc:
        raise WorkflowLoadError(
            f"importing {file} raised {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.path.remove(str(file.parent.resolve()))
    return module, mod_name
