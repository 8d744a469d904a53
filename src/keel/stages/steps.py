"""predict, for a multi-step workflow: each declared step runs its own chain (model, then
fallbacks) under its own contract, on the output of the step before. Every step's answer is
checkpointed under (record, step) before the next step starts, so a resumed record starts at
the first step it has no answer for."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from keel._record import Checkpoint, Item, ReviewRequest
from keel.resilience import LoopThread, Resilience, RetryPolicy
from keel.stages.check import OutputChecker
from keel.stages.predict import Predictor, Step, chain
from keel.workflow import PlannedStep, Policy


@dataclass
class Link:
    """One declared step, ready to run: its chain and where its input comes from."""

    name: str
    predictor: Predictor
    #: the previous step's output model (None for the first step: the record's input)
    takes: type[BaseModel] | None
    threshold: float | None
    last: bool


#: a review task's detail names the step it is about: "step ocr: confidence 0.113 vs ..."
_NAMED = re.compile(r"^step ([\w-]+): ")


def named_step(detail: str | None) -> str | None:
    """The step a review task's detail names (None: it names none)."""
    found = _NAMED.match(detail or "")
    return found.group(1) if found else None


def link_names(name: str, fallbacks: int) -> list[str]:
    """A step's chain as stored: ``extract``, ``extract/fallback:1``, ..."""
    return [name, *(f"{name}/fallback:{n}" for n in range(1, fallbacks + 1))]


class StepsPredictor:
    """Runs a workflow's steps in order for records still undecided.

    Same shape as :class:`~keel.stages.predict.Predictor`: ``checkpoint(rows)`` receives each
    step's fresh answers (for the record itself) before the next step starts. A record a step
    cannot answer ends there (review naming the step, or failed); a step answering below its
    threshold sends the record to review naming the step. The last step's answer is the
    record's output, routed by the workflow's policy.
    """

    def __init__(self, links: Sequence[Link], policy: Policy,
                 checkpoint: Callable[[list[Checkpoint]], None]) -> None:
        self.links = list(links)
        self.policy = policy
        self.checkpoint = checkpoint
        self._parents: dict[int, Item] = {}
        for link in self.links:
            link.predictor.checkpoint = self._hand_on

    @property
    def steps(self) -> list[Step]:
        """Every link of every step's chain, the last step's model first (the release's)."""
        last = self.links[-1].predictor.steps
        return [*last, *(s for link in self.links[:-1] for s in link.predictor.steps)]

    def __call__(self, items: list[Item], *, defer: bool = False) -> list[Item]:
        live = [i for i in items if i.disposition is None]
        for item in live:
            item.deferred = False
            item.prediction = item.predicted_by = item.step_name = None
            item.step_results = []
            item.from_fallback = False
        for link in self.links:
            todo = [i for i in live if i.disposition is None]
            if todo:
                self._run(link, todo)
        return items

    def _run(self, link: Link, items: list[Item]) -> None:
        subs: list[Item] = []
        for item in items:
            sub = self._sub_item(link, item)
            if sub is not None:
                subs.append(sub)
                self._parents[id(sub)] = item
        link.predictor.policy = self.policy
        try:
            link.predictor(subs)
        finally:
            parents = [self._parents.pop(id(s)) for s in subs]
        for item, sub in zip(parents, subs, strict=True):
            _adopt(item, sub, link.name)
            if sub.output is None:
                self._ended(item, sub, link.name)
            else:
                self._answered(item, sub, link)

    def _sub_item(self, link: Link, item: Item) -> Item | None:
        """The record as this step sees it: its input is the previous step's output."""
        inp: BaseModel | None = item.input
        if link.takes is not None:
            prev = item.output
            try:
                inp = link.takes.model_validate(prev)
            except ValidationError as exc:  # a contract the previous step passed: a bug
                why = f"step {link.name}: the previous step's output does not parse: {exc}"
                item.review = ReviewRequest("output_invalid", why)
                item.finish("in_review", "output_invalid")
                item.log("routed", detail={"disposition": "in_review", "step": link.name,
                                           "review_reason": "output_invalid", "why": why})
                return None
        sub = Item(key=item.key, raw=item.raw, source=item.source, record_id=item.record_id,
                   is_new=False, input=inp, flags=item.flags)
        saved = item.answers or {}
        names = [s.name for s in link.predictor.steps]
        for name in reversed(names):  # the furthest link of the chain that answered
            if name in saved:
                sub.prediction, sub.predicted_by = saved[name]
                sub.step_name = name
                break
        return sub

    def _hand_on(self, rows: list[Checkpoint]) -> None:
        """A step's fresh answers, checkpointed as the record's (with its events so far)."""
        for c in rows:
            parent = self._parents[id(c.item)]
            _adopt(parent, c.item, None)
            c.item = parent
        self.checkpoint(rows)

    def _answered(self, item: Item, sub: Item, link: Link) -> None:
        pred = sub.prediction
        assert pred is not None and item.step_results is not None
        latency = sum(e.latency_ms or 0.0 for e in sub.calls)
        item.step_results.append({
            "step": link.name, "answered_by": sub.step_name, "model_version": sub.predicted_by,
            "confidence": pred.confidence, "latency_ms": latency, "cost_usd": sub.cost_usd,
            "attempts": sub.attempts, "from_fallback": sub.from_fallback,
            "checkpoint_used": not sub.calls})
        item.output = sub.output
        item.prediction, item.predicted_by, item.step_name = pred, sub.predicted_by, sub.step_name
        item.from_fallback = item.from_fallback or sub.from_fallback
        threshold = link.threshold
        if threshold is None and not link.last:
            threshold = self.policy.threshold_for(None)
        if threshold is not None and pred.confidence < threshold:
            why = (f"step {link.name}: confidence {pred.confidence:.3f} vs its threshold "
                   f"{threshold:.3f}")
            item.review = ReviewRequest("low_confidence", why)
            item.finish("in_review", "low_confidence")
            item.log("routed", model_version=sub.predicted_by,
                     detail={"disposition": "in_review", "review_reason": "low_confidence",
                             "step": link.name, "why": why, "confidence": pred.confidence,
                             "threshold": threshold, "steps": item.step_results})
        elif link.last:
            item.log("steps_done", detail={"steps": item.step_results})

    @staticmethod
    def _ended(item: Item, sub: Item, step: str) -> None:
        """The step could not answer: the record ends as the step's chain decided."""
        item.error, item.error_code = sub.error, sub.error_code
        item.output_violations = sub.output_violations
        if sub.review is not None:
            item.review = ReviewRequest(sub.review.reason, f"step {step}: {sub.review.detail}")
        item.finish(sub.disposition or "failed", f"step {step}: {sub.reason or 'no answer'}")


def _adopt(item: Item, sub: Item, step: str | None) -> None:
    """Move what a step's run logged and spent onto the record (events marked with the step)."""
    for ev in sub.events:
        if step is not None and ev.detail is not None and "step" not in ev.detail:
            ev.detail["step"] = step
    item.events.extend(sub.events)
    sub.events.clear()
    if step is None:
        return
    item.calls.extend(sub.calls)
    item.cost_usd += sub.cost_usd
    item.cost_unknown = item.cost_unknown or sub.cost_unknown
    item.attempts += sub.attempts
    item.failed_attempts += sub.failed_attempts


def build(planned: Sequence[PlannedStep], loop: LoopThread, policy: Policy,
          checkpoint: Callable[[list[Checkpoint]], None], *, default: Resilience | None,
          retry: RetryPolicy | None, final_model: Any = None) -> StepsPredictor:
    """The predictor for a workflow's planned steps; ``final_model`` replaces the last
    step's model (a release's)."""
    links: list[Link] = []
    for n, p in enumerate(planned):
        last = n == len(planned) - 1
        model = final_model if last and final_model is not None else p.model
        names = link_names(p.name, len(p.fallbacks))
        steps = chain(list(zip(names, (model, *p.fallbacks), strict=True)), loop,
                      default=p.resilience or default, retry=retry)
        takes = planned[n - 1].contract.model if n else None
        links.append(Link(p.name, Predictor(steps, OutputChecker(p.contract), policy, checkpoint),
                          takes, p.threshold, last))
    return StepsPredictor(links, policy, checkpoint)


__all__ = ["Link", "StepsPredictor", "build", "link_names", "named_step"]
