"""Rate limits for async model calls: in-flight limit, requests/s and tokens/min.

A token bucket holds up to ``capacity`` units and refills at ``rate`` units per second.
``acquire(n)`` waits until ``n`` units are there and takes them; ``settle(n)`` takes (or
gives back) the difference once the real token count of a call is known, so the bucket may
go below zero and later calls wait for the overdraft to refill. That is how a tokens/min limit
works when a call's size is only estimated before it is sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    def __init__(self, rate: float, capacity: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a rate limit needs a positive rate and capacity")
        self.rate = rate
        self.capacity = capacity
        self.level = capacity
        self.stamp = time.monotonic()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
        self.stamp = now

    def wait_s(self, amount: float) -> float:
        """Seconds until ``amount`` units are available (0 when they are now)."""
        self._refill()
        need = min(amount, self.capacity) - self.level
        return max(0.0, need / self.rate)

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait for and take ``amount`` units; returns the seconds waited. Callers queue FIFO."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while (delay := self.wait_s(amount)) > 0:
                await asyncio.sleep(delay)
                waited += delay
            self.level -= amount
        return waited

    def settle(self, amount: float) -> None:
        """Take ``amount`` more units (negative gives them back) without waiting."""
        self._refill()
        self.level = min(self.capacity, self.level - amount)


#: take(key, rate, capacity, want) -> (granted, seconds to wait when nothing was granted)
SharedTake = Callable[[str, float, float, float], tuple[float, float]]


@dataclass(frozen=True)
class Shared:
    """Where ``RateLimits(shared=True)`` keeps its buckets: in the store, under ``prefix``
    (the workflow and the model version), drawn on by every process using that store."""

    prefix: str
    take: SharedTake
    settle: Callable[[str, float], None]


class SharedBucket:
    """A token bucket kept in the store: any number of processes, on any number of machines,
    together take no more than it gives (keel.store.limits)."""

    def __init__(self, key: str, rate: float, capacity: float, shared: Shared) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("a rate limit needs a positive rate and capacity")
        self.key, self.rate, self.capacity, self.shared = key, rate, capacity, shared
        self._lock: asyncio.Lock | None = None

    async def acquire(self, amount: float = 1.0) -> float:
        """Wait for and take ``amount`` units from the store's bucket; the seconds waited."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        waited = 0.0
        async with self._lock:
            while True:
                granted, wait_s = await asyncio.to_thread(
                    self.shared.take, self.key, self.rate, self.capacity, amount)
                if granted:
                    return waited
                await asyncio.sleep(wait_s)
                waited += wait_s

    def settle(self, amount: float) -> None:
        """Take ``amount`` more units (negative gives them back), off the event loop."""
        asyncio.get_running_loop().run_in_executor(None, self.shared.settle, self.key, amount)


@dataclass(frozen=True)
class RateLimits:
    """Limits for one async/HTTP model: calls in flight, requests per second, tokens per minute.

    ``tokens_per_call`` is the estimate taken from the tokens/min bucket before a call; the
    real usage reported by the model settles the difference afterwards.

    ``shared``: the requests/s and tokens/min buckets live in the store, so that every process
    deciding this workflow with this model version (``keel worker`` on many machines, servers,
    runs) stays within them together, at the cost of a store round trip per call. Without
    it each process has buckets of its own. ``max_concurrency`` is always per process.
    """

    max_concurrency: int = 16
    requests_per_s: float | None = None
    tokens_per_min: float | None = None
    tokens_per_call: int = 500
    shared: bool = False

    def __post_init__(self) -> None:
        if self.max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")


class Limiter:
    """The live state of one model's :class:`RateLimits` (bound to one event loop)."""

    def __init__(self, limits: RateLimits, shared: Shared | None = None) -> None:
        self.limits = limits
        self.slots = asyncio.Semaphore(limits.max_concurrency)
        rps = limits.requests_per_s
        tpm = limits.tokens_per_min
        self.requests: TokenBucket | SharedBucket | None = None
        self.tokens: TokenBucket | SharedBucket | None = None
        if limits.shared and shared is not None:
            if rps:
                self.requests = SharedBucket(f"{shared.prefix}/requests", rps, max(1.0, rps),
                                             shared)
            if tpm:
                self.tokens = SharedBucket(f"{shared.prefix}/tokens", tpm / 60.0, tpm, shared)
        else:
            self.requests = TokenBucket(rps, max(1.0, rps)) if rps else None
            self.tokens = TokenBucket(tpm / 60.0, tpm) if tpm else None

    async def enter(self) -> float:
        """Take a slot and the call's budget; returns the seconds spent waiting."""
        await self.slots.acquire()
        waited = 0.0
        try:
            if self.requests is not None:
                waited += await self.requests.acquire(1.0)
            if self.tokens is not None:
                waited += await self.tokens.acquire(float(self.limits.tokens_per_call))
        except BaseException:
            self.slots.release()
            raise
        return waited

    def leave(self, tokens_used: int | None) -> None:
        if self.tokens is not None and tokens_used is not None:
            self.tokens.settle(tokens_used - self.limits.tokens_per_call)
        self.slots.release()
