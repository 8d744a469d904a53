"""The in-flight state of one record as it moves through the stages."""

from __future__ import annotations

import itertools
import os
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from keel._prediction import Prediction
from keel.contracts import Violation

#: Every record ends in exactly one of these (``in_review`` until a person decides).
DISPOSITIONS = ("accepted", "reviewed", "fallback", "quarantined", "failed", "in_review")

#: Why a record is waiting for a person.
REVIEW_REASONS = ("low_confidence", "output_invalid", "out_of_distribution", "model_failed",
                  "audit_sample", "second_review", "manual", "guarantee_void")


class _Ids:
    """Where new ids come from in this process: a random tag and a counter (both drawn
    afresh in a forked child)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        rng = random.Random(os.urandom(16))
        self.tag = f"{rng.getrandbits(32):08x}"
        self.counter = itertools.count(rng.getrandbits(31))  # 2^31 ids before it wraps


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reset)


def new_id() -> str:
    """A 28-hex-char id that sorts by creation time (milliseconds), then by process.

    Time-ordered ids keep the store's B-tree inserts near the end of each index. The rest is
    the process's random tag and a counter: unique within a process by construction (ids
    drawn at random collided about once in 30,000 batches of 500 made within a millisecond),
    and apart from other processes' by the 32-bit tag. No system call per id: that cost
    more than the rest of admitting a record.
    """
    return f"{time.time_ns() // 1_000_000:012x}{_ids.tag}{next(_ids.counter) & 0xFFFFFFFF:08x}"


@dataclass(slots=True)
class Event:
    """One audit entry. ``detail`` is JSON-serialisable."""

    kind: str
    at: float
    detail: dict[str, Any] | None = None
    actor: str | None = None
    model_version: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None

    def entry(self) -> dict[str, Any]:
        """The event as stored in its record's audit segment (absent fields left out)."""
        out: dict[str, Any] = {"kind": self.kind, "at": self.at}
        if self.actor is not None:
            out["actor"] = self.actor
        if self.model_version is not None:
            out["model_version"] = self.model_version
        if self.latency_ms is not None:
            out["latency_ms"] = self.latency_ms
        if self.cost_usd is not None:
            out["cost_usd"] = self.cost_usd
        if self.detail is not None:
            out["detail"] = self.detail
        return out


@dataclass(slots=True)
class ReviewRequest:
    reason: str
    detail: str = ""


@dataclass(slots=True)
class Item:
    """One record on its way through admit -> validate -> screen -> predict -> check -> route."""

    key: str
    raw: dict[str, Any]
    source: str
    record_id: str = ""
    is_new: bool = True
    started: float = field(default_factory=time.perf_counter)
    input: BaseModel | None = None
    violations: list[Violation] = field(default_factory=list)
    flags: dict[str, Any] = field(default_factory=dict)
    prediction: Prediction | None = None
    predicted_by: str | None = None
    step_name: str | None = None
    checkpointed: bool = False
    from_fallback: bool = False
    output: dict[str, Any] | None = None
    output_violations: list[Violation] = field(default_factory=list)
    error: str | None = None
    error_code: str | None = None
    attempts: int = 0
    failed_attempts: int = 0
    deferred: bool = False  # a transient error: retried with the next batch
    disposition: str | None = None
    reason: str | None = None
    review: ReviewRequest | None = None
    audit: bool = False
    events: list[Event] = field(default_factory=list)
    calls: list[Event] = field(default_factory=list)  # the model attempts among events
    cost_usd: float = 0.0
    #: a model with no known price answered (or tried to): the cost is unknown, not $0
    cost_unknown: bool = False
    seq: int = 0  # the last stored segment of this record's audit trail
    last_hash: str = ""
    written_events: int = 0
    unsaved: list[Any] = field(default_factory=list)  # checkpoints committed with the decision
    #: per record, end to end: from admission to its decision (set by finish); the one
    #: latency keel reports (run summary, `keel status`, dashboard, metrics)
    latency_ms: float = 0.0
    conflict: bool = False  # a new version of a key decided from other content (admit)
    release_id: str | None = None  # the release that decides it (champion, or a canary's)
    #: a release under trial answered it differently: a person says who was right
    release_check: bool = False
    #: a multi-step workflow: checkpointed answers by step name, (prediction, model version)
    answers: dict[str, tuple[Prediction, str]] | None = None
    #: a multi-step workflow: what each step did (name, model, confidence, latency, ...)
    step_results: list[dict[str, Any]] | None = None

    def log(self, kind: str, detail: dict[str, Any] | None = None, actor: str | None = None,
            model_version: str | None = None, latency_ms: float | None = None,
            cost_usd: float | None = None) -> None:
        self.events.append(Event(kind, time.time(), detail, actor, model_version, latency_ms,
                                 cost_usd))

    def finish(self, disposition: str, reason: str | None = None) -> None:
        self.disposition = disposition
        self.reason = reason
        self.latency_ms = (time.perf_counter() - self.started) * 1000.0


@dataclass(slots=True)
class BatchTally:
    """A stored batch counted once, for the run's summary and the metrics alike: records per
    (disposition, reason class), and their latencies (ms) per disposition."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)

    def count(self, item: Item, disposition: str, latency_ms: float) -> None:
        self.outcomes[disposition, reason_class(item)] += 1
        values = self.latencies_ms.get(disposition)
        if values is None:
            self.latencies_ms[disposition] = [latency_ms]
        else:
            values.append(latency_ms)

    @classmethod
    def of(cls, items: Sequence[Item]) -> BatchTally:
        tally = cls()
        for item in items:
            tally.count(item, item.disposition or "failed", item.latency_ms)
        return tally


def reason_class(item: Item) -> str:
    """A bounded label for why a record ended where it did (never free text)."""
    disp = item.disposition
    if disp == "in_review" and item.review is not None:
        return item.review.reason
    if disp == "quarantined":
        return item.violations[0].rule if item.violations else "unknown"
    if disp == "failed":
        return item.error_code or "unknown"
    if disp == "fallback":
        return item.error_code or ("output_invalid" if item.output_violations else "fallback")
    return "audit_sample" if item.audit else "confident"


@dataclass(slots=True)
class Known:
    """A key the store has seen: its record id, disposition (None while undecided) and the
    input it was stored with (JSON text), to tell a repeat from a conflicting new version."""

    record_id: str
    disposition: str | None
    input: str | None = None


@dataclass(slots=True)
class Checkpoint:
    """A model's fresh answer for one record at one step, to be stored before it is used."""

    record_id: str
    step: str
    model_version: str
    prediction: Prediction
    latency_ms: float
    item: Item


@dataclass(slots=True)
class RawRow:
    """One row as a source read it: parsed fields, or the reason it could not be parsed."""

    source: str
    line: int
    data: dict[str, Any] | None
    error: str | None = None
    text: str | None = None
