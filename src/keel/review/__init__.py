"""Human review: the queue (leases, decisions, escalation), labels, calibrated thresholds."""

from keel.errors import InvalidDecision, LeaseConflict, ReviewError
from keel.review._queue import DECISIONS, ReviewQueue

__all__ = ["DECISIONS", "InvalidDecision", "LeaseConflict", "ReviewError", "ReviewQueue"]
