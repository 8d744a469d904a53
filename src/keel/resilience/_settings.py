"""How a model is called: the settings a workflow declares (retry, timeout, breaker, limits).
Plain values, no behaviour: the layers that act on them are in ``_layers.py``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from keel.resilience._breaker import BreakerPolicy
from keel.resilience._ratelimit import RateLimits


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; only retryable model errors are retried.

    ``deadline_s`` is the latency budget of one record at one step of the chain: attempts,
    waits between them and time queued for a rate limit all count; when it is spent the
    record moves on to the fallback chain. A Retry-After longer than ``max_delay_s`` is not
    waited for: the record moves on.
    """

    max_attempts: int = 3
    base_delay_s: float = 0.05
    max_delay_s: float = 5.0
    deadline_s: float | None = None
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")

    def delay_s(self, attempt: int, rng: random.Random, retry_after_s: float | None) -> float:
        if retry_after_s is not None:
            return retry_after_s
        cap = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        return rng.uniform(0, cap)


@dataclass(frozen=True)
class Resilience:
    """How one model is called. ``timeout_s`` is per call: one request for an async model, a
    batch (or a share of it, see ``threads``) for a sync model. ``limits`` apply to async
    models only. ``breaker=None`` or ``timeout_s=None`` switch that layer off.

    ``threads``: a sync model's batch is split into this many shares, called at once, each
    on a thread of its own (for a model that waits: an HTTP client, a C library that lets go
    of the GIL, an OCR engine). 1: the whole batch in one call.
    """

    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout_s: float | None = 60.0
    breaker: BreakerPolicy | None = field(default_factory=BreakerPolicy)
    limits: RateLimits | None = field(default_factory=RateLimits)
    threads: int = 1

    def __post_init__(self) -> None:
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive (or None for no timeout)")
        if self.threads < 1:
            raise ValueError("threads must be at least 1")
