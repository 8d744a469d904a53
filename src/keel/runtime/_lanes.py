"""Lanes: which release decides which record. The champion decides all traffic, or all but
a canary's sticky share; a shadow answers records it does not decide, and those answers are
kept and never acted on."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from keel import _json
from keel._money import Pricer
from keel._record import Checkpoint, Item
from keel.models import Model
from keel.releases import Lineup, Release, in_canary, model_for
from keel.resilience import LoopThread, Resilience, RetryPolicy
from keel.review import policy_in_force
from keel.stages import ConfidenceRouter, OutputChecker, Predictor
from keel.stages.predict import Step, chain
from keel.stages.steps import StepsPredictor
from keel.stages.steps import build as build_steps
from keel.store import Store
from keel.store.cost import BudgetKeeper
from keel.workflow import Policy, Rollout, Workflow


@dataclass
class Lane:
    """One release's stages: its chain (its model, the workflow's fallbacks), its policy."""

    release: Release
    predictor: Predictor | StepsPredictor
    router: ConfidenceRouter
    policy: Policy
    note: str | None = None

    @property
    def release_id(self) -> str:
        return self.release.id

    @property
    def steps(self) -> list[Step]:
        return self.predictor.steps

    def set_policy(self, policy: Policy) -> None:
        self.policy = self.predictor.policy = self.router.policy = policy


class LaneMaker:
    """Builds lanes for releases, loading each model once."""

    def __init__(self, wf: Workflow, store: Store, loop: LoopThread, fallbacks: list[Step], *,
                 default: Resilience | None, retry: RetryPolicy | None,
                 checkpoint: Callable[[list[Checkpoint]], None],
                 pricer: Pricer | None = None, budget: BudgetKeeper | None = None) -> None:
        self.wf, self.store, self.loop = wf, store, loop
        self.pricer, self.budget = pricer, budget
        self.fallbacks = fallbacks
        self.default, self.retry = default, retry
        self.checkpoint = checkpoint
        self._models: dict[str, Model] = {}

    def model(self, release: Release) -> Model:
        model = self._models.get(release.id)
        if model is None:
            model = self._models[release.id] = model_for(self.wf, self.store, release)
            model.warm()
            if model.is_async:
                self.loop.on_close.append(model.aclose)
        return model

    def lane(self, release: Release, *, audit_rate: float | None = None,
             keep: bool = True) -> Lane:
        """``keep=False``: a shadow's lane, whose answers are never checkpointed."""
        model = self.model(release)
        declared = release.policy(self.wf.policy)
        policy, note = policy_in_force(self.store, self.wf.name, model.version, declared)
        if audit_rate is not None:
            policy = replace(policy, audit_rate=audit_rate)
        return Lane(release, self.predictor(policy, keep=keep, model=model),
                    ConfidenceRouter(policy), policy, note)

    def predictor(self, policy: Policy, *, keep: bool = True,
                  model: Model | None = None) -> Predictor | StepsPredictor:
        """The workflow's chain (or its steps) with ``model`` deciding (default: the file's).
        Prices and budgets apply to a one-model chain (steps report their own usage)."""
        save = self.checkpoint if keep else _discard
        if self.wf.planned_steps:
            return build_steps(self.wf.planned_steps, self.loop, policy, save,
                               default=self.default, retry=self.retry, final_model=model)
        steps = chain([("primary", model or self.wf.model)], self.loop, default=self.default,
                      retry=self.retry)
        return Predictor(steps + self.fallbacks, OutputChecker(self.wf.output_contract),
                         policy, save, pricer=self.pricer, budget=self.budget if keep else None)


def _discard(rows: list[Checkpoint]) -> None:
    """A shadow's answers are kept as shadow answers, not as the record's."""


@dataclass
class Plan:
    """The lanes of a lineup: who decides, who answers in the shadow of whom."""

    lineup: Lineup
    champion: Lane
    challenger: Lane | None = None
    #: (lane answering in the shadow, which records: "champion" or "challenger" decided)
    shadows: tuple[tuple[Lane, str], ...] = ()

    @classmethod
    def make(cls, lineup: Lineup, maker: LaneMaker, settings: Rollout) -> Plan:
        champion = maker.lane(lineup.champion)
        if lineup.challenger is None:
            return cls(lineup, champion)
        if lineup.shadow:
            return cls(lineup, champion, None,
                       ((maker.lane(lineup.challenger, keep=False), "champion"),))
        challenger = maker.lane(lineup.challenger, audit_rate=settings.canary_audit_rate)
        # the champion answers the canary's records too: a paired comparison on every record
        # people review, so that few reviews tell two releases apart
        return cls(lineup, champion, challenger,
                   ((maker.lane(lineup.champion, keep=False), "challenger"),))

    def lanes(self) -> list[Lane]:
        return [self.champion] + ([self.challenger] if self.challenger else [])

    def assign(self, item: Item) -> None:
        """The release that decides ``item``: its own when it has one, else by the canary."""
        if item.release_id is not None:
            return
        lu = self.lineup
        if (self.challenger is not None and lu.rollout_id is not None
                and in_canary(item.key, lu.rollout_id, lu.share)):
            item.release_id = self.challenger.release_id
        else:
            item.release_id = self.champion.release_id


def resumed_elsewhere(item: Item, lane: Lane) -> bool:
    """A record answered by a primary model before a crash that its lane does not run (the
    rollout ended meanwhile): its checkpointed answer is not this release's to use."""
    return (item.prediction is not None and item.step_name == "primary"
            and item.predicted_by != lane.steps[0].model.version)


def shadow_clone(item: Item) -> Item:
    return Item(key=item.key, raw=item.raw, source=item.source, record_id=item.record_id,
                is_new=False, input=item.input, flags=item.flags)


def shadow_rows(workflow: str, release_id: str, decided: list[Item],
                clones: list[Item]) -> list[tuple[Any, ...]]:
    """A shadow's answers as rows (record, release, its answer or error, which step, whether
    it agreed with the answer that decided the record, latency, cost)."""
    now = time.time()
    rows = []
    for item, c in zip(decided, clones, strict=True):
        answer = c.output
        latency = sum(e.latency_ms or 0.0 for e in c.calls) if c.calls else None
        rows.append((c.record_id, release_id, workflow,
                     _json.dumps(answer) if answer is not None else None,
                     c.prediction.confidence if c.prediction is not None and answer else None,
                     None if answer is not None else (c.error or "no answer"),
                     c.step_name if answer is not None else None,
                     None if answer is None or item.output is None else answer == item.output,
                     latency, c.cost_usd, now))
    return rows
