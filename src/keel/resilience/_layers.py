"""Layers around a model call, each with one job, stacked like httpx's transports::

    Retry -> Breaker -> Limit -> Timeout -> Direct -> model

``Direct`` calls the model once (a sync model on a thread that can be abandoned, an async
model on the runner's event loop); ``Timeout`` cuts a call that takes too long; ``Limit``
holds async calls to an in-flight limit, requests/s and tokens/min; ``Breaker`` skips the call
while the model's circuit is open; ``Retry`` tries retryable failures again with backoff,
honouring Retry-After, within the record's latency budget.

Every layer takes a batch of inputs and returns one :class:`CallResult` per input: the final
outcome plus every attempt made, so retries show in the audit trail and in cost.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from pydantic import BaseModel

from keel._prediction import NO_USAGE, Prediction, Usage
from keel.errors import (
    CircuitOpen,
    DeadlineExceeded,
    ModelError,
    ModelTimeout,
    NonRetryableModelError,
    RetryableModelError,
)
from keel.resilience._breaker import HALF_OPEN, OPEN, CircuitBreaker
from keel.resilience._loop import LoopThread, in_thread
from keel.resilience._ratelimit import Limiter, RateLimits, Shared
from keel.resilience._settings import Resilience, RetryPolicy

if TYPE_CHECKING:
    from keel.models import Model
    from keel.models._base import Outcome


@dataclass(slots=True)
class Attempt:
    """One try at one record: what went wrong (if anything), how long, what it cost.

    ``request`` numbers the model request the try was part of (records sent together share
    it; 0: no request was sent, e.g. the breaker was open). ``latency_ms`` is the record's
    share of the request's time.
    """

    error: str | None
    code: str | None
    latency_ms: float
    cost_usd: float = 0.0
    request: int = 0
    #: what the try spent, failed or not (a paid answer that broke the contract keeps its
    #: tokens); None when nothing came back
    usage: Usage | None = None


#: Request numbers, unique within the process (``next`` on a count is atomic in CPython).
_requests = itertools.count(1)


@dataclass(slots=True)
class CallResult:
    outcome: Outcome
    attempts: list[Attempt] = field(default_factory=list)
    #: why retries stopped before ``max_attempts`` when something other than the outcome
    #: decided it (the circuit opened while the record waited for its next try)
    cut_short: str | None = None


#: Local rules: one plain call, nothing around it.
LOCAL = Resilience(retry=RetryPolicy(max_attempts=1), timeout_s=None, breaker=None, limits=None)


@dataclass(slots=True)
class Budget:
    """A record's latency budget at one step (``deadline`` on the monotonic clock).

    ``defer``: transient errors without a Retry-After are not retried inside this call;
    the runner sends those records again with its next batch (see :meth:`Caller.may_defer`).
    """

    deadline: float | None
    defer: bool = False
    #: attempts each record of the call already made (in earlier calls), by position
    prior: Sequence[int] = ()

    @classmethod
    def start(cls, seconds: float | None, defer: bool = False,
              prior: Sequence[int] = ()) -> Budget:
        return cls(None if seconds is None else time.monotonic() + seconds, defer, prior)

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()


Layer = Callable[[Sequence[BaseModel], Budget], Awaitable[list[CallResult]]]


def _failed(err: ModelError, n: int, latency_ms: float, request: int = 0) -> list[CallResult]:
    share = latency_ms / max(1, n)
    return [CallResult(err, [Attempt(err.message, err.code, share, err.cost_usd, request)])
            for _ in range(n)]


def _attempt(outcome: Outcome, latency_ms: float, request: int) -> Attempt:
    if isinstance(outcome, Prediction):
        return Attempt(None, None, latency_ms, outcome.usage.cost_usd, request, outcome.usage)
    spent = outcome.usage if outcome.usage is not NO_USAGE else None
    return Attempt(outcome.message, outcome.code, latency_ms, outcome.cost_usd, request, spent)


class Direct:
    """The innermost layer: call the model once, time it, attach per-record attempts."""

    def __init__(self, model: Model, *, threaded: bool) -> None:
        self.model = model
        self.threaded = threaded

    async def __call__(self, inputs: Sequence[BaseModel], budget: Budget) -> list[CallResult]:
        model = self.model
        request = next(_requests)
        t0 = time.perf_counter()
        try:
            if model.is_async:
                outcomes = await model.apredict(inputs)
            elif self.threaded:
                outcomes = await in_thread(lambda: model.predict(inputs))
            else:
                outcomes = model.predict(inputs)
        except ModelError as exc:
            outcomes = [exc] * len(inputs)
        except Exception as exc:  # a model crash fails this call's records, never the run
            err = ModelError(f"model {model.name!r} raised {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            outcomes = [err] * len(inputs)
        if len(outcomes) != len(inputs):
            outcomes = [NonRetryableModelError(
                f"model {model.name!r} returned {len(outcomes)} results for {len(inputs)} inputs"
            )] * len(inputs)
        per_record_ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(inputs))
        return [CallResult(o, [_attempt(o, per_record_ms, request)]) for o in outcomes]


class Timeout:
    """Cuts a call after ``timeout_s`` (or what is left of the budget, if less)."""

    def __init__(self, inner: Layer, timeout_s: float | None, model_name: str) -> None:
        self.inner = inner
        self.timeout_s = timeout_s
        self.model_name = model_name

    async def __call__(self, inputs: Sequence[BaseModel], budget: Budget) -> list[CallResult]:
        left = budget.remaining()
        limit = self.timeout_s if left is None else min(left, self.timeout_s or left)
        if limit is None:
            return await self.inner(inputs, budget)
        if limit <= 0:
            return _failed(ModelTimeout(f"model {self.model_name!r}: no time left in the "
                                        "latency budget"), len(inputs), 0.0)
        t0 = time.perf_counter()
        try:
            # asyncio.timeout cuts the call in this task (wait_for would start a task per call)
            async with asyncio.timeout(limit):
                return await self.inner(inputs, budget)
        except TimeoutError:
            err = ModelTimeout(f"model {self.model_name!r} did not answer within {limit:.3g} s")
            return _failed(err, len(inputs), (time.perf_counter() - t0) * 1000.0,
                           next(_requests))


class Limit:
    """In-flight limit, requests/s and tokens/min for an async model (state per event loop)."""

    def __init__(self, inner: Layer, limits: RateLimits,
                 breaker: CircuitBreaker | None = None, shared: Shared | None = None) -> None:
        self.inner = inner
        self.limits = limits
        self.shared = shared  # where RateLimits(shared=True) keeps its buckets
        self.breaker = breaker  # checked again once a slot is free: it may have opened
        self._limiter: Limiter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def limiter(self) -> Limiter:
        loop = asyncio.get_running_loop()
        if self._limiter is None or self._loop is not loop:
            self._limiter, self._loop = Limiter(self.limits, self.shared), loop
        return self._limiter

    async def __call__(self, inputs: Sequence[BaseModel], budget: Budget) -> list[CallResult]:
        limiter = self.limiter()
        await limiter.enter()
        tokens: int | None = None
        if self.breaker is not None and self.breaker.state == OPEN:
            limiter.leave(None)
            return _skipped(self.breaker, len(inputs))
        try:
            results = await self.inner(inputs, budget)
            tokens = sum(r.outcome.usage.input_tokens + r.outcome.usage.output_tokens
                         for r in results if isinstance(r.outcome, Prediction))
            return results
        finally:
            limiter.leave(tokens)


def unwell(outcome: Outcome) -> bool:
    """Does this outcome say the model is unwell (timeouts, 5xx, 429)?"""
    return isinstance(outcome, RetryableModelError)


def _skipped(breaker: CircuitBreaker, n: int) -> list[CallResult]:
    """The circuit is open: no call, so no attempt (the fallback records the cause)."""
    err = CircuitOpen(f"circuit open for model version {breaker.model_version}: not called")
    return [CallResult(err, []) for _ in range(n)]


class Breaker:
    """Skips the call while the model's circuit is open; feeds every call's outcome to it."""

    def __init__(self, inner: Layer, breaker: CircuitBreaker, model_name: str) -> None:
        self.inner = inner
        self.breaker = breaker
        self.model_name = model_name

    async def __call__(self, inputs: Sequence[BaseModel], budget: Budget) -> list[CallResult]:
        if not self.breaker.allow():
            return _skipped(self.breaker, len(inputs))
        probe = self.breaker.state == HALF_OPEN
        try:
            results = await self.inner(inputs, budget)
        except BaseException:
            self.breaker.release()
            raise
        seen = [not unwell(r.outcome) for r in results if not isinstance(r.outcome, CircuitOpen)]
        if seen:
            self.breaker.record(seen, probe=probe)
        elif probe:
            self.breaker.release()
        return results


def _hint(outcome: Outcome) -> float:
    return (outcome.retry_after_s or 0.0) if isinstance(outcome, ModelError) else 0.0


class Retry:
    """Tries records whose outcome is a retryable error again, with backoff between rounds."""

    def __init__(self, inner: Layer, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.rng = random.Random(policy.seed)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests record waits

    async def __call__(self, inputs: Sequence[BaseModel], budget: Budget) -> list[CallResult]:
        results = await self.inner(inputs, budget)
        skipped: set[int] = set()  # found the circuit open: on to the fallback
        prior = list(budget.prior) or [0] * len(inputs)
        for attempt in range(2, self.policy.max_attempts + 1):
            # a Retry-After longer than max_delay_s is not waited for either
            again = [i for i, r in enumerate(results)
                     if unwell(r.outcome) and _hint(r.outcome) <= self.policy.max_delay_s
                     and i not in skipped and (_hint(r.outcome) > 0 or not budget.defer)
                     and prior[i] + len(r.attempts) < self.policy.max_attempts]
            if not again:
                break
            wait = self._wait(attempt, [results[i].outcome for i in again])
            left = budget.remaining()
            if left is not None and wait >= left:
                self._give_up(results, again)
                break
            await self.sleep(wait)
            retried = await self.inner([inputs[i] for i in again],
                                       replace(budget, prior=[prior[i] for i in again]))
            for i, res in zip(again, retried, strict=True):
                kept, cut = res.outcome, results[i].cut_short
                if isinstance(res.outcome, CircuitOpen):  # not the cause: keep the real error
                    kept = results[i].outcome
                    skipped.add(i)
                    cut = (f"the circuit opened after {prior[i] + len(results[i].attempts)} of "
                           f"{self.policy.max_attempts} attempts: {res.outcome.message}")
                results[i] = CallResult(kept, results[i].attempts + res.attempts, cut)
        left = budget.remaining()
        if left is not None and left <= 0:
            self._give_up(results, [i for i, r in enumerate(results) if unwell(r.outcome)])
        return results

    def _wait(self, attempt: int, outcomes: list[Outcome]) -> float:
        """Seconds to wait before the next round: the longest Retry-After, else backoff."""
        hints = [_hint(o) for o in outcomes if isinstance(o, ModelError) and o.retry_after_s]
        return self.policy.delay_s(attempt - 1, self.rng, max(hints, default=None))

    def _give_up(self, results: list[CallResult], idx: list[int]) -> None:
        for i in idx:
            res = results[i]
            last = res.outcome
            assert isinstance(last, ModelError)
            msg = (f"latency budget of {self.policy.deadline_s:.3g} s spent after "
                   f"{len(res.attempts)} attempt(s); last error: {last.message}")
            results[i] = CallResult(DeadlineExceeded(msg), res.attempts, res.cut_short)


class Caller:
    """One step's model with its layers, run on the runner's event loop.

    Sync models get the whole batch in one call (or ``Resilience.threads`` shares of it, at
    once); async models get one request per ``model.request_size`` records (1 by default),
    sent concurrently within the limits.
    """

    def __init__(self, model: Model, resilience: Resilience, loop: LoopThread,
                 breaker: CircuitBreaker | None = None) -> None:
        self.model = model
        self.resilience = resilience
        self.loop = loop
        self.shared: Shared | None = None
        self.set_breaker(breaker)

    def share(self, shared: Shared) -> None:
        """Keep ``RateLimits(shared=True)``'s buckets where ``shared`` says (the store)."""
        self.shared = shared
        self.set_breaker(self.breaker)

    def set_breaker(self, breaker: CircuitBreaker | None) -> None:
        """(Re)build the stack, with the model version's breaker once it is known."""
        model, res = self.model, self.resilience
        self.breaker = breaker
        layer: Layer = Direct(model, threaded=res.timeout_s is not None or res.threads > 1)
        if res.timeout_s is not None:
            layer = Timeout(layer, res.timeout_s, model.name)
        if model.is_async and res.limits is not None:
            layer = Limit(layer, res.limits, breaker, self.shared)
        if breaker is not None:
            layer = Breaker(layer, breaker, model.name)
        self.stack: Layer = Retry(layer, res.retry)

    def __call__(self, inputs: Sequence[BaseModel], *, defer: bool = False,
                 prior: Sequence[int] = ()) -> list[CallResult]:
        """``prior``: attempts each record made in earlier calls (records carried over)."""
        if not inputs:
            return []
        return self.loop.run(self.acall(inputs, defer=defer and self.can_defer, prior=prior))

    @property
    def can_defer(self) -> bool:
        """Retries may wait for the next batch unless a latency budget is set."""
        return self.resilience.retry.deadline_s is None

    def backoff_s(self, attempt: int) -> float:
        """The wait before retry round ``attempt`` (for records the runner carried over)."""
        retry = self.stack
        assert isinstance(retry, Retry)
        return self.resilience.retry.delay_s(attempt, retry.rng, None)

    def may_defer(self, result: CallResult, attempts: int) -> bool:
        """Should this record be sent again with the next batch rather than fall back?"""
        out = result.outcome
        return (self.can_defer and unwell(out) and not _hint(out)
                and attempts < self.resilience.retry.max_attempts)

    async def acall(self, inputs: Sequence[BaseModel], defer: bool = False,
                    prior: Sequence[int] = ()) -> list[CallResult]:
        deadline_s = self.resilience.retry.deadline_s
        if self.model.is_async:
            size = self.model.request_size or len(inputs)
        else:  # a sync model: the batch, or an equal share of it per thread
            size = -(-len(inputs) // self.resilience.threads)
        tried = list(prior) or [0] * len(inputs)
        starts = range(0, len(inputs), size)
        parts = await asyncio.gather(*(
            self.stack(inputs[i:i + size], Budget.start(deadline_s, defer, tried[i:i + size]))
            for i in starts))
        return [res for part in parts for res in part]


def resilience_for(model: Model, default: Resilience | None = None,
                   retry: RetryPolicy | None = None) -> Resilience:
    """The model's own settings, else the workflow's; local rules get a plain call."""
    chosen: Resilience | None = getattr(model, "resilience", None)
    if chosen is None:
        chosen = LOCAL if model.kind == "rules" else (default or Resilience())
    if retry is not None:
        chosen = replace(chosen, retry=retry)
    return chosen


def build_caller(model: Model, retry: RetryPolicy | None = None, *,
                 resilience: Resilience | None = None, loop: LoopThread | None = None,
                 breaker: CircuitBreaker | None = None) -> Caller:
    """A caller for ``model`` (its own event loop unless one is given; no breaker unless given).
    An async model's HTTP clients close with a loop made here (``caller.loop.close()``)."""
    own = loop is None
    loop = loop or LoopThread()
    if own and model.is_async:
        loop.on_close.append(model.aclose)
    return Caller(model, resilience_for(model, resilience, retry), loop, breaker)
