"""Routing policy: when a prediction may be accepted without a person."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

#: A threshold no confidence reaches: this class (or everything) always goes to a person.
NEVER = math.inf


@dataclass(frozen=True)
class Policy:
    """Accept when confidence >= the threshold (per class when given), else send to review.

    A threshold of ``NEVER`` (infinity; ``None`` in a per-class map) automates nothing.

    ``audit_rate`` is the share of auto-accepted decisions also sent to review to measure real
    accuracy (chosen by a hash of the key, so a replay picks the same records).
    ``on_model_failure`` is ``"fail"`` (record ends ``failed``, replayable) or ``"review"``.
    ``review_sla_s`` gives the due time per review reason.
    ``second_review_above``: when a reviewer disagrees with a model output at least this
    confident, a second reviewer must confirm before the record is decided (None: never).
    """

    threshold: float = 0.8
    per_class: dict[str, float | None] = field(default_factory=dict)
    class_field: str | None = None
    audit_rate: float = 0.02
    on_model_failure: str = "fail"
    review_sla_s: dict[str, float] = field(
        default_factory=lambda: {
            "output_invalid": 4 * 3600.0,
            "model_failed": 4 * 3600.0,
            "out_of_distribution": 8 * 3600.0,
            "low_confidence": 24 * 3600.0,
            "audit_sample": 72 * 3600.0,
            "second_review": 24 * 3600.0,
            "manual": 24 * 3600.0,
        }
    )
    review_priority: dict[str, int] = field(
        default_factory=lambda: {
            "output_invalid": 80,
            "model_failed": 80,
            "out_of_distribution": 60,
            "low_confidence": 50,
            "audit_sample": 10,
            "second_review": 70,
            "manual": 70,
        }
    )
    second_review_above: float | None = None
    #: "declared": the workflow file's own policy; "<workflow>@<n>": one `keel calibrate` stored
    version: str = "declared"

    def __post_init__(self) -> None:
        if not (0.0 <= self.threshold <= 1.0 or self.threshold == NEVER):
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if not 0.0 <= self.audit_rate <= 1.0:
            raise ValueError(f"audit_rate must be in [0, 1], got {self.audit_rate}")
        if self.on_model_failure not in ("fail", "review"):
            raise ValueError("on_model_failure must be 'fail' or 'review'")

    def threshold_for(self, output: dict[str, Any] | None) -> float:
        if self.per_class and self.class_field and output is not None:
            label = output.get(self.class_field)
            if label is not None and str(label) in self.per_class:
                value = self.per_class[str(label)]
                return NEVER if value is None else value
        return self.threshold

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "per_class": self.per_class,
            "class_field": self.class_field,
            "audit_rate": self.audit_rate,
            "on_model_failure": self.on_model_failure,
            "second_review_above": self.second_review_above,
            "review_sla_s": self.review_sla_s,
            "review_priority": self.review_priority,
            "version": self.version,
        }
