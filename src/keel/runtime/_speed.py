"""Speed tricks the runtime uses, each behind a name that says what it does, so the loop
itself reads as plain code. Each is measured in bench/pipeline.py."""

from __future__ import annotations

import gc
import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def young_gc_only() -> Iterator[None]:
    """While a run decides, the garbage collector leaves objects that existed before it alone.

    A run allocates several objects per record; every full collection would walk all of the
    interpreter's objects (the imported libraries: hundreds of thousands), about a sixth
    of a no-op record's CPU. Frozen objects are unfrozen, and the thresholds restored,
    when the run ends.
    """
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(max(thresholds[0], 10_000), *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def freeze_startup_objects() -> None:
    """For a long-lived server: collections skip everything start-up loaded (see
    :func:`young_gc_only`), for the life of the process."""
    gc.freeze()


#: The interpreter's thread switch interval while an async model's calls are in flight.
PROMPT_SWITCH_S = 0.0005


@contextmanager
def prompt_event_loop(async_model: bool) -> Iterator[None]:
    """While a run's async model calls are in flight, the event loop thread gets the
    interpreter lock back within 0.5 ms (instead of Python's 5 ms) when a call returns, so a
    free concurrency slot is used at once even while the deciding thread computes.

    20 ms model at 64 calls in flight: +3% records/s (docs/benchmarks.md); a thread pool of
    sync model calls gets slower with it (more switching), so only async models use it. The
    interval is restored when the run ends.
    """
    if not async_model:
        yield
        return
    was = sys.getswitchinterval()
    sys.setswitchinterval(min(was, PROMPT_SWITCH_S))
    try:
        yield
    finally:
        sys.setswitchinterval(was)
