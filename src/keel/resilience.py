"""Layers around a model call: retry with backoff (more layers stack the same way).

A caller takes a batch of inputs and returns one :class:`CallResult` per input: the final
outcome plus every attempt made, so retries are visible in the audit trail and in cost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import BaseModel

from keel._prediction import Prediction
from keel.errors import ModelError
from keel.models._base import Model, Outcome


@dataclass(slots=True)
class Attempt:
    """One try at one record: what went wrong (if anything), how long, what it cost."""

    error: str | None
    code: str | None
    latency_ms: float
    cost_usd: float = 0.0


@dataclass(slots=True)
class CallResult:
    outcome: Outcome
    attempts: list[Attempt] = field(default_factory=list)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; only retryable model errors are retried."""

    max_attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0
    seed: int | None = None

    def delay_s(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return min(retry_after_s, self.max_delay_s)
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(0, cap)


class Direct:
    """The innermost layer: call the model once, time it, attach per-record attempts."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def __call__(self, inputs: Sequence[BaseModel]) -> list[CallResult]:
        t0 = time.perf_counter()
        try:
            outcomes = self.model.predict(inputs)
        except ModelError as exc:
            outcomes = [exc] * len(inputs)
        except Exception as exc:  # a model crash fails this batch's records, never the run
            err = ModelError(f"model {self.model.name!r} raised {type(exc).__name__}: {exc}")
            err.__cause__ = exc
            outcomes = [err] * len(inputs)
        per_record_ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(inputs))
        return [CallResult(o, [_attempt(o, per_record_ms)]) for o in outcomes]


def _attempt(outcome: Outcome, latency_ms: float) -> Attempt:
    if isinstance(outcome, Prediction):
        return Attempt(None, None, latency_ms, outcome.usage.cost_usd)
    return Attempt(outcome.message, outcome.code, latency_ms)


class Retry:
    """Retries the records whose outcome is a retryable error, with backoff between rounds."""

    def __init__(self, inner: Direct, policy: RetryPolicy) -> None:
        self.inner = inner
        self.policy = policy
        self.rng = random.Random(policy.seed)

    def __call__(self, inputs: Sequence[BaseModel]) -> list[CallResult]:
        results = self.inner(inputs)
        for attempt in range(2, self.policy.max_attempts + 1):
            again = [i for i, r in enumerate(results)
                     if isinstance(r.outcome, ModelError) and r.outcome.retryable]
            if not again:
                break
            waits = [r.outcome.retry_after_s for r in (results[i] for i in again)
                     if isinstance(r.outcome, ModelError)]
            hint = max((w for w in waits if w is not None), default=None)
            time.sleep(self.policy.delay_s(attempt - 1, self.rng, hint))
            retried = self.inner([inputs[i] for i in again])
            for i, res in zip(again, retried, strict=True):
                results[i] = CallResult(res.outcome, results[i].attempts + res.attempts)
        return results


def build_caller(model: Model, retry: RetryPolicy | None = None) -> Retry:
    return Retry(Direct(model), retry or RetryPolicy())
