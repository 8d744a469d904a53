"""The runner: batching, transactions, resume, delivery. Stages do the deciding."""

from __future__ import annotations

import fnmatch
import os
import threading
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from keel import _json
from keel._record import DISPOSITIONS, BatchTally, Checkpoint, Item, Known, new_id
from keel.contracts import Violation
from keel.deliver import Sink, send
from keel.errors import ChangeControl, UserError
from keel.monitor import detector_for
from keel.redact import Redactor
from keel.releases import Lineup, Release, bundle, declared_note, lineup, release_id, tend
from keel.resilience import Caller, CircuitBreaker, LoopThread, Resilience, RetryPolicy, Shared
from keel.review import policy_in_force
from keel.runtime._lanes import Lane, LaneMaker, Plan, resumed_elsewhere, shadow_clone, shadow_rows
from keel.runtime._speed import freeze_startup_objects, prompt_event_loop, young_gc_only
from keel.runtime._writer import RowWriter
from keel.stages import (
    Admitter,
    ConfidenceRouter,
    InputValidator,
    RawRow,
    Screener,
    StorageRedactor,
)
from keel.stages.predict import Step, chain
from keel.stages.screen import Detector
from keel.store import BatchRows, BreakerBook, SinkLedger, Store, batch_rows, merge_rows
from keel.store import limits as limits_sql
from keel.store import releases as releases_sql
from keel.store.cost import metering
from keel.store.gates import decided_since
from keel.store.gates import stage as stored_stage
from keel.store.queries import watch_decided
from keel.workflow import Policy, Rollout, Workflow

if TYPE_CHECKING:
    from keel.telemetry import Telemetry

ProgressFn = Callable[[int], None]


@dataclass
class RunSummary:
    """What a run did. ``read == sum(counts.values()) + duplicates``, always."""

    workflow: str
    run_id: str
    source: str
    read: int = 0
    duplicates: int = 0
    #: rows that reused a decided key with other content (quarantined under a key of their own)
    conflicts: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DISPOSITIONS, 0))
    quarantine_reasons: Counter[str] = field(default_factory=Counter)
    failure_causes: Counter[str] = field(default_factory=Counter)
    review_reasons: Counter[str] = field(default_factory=Counter)
    audit_samples: int = 0
    cost_usd: float = 0.0
    #: records a model with no known price answered: their cost is unknown, not $0
    cost_unknown: int = 0
    elapsed_s: float = 0.0
    delivered: int = 0
    dead_letters: int = 0
    #: of ``delivered``: decisions owed from before this run, sent first: ones a reviewer
    #: changed after a sink had received them, and ones a crashed run decided but never sent
    updates_delivered: int = 0
    latencies_ms: array = field(default_factory=lambda: array("d"), repr=False)  # type: ignore[type-arg]
    #: decisions per release (by name): the champion's, and a canary's
    releases: Counter[str] = field(default_factory=Counter)
    #: things a person should know about the run (the file declares another release, ...)
    notes: list[str] = field(default_factory=list)
    #: what the workflow's retraining policy did after the run (None: nothing)
    retraining: dict[str, Any] | None = None
    #: `keel submit`: records queued for workers; a worker: records whose lease it lost
    queued: int = 0
    lost_leases: int = 0
    #: times a worker found the store gone and waited for it (keel worker)
    store_outages: int = 0

    @property
    def decided(self) -> int:
        return sum(self.counts.values())

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(np.frombuffer(self.latencies_ms, dtype=np.float64), q))

    def as_dict(self) -> dict[str, Any]:
        return {
            "workflow": self.workflow, "run_id": self.run_id, "source": self.source,
            "read": self.read, "already_decided": self.duplicates, "key_conflicts": self.conflicts,
            "dispositions": self.counts,
            "quarantine_reasons": dict(self.quarantine_reasons.most_common()),
            "failure_causes": dict(self.failure_causes.most_common()),
            "review_reasons": dict(self.review_reasons.most_common()),
            "audit_samples": self.audit_samples,
            "latency_ms": {"p50": self.percentile_ms(50), "p95": self.percentile_ms(95)},
            "cost_usd": round(self.cost_usd, 6), "cost_unknown_records": self.cost_unknown,
            "elapsed_s": round(self.elapsed_s, 3),
            "records_per_s": round(self.read / self.elapsed_s, 1) if self.elapsed_s else None,
            "delivered": self.delivered, "dead_letters": self.dead_letters,
            "updates_delivered": self.updates_delivered,
            "releases": dict(self.releases), "notes": self.notes,
            "queued": self.queued, "lost_leases": self.lost_leases,
            "store_outages": self.store_outages,
            "retraining": None if self.retraining is None else {
                k: self.retraining.get(k) for k in ("trigger", "release", "action", "held_out")},
        }

    def add(self, items: Sequence[Item], *, tally: bool = False) -> BatchTally | None:
        """Count a stored batch in; with ``tally``, also return the batch's own tally (for
        its metrics: one pass over the batch serves both)."""
        counted = BatchTally() if tally else None
        for i in items:
            disp = i.disposition or "failed"
            self.counts[disp] += 1
            self.cost_usd += i.cost_usd
            self.cost_unknown += i.cost_unknown
            ms = i.latency_ms
            self.latencies_ms.append(ms)
            if counted is not None:
                counted.count(i, disp, ms)
            if disp == "quarantined":
                v = i.violations[0] if i.violations else None
                self.quarantine_reasons[f"{v.field}: {v.rule}" if v else "unknown"] += 1
            elif disp == "failed":
                self.failure_causes[i.error_code or "unknown"] += 1
            elif disp == "in_review" and i.review:
                self.review_reasons[i.review.reason] += 1
            if i.audit:
                self.audit_samples += 1
        return counted


@dataclass(frozen=True, slots=True)
class Earlier:
    """A record decided before this call (idempotency): its key and stored record id."""

    key: str
    record_id: str


class _Marks(list[tuple[str, int]]):
    """When each stage of a batch ended (wall clock, ns): the first mark is the batch's start."""

    def __init__(self) -> None:
        super().__init__([("start", time.time_ns())])

    def __call__(self, stage: str) -> None:
        self.append((stage, time.time_ns()))


def _with_last(batches: Iterator[list[RawRow]]) -> Iterator[tuple[list[RawRow], bool]]:
    """Each batch with whether it is the last one."""
    current = next(batches, None)
    while current is not None:
        following = next(batches, None)
        yield current, following is None
        current = following


def _batches(rows: Iterable[RawRow], size: int) -> Iterator[list[RawRow]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


class Runner:
    """Runs a workflow's stages over batches of rows against a store."""

    def __init__(self, workflow: Workflow, store: Store, *, batch_size: int = 500,
                 sinks: Sequence[Sink] = (), detectors: Sequence[Detector] = (),
                 retry: RetryPolicy | None = None, resilience: Resilience | None = None,
                 telemetry: Telemetry | None = None,
                 writer_process_after: int | None = None) -> None:
        """``writer_process_after``: on a SQLite file, commit batches in a writer process once
        a run has written this many records (None: ``KEEL_WRITER_PROCESS``, default 20,000)."""
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.wf = workflow
        self.store = store
        self.batch_size = batch_size
        self.writer_process_after = writer_process_after
        self.sinks = list(sinks)
        self._sink_names = [s.name for s in self.sinks]
        self._line_mask = Redactor(workflow.sensitive_fields)
        self.ledger = SinkLedger(store)
        self.breaker_book = BreakerBook(store)
        self.policy = workflow.policy
        self.loop = LoopThread()
        default = resilience or workflow.resilience
        fallbacks = chain([(f"fallback:{n}", m) for n, m in enumerate(workflow.fallback_chain, 1)],
                          self.loop, default=default, retry=retry)
        # every async model the file declares closes its HTTP clients with the loop (aclose is
        # idempotent: a release's model may be one of these and be registered again)
        declared = [workflow.model, *(m for p in workflow.planned_steps
                                      for m in (p.model, *p.fallbacks))]
        self.loop.on_close = [m.aclose for m in (*declared, *(s.model for s in fallbacks))
                              if m.is_async]
        self.breakers: dict[str, CircuitBreaker] = {}
        self.telemetry = telemetry
        self.scrubber = StorageRedactor.for_policy(workflow.storage, workflow.sensitive_fields)
        self.validator = InputValidator(workflow.input_contract)
        #: what keel.unique checks compare with: the decided outputs, refreshed each batch
        self.decided = watch_decided(workflow.unique_checks, store, workflow.name)
        monitor = detector_for(workflow.monitor, store, workflow.name) if workflow.monitor else None
        self.screener = Screener([*detectors, monitor] if monitor else detectors)
        base = Path(workflow.source_path).parent if workflow.source_path else None
        self.pricer, self.budget = metering(workflow.cost, workflow.model,
                                            workflow.fallback_chain, store, workflow.name, base)
        self.lane_maker = LaneMaker(workflow, store, self.loop, fallbacks, default=default,
                                    retry=retry, checkpoint=self._checkpoint,
                                    pricer=self.pricer, budget=self.budget)
        self.plan: Plan | None = None
        #: the workflow's construction stage when it declares gates (None: ungated)
        self.stage: str | None = None
        self._cap_left: int | None = None
        self._lanes: dict[str, Lane] = {}  # by release id: the plan's, and any still finishing
        self._names: dict[str, str] = {}  # release id -> name, of every release this run used
        self._next_look = 0.0
        self._every = workflow.rollout.check_every_s
        # until the store says which release is live: the workflow file's own
        self.predictor = self.lane_maker.predictor(self.policy)
        self.router = ConfidenceRouter(self.policy)
        self.policy_note: str | None = None
        self._registered = False
        self._carry: list[Item] = []  # transient failures waiting for the next batch
        self._lease: tuple[str, list[str]] | None = None  # a worker's batch: who holds it
        # the model calls of a batch run here, so the next batch can be begun meanwhile; two
        # batches' calls overlap when the model waits (async, or a sync model on threads)
        waits = workflow.model.is_async or getattr(resilience or workflow.resilience,
                                                   "threads", 1) > 1
        self._predicting = ThreadPoolExecutor(max_workers=2 if waits else 1,
                                              thread_name_prefix="keel-predict")
        self._defer = False
        self._run_id = ""
        self._inflight: dict[str, Item] = {}  # serving: decided, not yet stored
        self._inflight_lock = threading.Lock()

    def _waits_async(self) -> bool:
        """Does the model that decides (the champion's first step) await its answers?"""
        steps = self.predictor.steps
        return bool(steps) and steps[0].model.is_async

    def _stored_form(self, raw: dict[str, Any]) -> str:
        """A row's input as the store keeps it (the storage policy applied)."""
        return _json.dumps(raw) if self.scrubber is None else self.scrubber.stored_json(raw)

    def _checkpoint(self, rows: list[Checkpoint]) -> None:
        """A step's fresh answers: committed now when they were dear, else with the decisions."""
        if self.scrubber is not None:
            self.scrubber([c.item for c in rows])
        if self.wf.checkpoint == "always" or self.wf.planned_steps or _dear(rows):
            lease = self._lease[0] if self._lease is not None else None
            self.store.write_checkpoints(self.wf.name, self._run_id, rows, lease=lease)
        else:
            for c in rows:
                c.item.unsaved.append(c)

    def _register(self) -> None:
        if self._registered:
            return
        wf = self.wf
        self._read_stage()
        if self.stage == "production":
            _change_control(wf, self.store)
        self.store.save_workflow(wf.name, wf.version, wf.source_path, wf.spec())
        self._follow(lineup(wf, self.store))
        for step in self.lane_maker.fallbacks:
            step.model.warm()
            self.store.register_model(wf.name, step.model.describe(), alias=None)
            self._attach_breaker(step)
        self._registered = True

    # -- releases: who decides what ------------------------------------------------------------
    def _follow(self, lu: Lineup) -> None:
        """Decide with ``lu``'s releases from the next batch on. Records in flight (waiting
        for a retry) finish on the release that started them."""
        if self.plan is not None and self.plan.lineup.token == lu.token:
            return
        plan = Plan.make(lu, self.lane_maker, self.wf.rollout if lu.rollout_id is None
                         else self._rollout_settings(lu))
        keep = {i.release_id for i in self._carry}
        lanes = {k: v for k, v in self._lanes.items() if k in keep}
        for lane in plan.lanes():
            lanes[lane.release_id] = lane
            # a batch in flight may land after its release left the plan: it keeps its name
            self._names[lane.release_id] = lane.release.name
        for lane in (*plan.lanes(), *(shadow for shadow, _of in plan.shadows)):
            self._attach_breaker(lane.steps[0])
        self._lanes = lanes
        self.plan = plan
        for lane in plan.lanes():
            lane.set_policy(self._staged(lane.policy))
        champion = plan.champion
        self.predictor, self.router, self.policy = champion.predictor, champion.router, champion.policy
        self.policy_note = champion.note
        self.store.register_model(self.wf.name, champion.steps[0].model.describe(),
                                  alias="champion")

    # -- gates: what the workflow's stage allows ----------------------------------------------
    def _read_stage(self) -> None:
        if self.wf.gates is None:
            return
        was = self.stage
        row = stored_stage(self.store, self.wf.name)
        self.stage = str(row["stage"]) if row else "prototype"
        if was is not None and was != self.stage:  # a stage moved while running: next batch
            self._restage()
        mvp = self.wf.gates.mvp
        if self.stage == "mvp" and mvp.daily_volume is not None:
            midnight = time.time() // 86400 * 86400
            self._cap_left = max(0, mvp.daily_volume - decided_since(self.store, self.wf.name,
                                                                       midnight))
        else:
            self._cap_left = None

    def _staged(self, policy: Policy) -> Policy:
        """A policy as the stage allows: a prototype automates nothing; an MVP audits more."""
        if self.stage == "prototype":
            return replace(policy, review_all="prototype")
        if self.stage == "mvp" and self.wf.gates is not None:
            return replace(policy, audit_rate=max(policy.audit_rate, self.wf.gates.mvp.audit_rate))
        return policy

    def _cap(self, items: list[Item]) -> None:
        """An MVP's daily volume: records past it are quarantined with the reason (replay
        them once the day turns, or once the workflow is in production)."""
        if self._cap_left is None:
            return
        fresh = [i for i in items if i.disposition is None and not i.violations]
        over = fresh[self._cap_left:]
        self._cap_left = max(0, self._cap_left - len(fresh))
        limit = self.wf.gates.mvp.daily_volume if self.wf.gates else None
        for i in over:
            i.violations.append(Violation("*", "mvp_daily_volume", (
                f"the MVP's daily volume ({limit} records) is used up; replay with "
                "`keel replay --quarantined` tomorrow, or promote the workflow to production")))

    def check_source(self, source: str) -> None:
        """An MVP reads only the input files its gates allow."""
        gates = self.wf.gates
        if self.stage != "mvp" or gates is None or not gates.mvp.sources:
            return
        # matched as the file it names, however it is spelled (orders/../secret.csv is not
        # under orders/; an absolute path matches a relative pattern): both resolved from cwd
        real = os.path.realpath(source)
        if not any(fnmatch.fnmatch(real, os.path.realpath(pat)) for pat in gates.mvp.sources):
            raise UserError(f"{self.wf.name} is an MVP and reads only {', '.join(gates.mvp.sources)}; "
                            f"{source} is not one of them (keel.Gates(mvp=keel.MvpLimits(sources=...)))")

    def may_submit(self, key_name: str) -> bool:
        """An MVP takes records only from the API keys its gates name."""
        gates = self.wf.gates
        return (self.stage != "mvp" or gates is None or not gates.mvp.api_keys
                or key_name in gates.mvp.api_keys)

    def _rollout_settings(self, lu: Lineup) -> Rollout:
        ro = releases_sql.active_rollout(self.store, self.wf.name)
        settings = Rollout.from_dict(ro["settings"]) if ro else self.wf.rollout
        self._every = settings.check_every_s  # a rollout is looked at as often as it asks
        return settings

    def _look(self, *, force: bool = False) -> None:
        """Every ``Rollout.check_every_s`` (at a batch boundary): act on a rollout's evidence
        (a step, a promotion, a rollback), then follow whoever decides now."""
        now = time.monotonic()
        if not force and now < self._next_look:
            return
        ro = self.plan.lineup.rollout_id if self.plan is not None else None
        every = self._every if ro is not None else self.wf.rollout.check_every_s
        self._next_look = now + every
        if self.plan is not None and self.plan.lineup.rollout_id is not None:
            tend(self.wf, self.store)
        self._read_stage()
        self._follow(lineup(self.wf, self.store))

    def notes(self) -> list[str]:
        """What a person running this should know: the file declares another release than
        the champion, a calibrated policy that does not apply."""
        out = [n for n in (self.policy_note,) if n]
        if self.plan is not None:
            note = declared_note(self.wf, self.store, self.plan.champion.release)
            if note:
                out.append(note)
        return out

    @property
    def release(self) -> Release | None:
        """The champion this runner decides with (None before it starts)."""
        return self.plan.champion.release if self.plan else None

    def _attach_breaker(self, step: Step) -> None:
        caller = step.call
        assert isinstance(caller, Caller)
        limits = caller.resilience.limits
        if limits is not None and limits.shared and caller.shared is None:
            caller.share(Shared(f"{self.wf.name}/{step.model.version}",
                                partial(limits_sql.take, self.store),
                                partial(limits_sql.settle, self.store)))
        policy = caller.resilience.breaker
        if policy is None:
            return
        version = step.model.version
        if version not in self.breakers:
            self.breakers[version] = CircuitBreaker(version, policy, self.wf.name)
        caller.set_breaker(self.breakers[version])

    def _load_breakers(self, *, reset: bool) -> None:
        """Continue from the breaker states in the store (or close them all for a replay)."""
        saved = self.breaker_book.load(self.wf.name, list(self.breakers))
        for version, breaker in self.breakers.items():
            if reset:
                breaker.reset()
            else:
                breaker.restore(saved.get(version))
        self._save_breakers()

    def _save_breakers(self) -> None:
        changed = [b for b in self.breakers.values() if b.changed]
        for b in changed:
            b.changed = False
        self.breaker_book.save([b.snapshot() for b in changed])

    def breaker_states(self) -> list[dict[str, Any]]:
        return [b.as_dict() for b in self.breakers.values()]

    def _open_sinks(self, summary: RunSummary) -> None:
        """Open each sink where its committed output ends, and send it what it is owed from
        before: decisions a person changed since the sink received them (``pending``)."""
        for sink in self.sinks:
            sink.open(self.ledger.offset(sink.name, type(sink).__name__))
            owed = self.ledger.owed(sink.name, ("pending",))
            if owed:
                self._send(sink, owed, summary)
                summary.updates_delivered += len(owed)

    def _close_sinks(self) -> None:
        for sink in self.sinks:
            sink.close()

    def run(self, rows: Iterable[RawRow], *, source: str = "input",
            progress: ProgressFn | None = None) -> RunSummary:
        """Decide every new record in ``rows``; skip (and count) keys already decided."""
        self._register()
        self.check_source(source)
        summary = RunSummary(self.wf.name, new_id(), source)
        summary.notes += self.notes()
        self.store.start_run(summary.run_id, self.wf.name, "run", source)
        admitter = Admitter(self.wf.key, lambda keys: self.store.lookup(self.wf.name, keys),
                            self._stored_form)
        t0 = time.perf_counter()
        self._load_breakers(reset=False)
        self._open_sinks(summary)
        self._writer = _Writer()
        self.rows_writer = RowWriter(self.store, self.writer_process_after)
        self._carry, self._defer = [], True
        try:
            with young_gc_only(), prompt_event_loop(self._waits_async()):
                flying: _Flight | None = None
                for batch, last in _with_last(_batches(rows, self.batch_size)):
                    self._defer = not last  # the last batch retries in the call: no next batch
                    marks = _Marks()
                    admitted = admitter(batch)
                    summary.read += len(batch)
                    summary.duplicates += len(admitted.duplicates)
                    summary.conflicts += admitted.conflicts
                    self.store.resume_state(admitted.items)
                    marks("admit")
                    begun = self._begin(admitted.items, run_id=summary.run_id, marks=marks)
                    if flying is not None:  # the previous batch lands while this one is asked
                        self._land(flying, summary)
                    flying = begun
                    redo = [rid for _k, _w, rid in admitted.duplicates if rid]
                    if redo and self.sinks:
                        self._writer.submit(self._redeliver, redo, summary)
                    if progress:
                        progress(len(batch))
                if flying is not None:
                    self._land(flying, summary)
                self._flush(summary, run_id=summary.run_id)
        finally:
            self._finish(summary, t0)
        return summary

    def start_serving(self, source: str = "api") -> RunSummary:
        """Open a long-lived run for :meth:`decide` calls (``keel serve``); close with
        :meth:`finish_serving`."""
        self._register()
        freeze_startup_objects()  # a long-lived server
        summary = RunSummary(self.wf.name, new_id(), source)
        self.store.start_run(summary.run_id, self.wf.name, "serve", source)
        self._serving_since = time.perf_counter()
        self._load_breakers(reset=False)
        self._writer = _Writer()
        self.rows_writer = RowWriter(self.store, self.writer_process_after)
        return summary

    def finish_serving(self, summary: RunSummary) -> None:
        self._finish(summary, self._serving_since)

    def reload_policy(self) -> None:
        """Pick up a policy activated since start (`keel calibrate` while serving) and, from
        the next batch, the releases that decide now (a promotion, a rollout's step). Safe to
        call from another thread: the deciding thread switches releases itself."""
        if self.wf.gates is not None:  # a promotion may be why: stage the policies it allows
            row = stored_stage(self.store, self.wf.name)
            self.stage = str(row["stage"]) if row else "prototype"
        self._restage()
        self._next_look = 0.0

    def _restage(self) -> None:
        """Each lane's policy again from what is declared and in force, as the stage allows
        (not from the lane's current policy: an MVP's raised audit rate must not stay)."""
        if self.plan is None:
            return
        for lane in self.plan.lanes():
            declared = lane.release.policy(self.wf.policy)
            policy, lane.note = policy_in_force(self.store, self.wf.name,
                                                lane.steps[0].model.version, declared)
            if lane is self.plan.challenger:
                policy = replace(policy, audit_rate=lane.policy.audit_rate)
            lane.set_policy(self._staged(policy))
        self.policy, self.policy_note = self.plan.champion.policy, self.plan.champion.note

    def tend_rollout(self) -> None:
        """Act on a rollout's evidence now (a server's periodic job: traffic or not); the
        deciding thread follows from its next batch."""
        if releases_sql.active_rollout(self.store, self.wf.name) is not None:
            tend(self.wf, self.store)
        self._next_look = 0.0

    @property
    def model_version(self) -> str:
        """The live champion's model version."""
        return self.plan.champion.steps[0].model.version if self.plan else self.wf.model.version

    def decide(self, records: Sequence[dict[str, Any]],
               summary: RunSummary) -> list[Item | Earlier]:
        """Decide one already-parsed batch; one answer per record, in order, once stored.

        A key decided before (or earlier in the batch) is not decided again: it answers
        :class:`Earlier` (or the batch's first copy). Not thread-safe: callers serialise.
        """
        answers, _stored = self.decide_async(records, summary)
        self._writer.wait()  # answered only once the decisions are stored
        return answers

    def decide_async(self, records: Sequence[dict[str, Any]],
                     summary: RunSummary) -> tuple[list[Item | Earlier], Future[None]]:
        """Like :meth:`decide`, but returns as soon as the batch is decided, with a future
        that completes once it is stored: the next batch is decided while this one is
        written. Keys still being written count as decided (answered :class:`Earlier`)."""
        inflight = self._inflight
        admitter = Admitter(self.wf.key, lambda keys: self._lookup_with_inflight(keys),
                            self._stored_form)
        first = summary.read + 1
        rows = [RawRow(summary.source, n, r) for n, r in enumerate(records, first)]
        admitted = admitter(rows)
        summary.read += len(rows)
        summary.duplicates += len(admitted.duplicates)
        summary.conflicts += admitted.conflicts
        self.store.resume_state(admitted.items)
        keys = [i.key for i in admitted.items]
        with self._inflight_lock:
            inflight.update((i.key, i) for i in admitted.items)
        try:
            self._process(admitted.items, summary, run_id=summary.run_id)
        except BaseException:
            self._forget_inflight(keys)
            raise
        stored = self._writer.pending or _done()
        stored.add_done_callback(lambda _f: self._forget_inflight(keys))
        answers: dict[str, Item | Earlier] = {i.key: i for i in admitted.items}
        for key, _where, rid in admitted.duplicates:
            if rid:
                answers[key] = Earlier(key, rid)
        return [answers[key] for key in admitted.keys], stored

    def _lookup_with_inflight(self, keys: list[str]) -> dict[str, Known]:
        """The store's answer, overridden by keys decided and still being written. The
        in-flight ones are read first: a write that lands in between is then in the store."""
        with self._inflight_lock:
            flying = {k: Known(i.record_id, i.disposition or "in_flight", _json.dumps(i.raw))
                      for k in keys if (i := self._inflight.get(k)) is not None}
        found = self.store.lookup(self.wf.name, keys)
        found.update(flying)
        return found

    def _forget_inflight(self, keys: list[str]) -> None:
        with self._inflight_lock:
            for key in keys:
                self._inflight.pop(key, None)

    def set_policy(self, policy: Policy) -> None:
        """The champion routes with ``policy`` from the next batch on (a calibrated or edited
        policy)."""
        if self.plan is not None:
            self.plan.champion.set_policy(policy)
        self.policy = self.predictor.policy = self.router.policy = policy

    def replay(self, disposition: str, *, progress: ProgressFn | None = None) -> RunSummary:
        """Re-process records that ended ``quarantined`` or ``failed`` (after a fix)."""
        if disposition not in ("quarantined", "failed"):
            raise ValueError("replay takes 'quarantined' or 'failed'")
        self._register()
        summary = RunSummary(self.wf.name, new_id(), f"replay:{disposition}")
        self.store.start_run(summary.run_id, self.wf.name, "replay", summary.source)
        t0 = time.perf_counter()
        rows = self.store.replayable(self.wf.name, disposition)
        self._load_breakers(reset=True)  # a replay comes after the cause was fixed
        self._open_sinks(summary)
        self._writer = _Writer()
        self.rows_writer = RowWriter(self.store, self.writer_process_after)
        self._carry, self._defer = [], True
        try:
            with young_gc_only(), prompt_event_loop(self._waits_async()):
                for start in range(0, len(rows), self.batch_size):
                    self._defer = start + self.batch_size < len(rows)
                    marks = _Marks()
                    items = [_replay_item(*row, disposition) for row in rows[start:start + self.batch_size]]
                    summary.read += len(items)
                    self.store.resume_state(items)
                    marks("admit")
                    self._process(items, summary, run_id=summary.run_id, replace=True, marks=marks)
                    if progress:
                        progress(len(items))
                self._flush(summary, run_id=summary.run_id, replace=True)
        finally:
            self._finish(summary, t0)
        return summary

    def close(self) -> None:
        """Stop the runner's event loop (closing HTTP clients) and save breaker states.

        ``run`` and ``replay`` do this when they end; a long-lived user of the stages (a
        server deciding one request at a time) calls it on shutdown.
        """
        self.loop.close()
        self._save_breakers()
        if self.budget is not None:
            self.budget.flush()

    def _finish(self, summary: RunSummary, t0: float) -> None:
        try:
            try:
                try:
                    self._writer.close()
                finally:
                    self.rows_writer.close()
            finally:
                self._defer = False
                self._close_sinks()
                self.close()
        finally:
            summary.elapsed_s = time.perf_counter() - t0
            self.store.finish_run(summary.run_id, summary.as_dict())

    def _process(self, items: list[Item], summary: RunSummary, *, run_id: str,
                 replace: bool = False, marks: _Marks | None = None) -> None:
        """Decide a batch; it is persisted by the writer while the next batch runs.

        Records, answers, decisions and events go in one transaction per batch; answers that
        were dear (cost or slow) are committed with their records before routing acts on them
        (see ``Workflow.checkpoint``). A crash loses only batches not yet committed, and those
        are decided again from their input, asking the model only for the cheap answers.
        """
        flight = self._begin(items, run_id=run_id, replace=replace, marks=marks)
        if flight is not None:
            self._land(flight, summary)

    def _begin(self, items: list[Item], *, run_id: str, replace: bool = False,
               marks: _Marks | None = None) -> _Flight | None:
        """The first half of a batch: validate, screen, pick each record's release, and start
        the model calls (on the predict thread). `keel run` begins the next batch before it
        lands this one, so the model is never idle while keel does its own work."""
        carried, self._carry = self._carry, []
        if not items and not carried:
            return None
        self._look()
        for book in self.decided:  # what other runs and workers decided meanwhile
            book.refresh()
        mark = marks if marks is not None else _Marks()
        if items:
            self._cap(items)
            self.validator(items)
            mark("validate")
            self.screener(items)
            mark("screen")
            if self.scrubber is not None:
                self.scrubber(items)
        work = carried + items
        self._run_id = run_id
        groups = self._split(work)
        defer = self._defer
        called = self._predicting.submit(_predict, groups, defer)
        return _Flight(work, groups, mark, called, run_id, replace)

    def _land(self, flight: _Flight, summary: RunSummary) -> None:
        """The second half: wait for the answers, route, build the rows, hand them to the
        writer."""
        flight.called.result()
        mark, groups, work = flight.mark, flight.groups, flight.work
        mark("predict")
        self._save_breakers()
        deferred = [i for i in work if i.deferred]
        self._carry += deferred
        shadow = self._shadow(groups) if self.plan is not None and self.plan.shadows else []
        parts: list[BatchRows] = []
        for lane, part in groups:
            done = [i for i in part if not i.deferred] if deferred else part
            lane.router(done)
            if self.scrubber is not None:
                self.scrubber(done)
                self.scrubber.done(done)
            parts.append(batch_rows(self.wf.name, flight.run_id, done, lane.policy,
                                    replace=flight.replace, sinks=self._sink_names))
        mark("route")
        rows = merge_rows(parts) if len(parts) > 1 else parts[0]
        rows.shadow = shadow
        rows.lease = self._lease
        done = [i for i in work if not i.deferred] if deferred else work
        self._writer.submit(self._persist, rows, done, summary, flight.run_id, mark)

    def _split(self, work: list[Item]) -> list[tuple[Lane, list[Item]]]:
        """Each record with the release that decides it (sticky: a record keeps its release)."""
        if self.plan is None:
            self._register()
        plan = self.plan
        assert plan is not None
        if plan.challenger is None and not self._carry_elsewhere(work):
            rid = plan.champion.release_id
            for i in work:
                if i.release_id is None:
                    i.release_id = rid
                elif i.prediction is not None and resumed_elsewhere(i, plan.champion):
                    _drop_answer(i)
            return [(plan.champion, work)]
        by_lane: dict[str, list[Item]] = {}
        for i in work:
            plan.assign(i)
            lane = self._lanes.get(i.release_id or "") or plan.champion
            if i.release_id not in self._lanes:
                i.release_id = lane.release_id
            if i.prediction is not None and resumed_elsewhere(i, lane):
                _drop_answer(i)
            by_lane.setdefault(lane.release_id, []).append(i)
        return [(self._lanes[rid], part) for rid, part in by_lane.items()]

    def _carry_elsewhere(self, work: list[Item]) -> bool:
        assert self.plan is not None
        mine = self.plan.champion.release_id
        return any(i.release_id is not None and i.release_id != mine for i in work)

    def _shadow(self, groups: list[tuple[Lane, list[Item]]]) -> list[tuple[Any, ...]]:
        """The shadows' answers for the records just answered, before routing: a record the
        two releases answer differently also goes to a person (``release_check``), so that
        every disagreement is labelled. Shadow answers are kept and never acted on."""
        assert self.plan is not None
        rows: list[tuple[Any, ...]] = []
        plan = self.plan
        for shadow, of in plan.shadows:
            deciding = plan.champion if of == "champion" else plan.challenger
            answered = [i for lane, part in groups if lane is deciding for i in part
                        if i.output is not None and not i.deferred and i.disposition is None]
            if not answered:
                continue
            clones = [shadow_clone(i) for i in answered]
            shadow.predictor(clones)
            for item, clone in zip(answered, clones, strict=True):
                if clone.output is not None and clone.output != item.output:
                    item.release_check = True
            rows += shadow_rows(self.wf.name, shadow.release_id, answered, clones)
        return rows

    def _flush(self, summary: RunSummary, *, run_id: str, replace: bool = False) -> None:
        """No next batch: retry the records still waiting, in rounds with backoff."""
        primary = self.predictor.steps[0].call if self.predictor.steps else None
        rounds = 0
        while self._carry:
            rounds += 1
            if isinstance(primary, Caller):
                time.sleep(primary.backoff_s(rounds))
            self._process([], summary, run_id=run_id, replace=replace)

    def _persist(self, rows: BatchRows, items: list[Item], summary: RunSummary, run_id: str,
                 mark: _Marks) -> None:
        self.rows_writer.write(rows)
        mark("store.outcomes")
        tally = summary.add(items, tally=self.telemetry is not None)
        for rid, n in Counter(i.release_id for i in items).items():
            summary.releases[self._names.get(rid or "", str(rid))] += n
        if self.telemetry is not None:
            self.telemetry.on_batch(self.wf, run_id, items, mark, tally)
        if self.sinks:
            self._deliver([_line(i, self._line_mask) for i in items], summary)

    def _deliver(self, lines: list[dict[str, Any]], summary: RunSummary) -> None:
        for sink in self.sinks:
            self._send(sink, lines, summary)

    def _send(self, sink: Sink, lines: list[dict[str, Any]], summary: RunSummary) -> None:
        """Write, then record in the ledger (a crash in between is undone on the next open)."""
        delivered, dead = send(sink, self.ledger, lines)
        summary.delivered += delivered
        summary.dead_letters += dead

    def _redeliver(self, record_ids: list[str], summary: RunSummary) -> None:
        """Decided records a sink has not received yet (a run that stopped before delivery)."""
        for sink in self.sinks:
            lines = self.ledger.undelivered(sink.name, record_ids)
            if lines:
                self._send(sink, lines, summary)


@dataclass(slots=True)
class _Flight:
    """A batch whose model calls are under way."""

    work: list[Item]
    groups: list[tuple[Lane, list[Item]]]
    mark: _Marks
    called: Future[None]
    run_id: str
    replace: bool


def _predict(groups: list[tuple[Lane, list[Item]]], defer: bool) -> None:
    for lane, part in groups:
        lane.predictor(part, defer=defer)


class _Writer:
    """One background thread persisting batch outcomes, at most one batch behind.

    Writing batch N overlaps deciding batch N+1 (SQLite and PostgreSQL drivers release the
    GIL while they work). An error in a write surfaces at the next submit or at close.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keel-writer")
        self._pending: Future[None] | None = None

    @property
    def pending(self) -> Future[None] | None:
        """The write in flight (the last one submitted), if any."""
        return self._pending

    def submit(self, fn: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(fn, *args)

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


def _done() -> Future[None]:
    done: Future[None] = Future()
    done.set_result(None)
    return done


#: "auto" checkpoints commit a step's answers on their own from this model time per record on
#: (a batch call's time is shared among its records; committing a batch costs ~0.03 ms a record).
DEAR_MS_PER_RECORD = 0.1


def _dear(rows: Sequence[Checkpoint]) -> bool:
    """Answers that cost money, or took longer to get than committing them separately costs."""
    slowest = 0.0
    for c in rows:
        if c.prediction.usage.cost_usd > 0:
            return True
        slowest = max(slowest, c.latency_ms)
    return slowest >= DEAR_MS_PER_RECORD


def _line(i: Item, red: Redactor) -> dict[str, Any]:
    """What a sink receives for a record: the decided output as it is (the business result);
    personal data in the key (a card number used as an id) and in the reason (a violation
    quoting the input) masked. ``record_id`` is the handle to join on."""
    known = red.known_values(i.raw) if red.sensitive else ()
    return {"key": red.text(i.key, known), "record_id": i.record_id,
            "disposition": i.disposition,
            "reason": red.text(i.reason, known) if i.reason else i.reason,
            "confidence": i.prediction.confidence if i.prediction else None,
            "model_version": i.predicted_by, "output": i.output}


def _change_control(wf: Workflow, store: Store) -> None:
    """In production the workflow file that runs must be a registered release."""
    rid = release_id(bundle(wf))
    if releases_sql.release_by_id(store, rid) is None:
        raise ChangeControl(
            f"{wf.name} is in production, and {wf.source_path or 'its workflow file'} declares a "
            "release nobody registered (the model, prompt, contract, policy or fallback "
            "changed). Register it (`keel release register WORKFLOW_PY`) and roll it out "
            "(`keel rollout start ...`); or move the workflow back to mvp (`keel promote "
            "WORKFLOW_PY --to mvp`)")


def _drop_answer(item: Item) -> None:
    """Forget a checkpointed answer from a release that no longer decides this record."""
    item.log("checkpoint_dropped", model_version=item.predicted_by,
             detail={"reason": "the release that answered no longer decides this record"})
    item.prediction = item.predicted_by = item.step_name = None


def _replay_item(record_id: str, key: str, raw: str, source: str, was: str) -> Item:
    item = Item(key=key, raw=_json.loads(raw), source=source, record_id=record_id, is_new=False)
    if "_unparsed" in item.raw:
        item.violations.append(Violation("*", "parse", "row could not be parsed"))
    item.log("replayed", detail={"was": was})
    return item
