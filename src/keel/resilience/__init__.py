"""Resilience: the layers around a model call (retry, breaker, limits, timeout) and the
settings a workflow declares for them.

Names load on first use (PEP 562): a caller that needs one layer does not import the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.resilience._breaker import BreakerPolicy, BreakerState, CircuitBreaker
    from keel.resilience._layers import LOCAL, Attempt, Caller, CallResult, build_caller, resilience_for
    from keel.resilience._loop import LoopThread
    from keel.resilience._ratelimit import RateLimits, Shared
    from keel.resilience._settings import Resilience, RetryPolicy

_WHERE = {
    "Attempt": "keel.resilience._layers",
    "BreakerPolicy": "keel.resilience._breaker",
    "BreakerState": "keel.resilience._breaker",
    "CallResult": "keel.resilience._layers",
    "Caller": "keel.resilience._layers",
    "CircuitBreaker": "keel.resilience._breaker",
    "LOCAL": "keel.resilience._layers",
    "LoopThread": "keel.resilience._loop",
    "RateLimits": "keel.resilience._ratelimit",
    "Resilience": "keel.resilience._settings",
    "RetryPolicy": "keel.resilience._settings",
    "Shared": "keel.resilience._ratelimit",
    "build_caller": "keel.resilience._layers",
    "resilience_for": "keel.resilience._layers",
}

__all__ = [
    "LOCAL",
    "Attempt",
    "BreakerPolicy",
    "BreakerState",
    "CallResult",
    "Caller",
    "CircuitBreaker",
    "LoopThread",
    "RateLimits",
    "Resilience",
    "RetryPolicy",
    "Shared",
    "build_caller",
    "resilience_for",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
