"""The layers around a model call: retry, timeout, limits, breaker (no store needed)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from tests._workflows import Msg

import keel
from keel.resilience import BreakerPolicy, Caller, RateLimits, Resilience, RetryPolicy
from keel.resilience._breaker import CLOSED, HALF_OPEN, OPEN, BreakerState, CircuitBreaker
from keel.resilience._layers import Limit
from keel.resilience._loop import LoopThread
from keel.resilience._ratelimit import TokenBucket


@pytest.fixture
def loop() -> Iterator[LoopThread]:
    lt = LoopThread()
    yield lt
    lt.close()


def msgs(n: int) -> list[Msg]:
    return [Msg(id=f"m{i}", text=f"text {i}") for i in range(n)]


def caller(model: keel.Model, loop: LoopThread, breaker: CircuitBreaker | None = None,
           **kw: Any) -> Caller:
    return Caller(model, Resilience(**kw), loop, breaker)


def record_waits(c: Caller) -> list[float]:
    waits: list[float] = []

    async def fake_sleep(s: float) -> None:
        waits.append(s)

    c.stack.sleep = fake_sleep  # type: ignore[attr-defined]
    return waits


class Flaky:
    """Fails the first ``n`` calls per record with ``error``, then answers."""

    def __init__(self, n: int, error: type[keel.ModelError], **kw: Any) -> None:
        self.left: dict[str, int] = {}
        self.n, self.error, self.kw = n, error, kw

    def __call__(self, msg: Msg) -> tuple[dict[str, str], float]:
        left = self.left.setdefault(msg.id, self.n)
        if left:
            self.left[msg.id] = left - 1
            raise self.error("injected", **self.kw)
        return {"label": "ok"}, 0.9


def test_retryable_errors_are_retried_and_every_attempt_kept(loop: LoopThread) -> None:
    c = caller(keel.FunctionModel(Flaky(2, keel.ModelUnavailable)), loop,
               retry=RetryPolicy(max_attempts=3, seed=1))
    waits = record_waits(c)
    (res,) = c(msgs(1))
    assert isinstance(res.outcome, keel.Prediction)
    assert [a.code for a in res.attempts] == ["keel.model.unavailable"] * 2 + [None]
    assert len(waits) == 2
    assert 0 <= waits[0] <= 0.05 and 0 <= waits[1] <= 0.1  # full jitter under 2**n * base


def test_backoff_is_seeded_and_capped(loop: LoopThread) -> None:
    def run() -> list[float]:
        c = caller(keel.FunctionModel(Flaky(6, keel.ModelTimeout)), loop,
                   retry=RetryPolicy(max_attempts=7, base_delay_s=1.0, max_delay_s=4.0, seed=7))
        waits = record_waits(c)
        c(msgs(1))
        return waits

    first = run()
    assert first == run()
    assert len(first) == 6 and max(first) <= 4.0


def test_non_retryable_errors_are_not_retried(loop: LoopThread) -> None:
    c = caller(keel.FunctionModel(Flaky(1, keel.NonRetryableModelError)), loop)
    (res,) = c(msgs(1))
    assert isinstance(res.outcome, keel.NonRetryableModelError)
    assert len(res.attempts) == 1


def test_retry_after_is_honoured(loop: LoopThread) -> None:
    c = caller(keel.FunctionModel(Flaky(1, keel.RateLimited, retry_after_s=1.5)), loop)
    waits = record_waits(c)
    (res,) = c(msgs(1))
    assert isinstance(res.outcome, keel.Prediction)
    assert waits == [1.5]


def test_retry_after_longer_than_max_delay_moves_on(loop: LoopThread) -> None:
    c = caller(keel.FunctionModel(Flaky(1, keel.RateLimited, retry_after_s=60.0)), loop,
               retry=RetryPolicy(max_delay_s=5.0))
    waits = record_waits(c)
    (res,) = c(msgs(1))
    assert isinstance(res.outcome, keel.RateLimited)
    assert waits == [] and len(res.attempts) == 1


def test_latency_budget_stops_retries(loop: LoopThread) -> None:
    def slow_and_broken(msg: Msg) -> Any:
        time.sleep(0.03)
        raise keel.ModelUnavailable("down")

    c = caller(keel.FunctionModel(slow_and_broken), loop,
               retry=RetryPolicy(max_attempts=50, base_delay_s=0.001, deadline_s=0.05))
    (res,) = c(msgs(1))
    assert isinstance(res.outcome, keel.DeadlineExceeded)
    assert res.outcome.code == "keel.model.deadline"
    assert 1 <= len(res.attempts) < 50
    assert "latency budget" in res.outcome.message


@pytest.mark.parametrize("is_async", [False, True])
def test_a_hung_call_is_cut_by_the_timeout(loop: LoopThread, is_async: bool) -> None:
    model = keel.FakeModel(timeout_rate=1.0, hang_s=30.0, is_async=is_async)
    c = caller(model, loop, timeout_s=0.05, retry=RetryPolicy(max_attempts=2, base_delay_s=0.001))
    results = c(msgs(3))
    assert all(isinstance(r.outcome, keel.ModelTimeout) for r in results)
    assert all(len(r.attempts) == 2 for r in results)
    assert "did not answer within" in results[0].attempts[0].error  # type: ignore[operator]


def test_async_calls_respect_the_in_flight_limit(loop: LoopThread) -> None:
    live = peak = 0
    lock = threading.Lock()

    async def answer(msg: Msg) -> tuple[dict[str, str], float]:
        nonlocal live, peak
        with lock:
            live += 1
            peak = max(peak, live)
        await asyncio.sleep(0.005)
        with lock:
            live -= 1
        return {"label": "ok"}, 0.9

    c = caller(keel.FunctionModel(answer), loop, limits=RateLimits(max_concurrency=3))
    results = c(msgs(20))
    assert all(isinstance(r.outcome, keel.Prediction) for r in results)
    assert peak == 3


def test_token_bucket_waits_for_overdraft() -> None:
    bucket = TokenBucket(rate=100.0, capacity=100.0)
    assert bucket.wait_s(100) == 0.0
    asyncio.run(bucket.acquire(100))
    assert bucket.wait_s(50) > 0.3  # empty: 50 tokens take ~0.5 s at 100/s
    bucket.settle(-100)  # the call used far fewer tokens than estimated: give them back
    assert bucket.wait_s(50) == 0.0
    bucket.settle(300)  # ...or far more: later calls wait for the overdraft
    assert bucket.wait_s(1) > 2.0


def test_breaker_opens_half_opens_and_closes_after_successes() -> None:
    br = CircuitBreaker("v1", BreakerPolicy(window=10, min_calls=4, failure_ratio=0.5,
                                            reset_timeout_s=60.0, success_threshold=2))
    br.record([True, False, True])
    assert br.state == CLOSED  # fewer than min_calls outcomes
    br.record([False, False])
    assert br.state == OPEN and not br.allow()
    br.opened_at = time.time() - 61  # the cool-down has passed
    assert br.allow() and br.state == HALF_OPEN
    assert not br.allow()  # one probe at a time
    br.record([False])
    assert br.state == OPEN  # the probe failed
    br.opened_at = time.time() - 61
    for _ in range(2):
        assert br.allow()
        br.record([True])
    assert br.state == CLOSED and br.allow()


def test_breaker_stays_closed_under_scattered_transient_errors() -> None:
    import random

    rng = random.Random(3)
    br = CircuitBreaker("v1", BreakerPolicy())
    for _ in range(200):
        br.record([rng.random() >= 0.2 for _ in range(50)])
    assert br.state == CLOSED


def test_open_breaker_skips_the_model_and_restores_from_store_state(loop: LoopThread) -> None:
    model = keel.FakeModel(timeout_rate=1.0, hang_s=30.0)
    br = CircuitBreaker(model.version, BreakerPolicy(min_calls=5, window=10))
    c = caller(model, loop, br, timeout_s=0.05, retry=RetryPolicy(max_attempts=3))
    record_waits(c)
    first = c(msgs(10))
    assert br.state == OPEN
    # the retry round found the circuit open: no second call was made, the cause is kept
    assert [a.code for a in first[0].attempts] == ["keel.model.timeout"]
    assert isinstance(first[0].outcome, keel.ModelTimeout)
    calls = model.calls
    again = c(msgs(10))
    assert model.calls == calls
    assert all(isinstance(r.outcome, keel.CircuitOpen) for r in again)
    fresh = CircuitBreaker(model.version, BreakerPolicy())
    fresh.restore(BreakerState("tickets", model.version, OPEN, 10, time.time(), time.time()))
    assert not fresh.allow()


def test_unwell_batch_call_fills_the_window() -> None:
    """A sync batch whose call timed out counts every record as a failure."""
    br = CircuitBreaker("v", BreakerPolicy(window=50, min_calls=20))
    br.record([False] * 500)
    assert br.state == OPEN and br.failures == 50


def test_fake_model_faults_are_seeded_and_near_their_rates() -> None:
    def outcomes(seed: int) -> list[str]:
        model = keel.FakeModel(seed=seed, error_rate=0.1, malformed_rate=0.1,
                               rate_limit_rate=0.1, retry_after_s=2.5,
                               latency_ms=lambda r: r.expovariate(100.0))
        out = []
        for m in msgs(2000):
            (o,) = model.predict([m])
            if isinstance(o, keel.Prediction):
                out.append("garbage" if "garbage" in o.output else "ok")
            else:
                out.append(type(o).__name__)
                if isinstance(o, keel.RateLimited):
                    assert o.retry_after_s == 2.5
        return out

    first = outcomes(1)
    assert first == outcomes(1) and first != outcomes(2)
    share = Counter(first)
    for kind in ("ModelUnavailable", "RateLimited", "garbage"):
        assert 150 < share[kind] < 250  # 10% of 2,000, give or take


def test_fake_model_timeouts_hang_until_cut() -> None:
    model = keel.FakeModel(timeout_rate=1.0, hang_s=0.01)
    (o,) = model.predict(msgs(1))
    assert isinstance(o, keel.ModelTimeout)


def test_a_late_result_from_before_the_breaker_opened_moves_nothing() -> None:
    br = CircuitBreaker("v", BreakerPolicy(window=10, min_calls=4, reset_timeout_s=60.0,
                                           success_threshold=1))
    br.record([False] * 4)
    assert br.state == OPEN
    br.opened_at = time.time() - 61
    assert br.allow() and br.state == HALF_OPEN  # the probe is out
    br.record([True] * 10, probe=False)  # a call let through while closed ends only now
    assert br.state == HALF_OPEN and br.probing
    br.record([True], probe=True)
    assert br.state == CLOSED


def test_tokens_per_minute_are_settled_with_real_usage(loop: LoopThread) -> None:
    model = keel.FakeModel(is_async=True)  # each answer reports 10 + 2 tokens
    limits = RateLimits(max_concurrency=1, requests_per_s=1000, tokens_per_min=600,
                        tokens_per_call=50)
    c = caller(model, loop, limits=limits)
    assert all(isinstance(r.outcome, keel.Prediction) for r in c(msgs(3)))
    layer: Any = c.stack
    while not isinstance(layer, Limit):
        layer = layer.inner
    limiter = layer._limiter
    assert limiter is not None and limiter.tokens is not None
    # 3 calls took 50 each up front, then gave back 38 each: 600 - 36 (plus a little refill)
    assert 564 <= limiter.tokens.level < 580


def test_model_call_threads_are_reused_but_a_hung_call_keeps_its_own(loop: LoopThread) -> None:
    """A sync model's calls reuse idle threads; one abandoned by its timeout is never handed
    a later call (which would then wait behind the hang)."""
    from keel.resilience._loop import in_thread

    release = threading.Event()

    async def scenario() -> tuple[set[int], int, int]:
        seen = {await in_thread(threading.get_ident) for _ in range(5)}
        hung = asyncio.ensure_future(in_thread(lambda: (release.wait(10), threading.get_ident())[1]))
        await asyncio.sleep(0.05)
        t0 = time.monotonic()
        later = await asyncio.wait_for(in_thread(threading.get_ident), 2.0)
        assert time.monotonic() - t0 < 1.0
        release.set()
        return seen, later, await hung

    seen, later, hung_on = loop.run(scenario())
    assert len(seen) == 1  # five calls, one after another: one thread
    assert hung_on in seen  # the idle thread took the next call, which hung
    assert later != hung_on  # the call after it did not wait for the busy thread
