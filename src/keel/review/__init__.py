"""Human review: the queue (leases, decisions, escalation), labels, calibrated thresholds."""

from keel.errors import CalibrationError, InvalidDecision, LeaseConflict, ReviewError
from keel.review._calibrate import CalibrationResult, calibrate
from keel.review._labels import export_labels, labels, retrain, training_examples
from keel.review._queue import DECISIONS, ReviewQueue
from keel.review._risk import learn_then_test, per_class_thresholds

__all__ = [
    "DECISIONS",
    "CalibrationError",
    "CalibrationResult",
    "InvalidDecision",
    "LeaseConflict",
    "ReviewError",
    "ReviewQueue",
    "calibrate",
    "export_labels",
    "labels",
    "learn_then_test",
    "per_class_thresholds",
    "retrain",
    "training_examples",
]
