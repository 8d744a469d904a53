"""predict: the model call with its fallback chain. Each result is checkpointed before use."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from keel._prediction import Prediction, Usage
from keel._record import Checkpoint, Item, ReviewRequest
from keel.errors import CircuitOpen, ModelError
from keel.models import Model
from keel.resilience import Caller as LayeredCaller
from keel.resilience import CallResult, LoopThread, Resilience, RetryPolicy, resilience_for
from keel.stages.check import OutputChecker
from keel.workflow import Policy

if TYPE_CHECKING:
    from keel._money import Pricer
    from keel.store.cost import BudgetKeeper

Caller = Callable[[Sequence[BaseModel]], list[CallResult]]


@dataclass(slots=True)
class Step:
    """One link of the chain: ``primary``, then ``fallback:1``, ``fallback:2`` ..."""

    name: str
    model: Model
    call: Caller


def chain(models: Sequence[tuple[str, Model]], loop: LoopThread, *,
          default: Resilience | None = None, retry: RetryPolicy | None = None) -> list[Step]:
    """The steps for ``(name, model)`` pairs, each called through its resilience layers
    (the model's own, else ``default``) on ``loop``."""
    return [Step(name, m, LayeredCaller(m, resilience_for(m, default, retry), loop))
            for name, m in models]


class Predictor:
    """Runs the chain for records still undecided and not yet answered.

    ``checkpoint(rows)`` is called with each step's new predictions before anything acts on
    them (the runner persists them). Items arriving with ``prediction`` set were answered in
    an earlier, interrupted run and are not sent to a model again.

    ``pricer`` prices each try from the workflow's declared prices; ``budget`` reserves room
    for the records about to be sent to the model and settles their real spend afterwards;
    a record the budget has no room for goes where the workflow's cost declaration says
    (its rules, a person, or ``failed`` with code ``keel.budget``, to replay later).
    """

    def __init__(self, steps: Sequence[Step], checker: OutputChecker, policy: Policy,
                 checkpoint: Callable[[list[Checkpoint]], None], *,
                 pricer: Pricer | None = None, budget: BudgetKeeper | None = None) -> None:
        self.steps = list(steps)
        self.checker = checker
        self.policy = policy
        self.checkpoint = checkpoint
        self.pricer = pricer
        self.budget = budget

    def __call__(self, items: list[Item], *, defer: bool = False) -> list[Item]:
        """``defer=True``: a record whose primary call failed transiently (and has attempts
        left) is marked ``deferred`` and left undecided, for the runner to send again with
        its next batch instead of waiting here (sync models get batches; this keeps a batch
        from waiting on backoff)."""
        live = [i for i in items if i.disposition is None]
        start: dict[int, int] = {}
        for item in live:
            item.deferred = False
            start[id(item)] = self._resume(item)
        held = self._reserve(live, start) if self.budget is not None else None
        try:
            for idx, step in enumerate(self.steps):
                todo = [i for i in live if i.output is None and i.disposition is None
                        and start[id(i)] <= idx and not i.deferred]
                if todo:
                    self._run_step(idx, step, todo, defer=defer and idx == 0)
        finally:
            if held is not None:
                self._settle(*held)
        for item in live:
            if item.output is None and not item.deferred and item.disposition is None:
                self._unanswered(item)
        return items

    # -- budgets --------------------------------------------------------------------------------
    def _reserve(self, live: list[Item], start: dict[int, int]) -> tuple[Any, ...] | None:
        """Reserve room for the records about to call the model; the rest are turned away."""
        assert self.budget is not None
        asking = [i for i in live if i.output is None and start[id(i)] == 0]
        if not asking:
            return None
        grant, limits = self.budget.reserve(len(asking))
        for item in asking[grant.granted:]:
            self._over_budget(item, start)
        granted = asking[:grant.granted]
        before = [(i, i.cost_usd, len(i.calls)) for i in granted]
        return grant, limits, before

    def _settle(self, grant: Any, limits: list[Any], before: list[tuple[Item, float, int]]) -> None:
        assert self.budget is not None
        usd = sum(i.cost_usd - c0 for i, c0, _n in before)
        tokens = 0
        for item, _c0, n0 in before:
            for ev in item.calls[n0:]:
                if ev.detail:
                    tokens += ev.detail.get("input_tokens", 0) + ev.detail.get("output_tokens", 0)
        self.budget.settle(grant, limits, usd, tokens)

    def _over_budget(self, item: Item, start: dict[int, int]) -> None:
        assert self.budget is not None
        why = (f"the workflow's budget is spent ({self.budget.describe()}); "
               f"on_exhausted={self.budget.on_exhausted!r}")
        item.log("budget_exhausted", detail={"why": why, "action": self.budget.on_exhausted})
        action = self.budget.on_exhausted
        if action == "fallback":
            item.error = why
            start[id(item)] = next(n for n, s in enumerate(self.steps) if s.model.kind == "rules")
        elif action == "review":
            item.review = ReviewRequest("budget_exhausted", why)
            item.finish("in_review", "budget_exhausted")
            item.log("routed", detail={"disposition": "in_review",
                                       "review_reason": "budget_exhausted", "why": why})
        else:
            item.error, item.error_code = why, "keel.budget"
            item.finish("failed", f"[keel.budget] {why}; replay the record once the budget "
                                  "allows (keel replay)")
            item.log("failed", detail={"error": why, "code": "keel.budget", "attempts": 0})

    def _resume(self, item: Item) -> int:
        """Index of the first step still to run (after a checkpointed answer, if any)."""
        if item.prediction is None or item.predicted_by is None:
            return 0
        idx = next((n for n, s in enumerate(self.steps) if s.name == item.step_name), 0)
        item.log("checkpoint_used", model_version=item.predicted_by,
                 detail={"step": item.step_name, "confidence": item.prediction.confidence})
        self._accept_output(item, self.steps[idx] if self.steps else None)
        return idx + 1

    def _run_step(self, idx: int, step: Step, todo: list[Item], *, defer: bool = False) -> None:
        inputs = [i.input for i in todo if i.input is not None]
        layered = step.call if isinstance(step.call, LayeredCaller) else None
        caller = layered if defer else None
        if layered is not None:  # records carried over keep count of their attempts
            prior = [i.attempts for i in todo] if idx == 0 else []
            results = layered(inputs, defer=defer, prior=prior)
        else:
            results = step.call(inputs)
        fresh: list[Checkpoint] = []
        for item, res in zip(todo, results, strict=True):
            self._log_attempts(item, step, res)
            if isinstance(res.outcome, Prediction):
                item.prediction = res.outcome
                item.predicted_by = step.model.version
                item.step_name = step.name
                item.from_fallback = idx > 0
                latency = sum(a.latency_ms for a in res.attempts)
                fresh.append(Checkpoint(item.record_id, step.name, step.model.version,
                                        res.outcome, latency, item))
            else:
                if not (isinstance(res.outcome, CircuitOpen) and item.error):
                    item.error, item.error_code = res.outcome.message, res.outcome.code
                item.deferred = caller is not None and caller.may_defer(res, item.attempts)
        if fresh:
            self.checkpoint(fresh)
        for item in todo:
            if item.prediction is not None and item.step_name == step.name:
                self._accept_output(item, step)

    def _accept_output(self, item: Item, step: Step | None) -> None:
        assert item.prediction is not None
        out, violations = self.checker(item.prediction, item.key)
        if out is not None:
            item.output = out
            return
        item.output_violations = violations
        item.log("output_invalid", model_version=item.predicted_by,
                 detail={"step": item.step_name, "violations": [v.as_dict() for v in violations]})

    def _log_attempts(self, item: Item, step: Step, res: CallResult) -> None:
        before = 0 if not item.attempts else sum(
            1 for e in item.calls if e.detail is not None and e.detail.get("step") == step.name)
        item.attempts += len(res.attempts)
        for n, att in enumerate(res.attempts, before + 1):
            tag = self._price(step, att, res) if self.pricer is not None else None
            item.cost_usd += att.cost_usd
            detail: dict[str, Any] = {"step": step.name, "attempt": n}
            if tag is not None:
                detail["price"] = tag
            if att.error is None:
                assert isinstance(res.outcome, Prediction)
                detail["confidence"] = res.outcome.confidence
                kind = "predicted"
            else:
                item.failed_attempts += 1
                detail.update(error=att.error, code=att.code)
                kind = "attempt_failed"
            if att.usage is not None:
                _spent(detail, att.usage)
                if not att.usage.priced:
                    item.cost_unknown = True
            if att.request:
                detail["request"] = att.request
            item.log(kind, model_version=step.model.version, latency_ms=att.latency_ms,
                     cost_usd=att.cost_usd, detail=detail)
            item.calls.append(item.events[-1])
        cut = res.cut_short
        if cut is None and isinstance(res.outcome, CircuitOpen) and item.error:
            cut = (f"the circuit opened before try {item.attempts + 1}: "  # a carried record
                   f"{res.outcome.message}")
        if cut is not None:
            item.log("retries_stopped", model_version=step.model.version,
                     detail={"step": step.name, "attempts": item.attempts, "why": cut})
        if is_fallback(step.name) and res.attempts:
            if item.error:
                cause, code = item.error, item.error_code
            elif item.output_violations:
                first = item.output_violations[0]
                cause, code = f"output contract violated: {first}", "output_invalid"
            else:
                cause, code = "primary failed", None
            item.log("fallback_used", model_version=step.model.version,
                     detail={"step": step.name, "cause": cause, "code": code})

    def _price(self, step: Step, att: Any, res: CallResult) -> str | None:
        """Re-price a try from the declared table (the answer's stored usage too); returns
        the tag of the price entry charged."""
        assert self.pricer is not None
        cost, known, tag = self.pricer(step.model, att.usage)
        att.cost_usd = cost
        u = att.usage
        if u is not None:
            att.usage = u = Usage(u.input_tokens, u.output_tokens, cost, u.cached_tokens, known)
        if att.error is None and isinstance(res.outcome, Prediction):
            res.outcome.usage = u if u is not None else Usage(cost_usd=cost, priced=known)
            if not known:  # how `keel status` and `keel cost` find unpriced answers
                res.outcome.metadata = {**res.outcome.metadata, "price": "unknown"}
        return tag

    def _unanswered(self, item: Item) -> None:
        if item.output_violations:
            first = item.output_violations[0]
            item.review = ReviewRequest("output_invalid", str(first))
            item.finish("in_review", "output_invalid")
            item.log("routed", detail={"disposition": "in_review", "review_reason": "output_invalid",
                                       "why": f"output contract violated: {first}"})
        elif self.policy.on_model_failure == "review":
            item.review = ReviewRequest("model_failed", item.error or "")
            item.finish("in_review", "model_failed")
            item.log("routed", detail={"disposition": "in_review", "review_reason": "model_failed",
                                       "why": item.error})
        else:
            code = item.error_code or "keel.model"
            item.finish("failed", f"[{code}] {item.error or 'model failed'}")
            item.log("failed", detail={"error": item.error, "code": item.error_code,
                                       "attempts": item.attempts})


def is_fallback(step_name: str) -> bool:
    """``fallback:1``, or a named step's ``extract/fallback:1``."""
    return step_name.rpartition("/")[2].startswith("fallback:")


def _spent(detail: dict[str, Any], usage: Usage) -> None:
    """A try's tokens in its event; a model with no known price says so (never $0)."""
    detail["input_tokens"] = usage.input_tokens
    detail["output_tokens"] = usage.output_tokens
    if usage.cached_tokens:
        detail["cached_tokens"] = usage.cached_tokens
    if not usage.priced:
        detail["cost"] = "unknown"


__all__ = ["Checkpoint", "ModelError", "Predictor", "Step"]
