"""A circuit breaker per workflow and model version: closed, open, half-open.

Keyed by both, so one workflow's outage of a shared model never stops another's calls.

Closed: calls pass; the outcome of each record of each call goes into a sliding window, and
when at least ``min_calls`` outcomes are there and ``failure_ratio`` of them failed, the
breaker opens. Open: no call is made, records go straight to the fallback chain; after
``reset_timeout_s`` the breaker is half-open. Half-open: one probe call at a time; a probe
that fails opens it again, ``success_threshold`` probes in a row that succeed close it.

Only failures that say the model is unwell count (timeouts, 5xx, 429: retryable errors); a
4xx or a malformed answer means the model is up, and counts as neither.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class BreakerPolicy:
    window: int = 100
    min_calls: int = 50
    failure_ratio: float = 0.5
    reset_timeout_s: float = 30.0
    success_threshold: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.min_calls < 1 or self.window < self.min_calls:
            raise ValueError("need 1 <= min_calls <= window")
        if self.success_threshold < 1:
            raise ValueError("success_threshold must be at least 1")


@dataclass(frozen=True, slots=True)
class BreakerState:
    """What the store keeps: one row per workflow and model version."""

    workflow: str
    model_version: str
    state: str
    failures: int
    opened_at: float | None
    updated_at: float


class CircuitBreaker:
    def __init__(self, model_version: str, policy: BreakerPolicy, workflow: str = "") -> None:
        self.workflow = workflow
        self.model_version = model_version
        self.policy = policy
        self.state = CLOSED
        self.window: deque[bool] = deque(maxlen=policy.window)
        self.opened_at: float | None = None
        self.probing = False
        self.successes = 0
        self.changed = False  # a transition the store has not saved yet

    @property
    def failures(self) -> int:
        return sum(1 for ok in self.window if not ok)

    def restore(self, saved: BreakerState | None) -> None:
        """Continue from a saved state (another process, an earlier run)."""
        if saved is None or saved.state == CLOSED:
            return
        self.state = OPEN
        self.opened_at = saved.opened_at or time.time()

    def reset(self) -> None:
        """Close, forgetting failures (a replay after the cause was fixed)."""
        self._move(CLOSED)  # saved even when already closed here: the store may say open

    def allow(self) -> bool:
        """May a call be made now? Turns open into half-open when the cool-down has passed."""
        if (self.state == OPEN and self.opened_at is not None
                and time.time() - self.opened_at >= self.policy.reset_timeout_s):
            self._move(HALF_OPEN)
        if self.state == CLOSED:
            return True
        if self.state == HALF_OPEN and not self.probing:
            self.probing = True
            return True
        return False

    def record(self, outcomes: list[bool], *, probe: bool | None = None) -> None:
        """The per-record outcomes (True = ok), in order, of one call :meth:`allow` let through.

        ``probe``: whether that call was let through as the half-open probe (a call let
        through while closed may end after the breaker opened: it moves nothing then).
        """
        if probe is None:
            probe = self.state == HALF_OPEN
        if not probe and self.state != CLOSED:
            return
        if probe:
            self.probing = False
            failed = outcomes.count(False)
            if outcomes and failed / len(outcomes) >= self.policy.failure_ratio:
                self._move(OPEN)
                return
            self.successes += 1
            if self.successes >= self.policy.success_threshold:
                self._move(CLOSED)
            return
        self.window.extend(outcomes)
        if (len(self.window) >= self.policy.min_calls
                and self.failures / len(self.window) >= self.policy.failure_ratio):
            self._move(OPEN)

    def release(self) -> None:
        """A probe call ended without an outcome (cancelled): let another probe go."""
        self.probing = False

    def _move(self, state: str) -> None:
        self.state = state
        self.successes = 0
        self.probing = False
        if state == OPEN:
            self.opened_at = time.time()
        elif state == CLOSED:
            self.window.clear()
            self.opened_at = None
        self.changed = True

    def snapshot(self) -> BreakerState:
        return BreakerState(self.workflow, self.model_version, self.state, self.failures,
                            self.opened_at, time.time())

    def as_dict(self) -> dict[str, Any]:
        return {"model_version": self.model_version, "state": self.state,
                "failures": self.failures, "opened_at": self.opened_at}
