"""keel's error tree. Every error a user can see has a stable ``code``.

::

    KeelError                       keel.error
    ├── UserError                   keel.user          (CLI exit code 1, never a traceback)
    │   ├── WorkflowLoadError       keel.workflow_load
    │   ├── InputSourceError        keel.input_source
    │   ├── ConfigError             keel.config
    │   └── NotFoundError           keel.not_found
    ├── StoreError                  keel.store
    ├── ModelError                  keel.model          (a model call failed)
    │   ├── RetryableModelError     keel.model.retryable
    │   │   ├── ModelTimeout        keel.model.timeout
    │   │   ├── RateLimited         keel.model.rate_limited
    │   │   └── ModelUnavailable    keel.model.unavailable (5xx, connection refused)
    │   ├── NonRetryableModelError  keel.model.fatal    (4xx, oversized payload)
    │   ├── MalformedOutput         keel.model.malformed
    │   ├── Refused                 keel.model.refused  (the model declined to answer)
    │   ├── DeadlineExceeded        keel.model.deadline (the record's latency budget ran out)
    │   └── CircuitOpen             keel.model.circuit_open
    └── ReviewError                 keel.review
        ├── LeaseConflict           keel.review.lease
        ├── InvalidDecision         keel.review.invalid
        └── CalibrationError        keel.review.calibration (no threshold can be certified)

Third-party errors are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations


class KeelError(Exception):
    """Root of every error keel raises on purpose."""

    code = "keel.error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UserError(KeelError):
    """The user asked for something that cannot be done as asked; the message says the fix."""

    code = "keel.user"


class WorkflowLoadError(UserError):
    code = "keel.workflow_load"


class InputSourceError(UserError):
    code = "keel.input_source"


class ConfigError(UserError):
    code = "keel.config"


class NotFoundError(UserError):
    code = "keel.not_found"


class StoreError(KeelError):
    code = "keel.store"


class ModelError(KeelError):
    """A model call did not produce a usable prediction."""

    code = "keel.model"
    retryable = False

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 cost_usd: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.cost_usd = cost_usd  # what a failed call still cost (a paid re-ask, say)


class RetryableModelError(ModelError):
    code = "keel.model.retryable"
    retryable = True


class ModelTimeout(RetryableModelError):
    code = "keel.model.timeout"


class RateLimited(RetryableModelError):
    code = "keel.model.rate_limited"


class ModelUnavailable(RetryableModelError):
    code = "keel.model.unavailable"


class NonRetryableModelError(ModelError):
    code = "keel.model.fatal"


class MalformedOutput(ModelError):
    code = "keel.model.malformed"


class Refused(ModelError):
    code = "keel.model.refused"


class DeadlineExceeded(ModelError):
    code = "keel.model.deadline"


class CircuitOpen(ModelError):
    code = "keel.model.circuit_open"


class ReviewError(KeelError):
    code = "keel.review"


class LeaseConflict(ReviewError):
    code = "keel.review.lease"


class InvalidDecision(ReviewError):
    code = "keel.review.invalid"


class CalibrationError(ReviewError):
    """No threshold could be certified: too few labels, or none accurate enough."""

    code = "keel.review.calibration"
