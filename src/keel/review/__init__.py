"""Human review: the queue (leases, decisions, escalation), labels, calibrated thresholds.

Names load on first use, so that deciding one task (`keel review decide`) does not import
SciPy, which only calibration needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.errors import CalibrationError, InvalidDecision, LeaseConflict, ReviewError
    from keel.review._calibrate import CalibrationResult, calibrate, scored_labels
    from keel.review._labels import export_labels, labels, retrain, training_examples
    from keel.review._queue import DECISIONS, ReviewQueue
    from keel.review._report import calibration_html
    from keel.review._risk import learn_then_test, per_class_thresholds, threshold_curve
    from keel.review._routing import policy_from_params, policy_in_force

_WHERE = {
    "CalibrationError": "keel.errors",
    "InvalidDecision": "keel.errors",
    "LeaseConflict": "keel.errors",
    "ReviewError": "keel.errors",
    "CalibrationResult": "keel.review._calibrate",
    "calibrate": "keel.review._calibrate",
    "scored_labels": "keel.review._calibrate",
    "threshold_curve": "keel.review._risk",
    "export_labels": "keel.review._labels",
    "labels": "keel.review._labels",
    "retrain": "keel.review._labels",
    "training_examples": "keel.review._labels",
    "DECISIONS": "keel.review._queue",
    "ReviewQueue": "keel.review._queue",
    "calibration_html": "keel.review._report",
    "learn_then_test": "keel.review._risk",
    "per_class_thresholds": "keel.review._risk",
    "policy_from_params": "keel.review._routing",
    "policy_in_force": "keel.review._routing",
}

__all__ = [
    "DECISIONS",
    "CalibrationError",
    "CalibrationResult",
    "InvalidDecision",
    "LeaseConflict",
    "ReviewError",
    "ReviewQueue",
    "calibrate",
    "calibration_html",
    "export_labels",
    "labels",
    "learn_then_test",
    "per_class_thresholds",
    "policy_from_params",
    "policy_in_force",
    "retrain",
    "scored_labels",
    "threshold_curve",
    "training_examples",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'keel.review' has no attribute {name!r}")
