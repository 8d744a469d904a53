"""FakeModel: a model for tests and docs that can be slow, wrong, or broken on purpose."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from keel._prediction import Prediction, Usage
from keel.errors import MalformedOutput, ModelTimeout, ModelUnavailable, RateLimited
from keel.models._base import Model, Outcome, hash_text, source_hash


class FakeModel(Model):
    """Answers ``output(input)`` (or a fixed output) with ``confidence`` (a number or a function).

    Fault injection, per record and seeded so a test is repeatable:
    ``error_rate`` (5xx-like, retryable), ``timeout_rate`` (the call hangs for ``hang_s``;
    a resilience timeout must cut it), ``malformed_rate`` (an output that breaks the output
    contract), ``rate_limit_rate`` (429 with ``retry_after_s``). ``latency_ms`` is added per
    call: a number, ``(mean, sd)`` for a normal distribution clipped at zero, or a function
    of a ``random.Random`` (``lambda r: r.lognormvariate(3, 0.5)``) for any other shape.
    A sync call hangs as a whole when any of its records hangs (one batch is one request).
    ``is_async=True`` makes it an async model. ``calls`` counts records sent to it.
    """

    kind = "fake"

    def __init__(
        self,
        output: Any = None,
        *,
        confidence: float | Callable[[Any], float] = 0.9,
        name: str = "fake",
        seed: int = 0,
        error_rate: float = 0.0,
        timeout_rate: float = 0.0,
        malformed_rate: float = 0.0,
        rate_limit_rate: float = 0.0,
        retry_after_s: float = 0.01,
        latency_ms: float | tuple[float, float] | Callable[[random.Random], float] = 0.0,
        hang_s: float = 30.0,
        cost_usd: float = 0.0,
        is_async: bool = False,
    ) -> None:
        self.output = output if output is not None else {"label": "ok"}
        self.confidence = confidence
        self.name = name
        self.rng = random.Random(seed)
        self.error_rate = error_rate
        self.timeout_rate = timeout_rate
        self.malformed_rate = malformed_rate
        self.rate_limit_rate = rate_limit_rate
        self.retry_after_s = retry_after_s
        self.latency_ms = latency_ms
        self.hang_s = hang_s
        self.cost_usd = cost_usd
        self.is_async = is_async
        self.calls = 0
        parts = [name, repr(confidence) if not callable(confidence) else source_hash(confidence)]
        parts.append(source_hash(self.output) if callable(self.output) else repr(self.output))
        self._version = f"fake-{hash_text(*parts, length=10)}"

    @property
    def version(self) -> str:
        return self._version

    def _delay_s(self) -> float:
        if callable(self.latency_ms):
            return max(0.0, float(self.latency_ms(self.rng))) / 1000.0
        if isinstance(self.latency_ms, tuple):
            mean, sd = self.latency_ms
            return max(0.0, self.rng.gauss(mean, sd)) / 1000.0
        return self.latency_ms / 1000.0

    def _answer(self, item: BaseModel) -> Outcome | None:
        """The outcome for one record, or None when this record's call should hang."""
        self.calls += 1
        roll = self.rng.random()
        edges = (self.timeout_rate, self.error_rate, self.rate_limit_rate, self.malformed_rate)
        if roll < edges[0]:
            return None
        roll -= edges[0]
        if roll < edges[1]:
            return ModelUnavailable(f"{self.name}: injected 503 Service Unavailable")
        roll -= edges[1]
        if roll < edges[2]:
            return RateLimited(f"{self.name}: injected 429 Too Many Requests",
                               retry_after_s=self.retry_after_s)
        roll -= edges[2]
        usage = Usage(input_tokens=10, output_tokens=2, cost_usd=self.cost_usd)
        if roll < edges[3]:
            return Prediction(output={"garbage": "}{"}, confidence=0.99, usage=usage)
        out = self.output(item) if callable(self.output) else dict(self.output)
        conf = self.confidence(item) if callable(self.confidence) else self.confidence
        try:
            return Prediction(output=out, confidence=conf, usage=usage)
        except ValueError as exc:
            return MalformedOutput(f"{self.name}: {exc}")

    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        answers = [self._answer(item) for item in inputs]
        delay = self._delay_s()
        if any(a is None for a in answers):
            delay = max(delay, self.hang_s)
        if delay:
            time.sleep(delay)
        return [a if a is not None else ModelTimeout(f"{self.name}: hung") for a in answers]

    async def apredict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        if not self.is_async:
            return await super().apredict(inputs)
        return list(await asyncio.gather(*(self._one_async(item) for item in inputs)))

    async def _one_async(self, item: BaseModel) -> Outcome:
        answer = self._answer(item)
        delay = self._delay_s() if answer is not None else self.hang_s
        if delay:
            await asyncio.sleep(delay)
        return answer if answer is not None else ModelTimeout(f"{self.name}: hung")
