"""keel's error tree. Every error a user can see has a stable ``code``.

::

    KeelError                       keel.error
    ├── UserError                   keel.user          (CLI exit code 1, never a traceback)
    │   ├── WorkflowLoadError       keel.workflow_load
    │   ├── InputSourceError        keel.input_source
    │   ├── ConfigError             keel.config
    │   │   └── CostError           keel.config.cost   (a bad price, budget or projection)
    │   ├── NotFoundError           keel.not_found
    │   ├── AuthError               keel.auth          (HTTP 401: no or unknown API key)
    │   │   ├── Forbidden           keel.auth.forbidden (HTTP 403: the key's role may not)
    │   │   └── CsrfFailed          keel.auth.csrf     (HTTP 403: a browser form without its token)
    │   ├── BudgetExhausted         keel.budget        (a budget is spent: records kept, replay later)
    │   └── RequestError            keel.request       (HTTP 4xx: a bad API request)
    │       ├── BodyTooLarge        keel.request.too_large
    │       ├── BatchTooLarge       keel.request.batch_too_large
    │       ├── InvalidJson         keel.request.invalid_json
    │       ├── InvalidBody         keel.request.invalid   (HTTP 422)
    │       ├── MissingKey          keel.request.missing_key (HTTP 422)
    │       ├── BelowGuarantee      keel.request.below_guarantee (HTTP 409: needs an override)
    │       └── StageConflict       keel.gate.stage (HTTP 409: already there, or a stage skipped)
    ├── StoreError                  keel.store
    ├── ModelError                  keel.model          (a model call failed)
    │   ├── RetryableModelError     keel.model.retryable
    │   │   ├── ModelTimeout        keel.model.timeout
    │   │   ├── RateLimited         keel.model.rate_limited
    │   │   └── ModelUnavailable    keel.model.unavailable (5xx, connection refused)
    │   ├── NonRetryableModelError  keel.model.fatal    (4xx, oversized payload)
    │   ├── MalformedOutput         keel.model.malformed
    │   │   ├── Truncated           keel.model.truncated (cut off at the token limit)
    │   │   ├── EmptyAnswer         keel.model.empty    (no choices, or no content)
    │   │   └── ImpossibleConfidence keel.model.impossible_confidence (a null/NaN/positive logprob)
    │   ├── Refused                 keel.model.refused  (the model declined to answer)
    │   │   └── ContentFiltered     keel.model.content_filter (the server's filter withheld it)
    │   ├── DeadlineExceeded        keel.model.deadline (the record's latency budget ran out)
    │   └── CircuitOpen             keel.model.circuit_open
    └── ReviewError                 keel.review
        ├── LeaseConflict           keel.review.lease
        ├── InvalidDecision         keel.review.invalid
        └── CalibrationError        keel.review.calibration (no threshold can be certified)

Third-party errors are mapped at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from keel._prediction import NO_USAGE, Usage


class KeelError(Exception):
    """Root of every error keel raises on purpose. ``problems`` itemises what was wrong (a
    request's records that break the input contract, say), for APIs to return."""

    code = "keel.error"

    def __init__(self, message: str, problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.problems = problems


class UserError(KeelError):
    """The user asked for something that cannot be done as asked; the message says the fix."""

    code = "keel.user"


class WorkflowLoadError(UserError):
    code = "keel.workflow_load"


class InputSourceError(UserError):
    code = "keel.input_source"


class ConfigError(UserError):
    code = "keel.config"


class CostError(ConfigError):
    """A price, budget or projection that cannot be used as given (missing, negative,
    malformed, an unknown currency, a volume of zero)."""

    code = "keel.config.cost"


class BudgetExhausted(UserError):
    """A workflow's budget is spent and it declares ``on_exhausted="stop"``: the records
    end ``failed`` with this code and are replayed once the budget allows."""

    code = "keel.budget"


class NotFoundError(UserError):
    code = "keel.not_found"


class AuthError(UserError):
    """No credentials, or a key keel does not know (or that was revoked)."""

    code = "keel.auth"


class Forbidden(AuthError):
    """The caller is known but their role may not do this."""

    code = "keel.auth.forbidden"


class CsrfFailed(Forbidden):
    """A request carried by a browser session lacked the session's CSRF token."""

    code = "keel.auth.csrf"


class RequestError(UserError):
    """An API request keel cannot act on; ``status`` is the HTTP status it answers with."""

    code = "keel.request"
    status = 400


class BodyTooLarge(RequestError):
    code = "keel.request.too_large"
    status = 413


class BatchTooLarge(RequestError):
    code = "keel.request.batch_too_large"
    status = 422  # the schema's maxItems: an invalid request, not a body over the size limit


class InvalidJson(RequestError):
    code = "keel.request.invalid_json"
    status = 400


class InvalidBody(RequestError):
    code = "keel.request.invalid"
    status = 422


class MissingKey(RequestError):
    code = "keel.request.missing_key"
    status = 422


class BelowGuarantee(RequestError):
    """A routing threshold below the certified one, asked for without an override."""

    code = "keel.request.below_guarantee"
    status = 409


class ReleaseError(RequestError):
    """A release, rollout or evaluation that cannot be done with the store and data as they
    are (an output contract that does not fit, a release with nothing to run, nothing to roll
    back to, labels without their column). Over HTTP: 409, the request was well formed."""

    code = "keel.release"
    status = 409


class RolloutConflict(RequestError):
    """A rollout asked for while another is under way (or a change it would contradict)."""

    code = "keel.release.conflict"
    status = 409


class GateNotReady(RequestError):
    """A promotion asked for while the gate says not yet (and no override was given)."""

    code = "keel.gate.not_ready"
    status = 409


class StageConflict(RequestError):
    """A promotion to the stage the workflow is already in, or more than one stage ahead."""

    code = "keel.gate.stage"
    status = 409


class OverrideReason(RequestError):
    """A promotion past a gate that is not ready (an override) without a written reason."""

    code = "keel.gate.override_reason"
    status = 409


class ChangeControl(RequestError):
    """A production workflow whose file declares a release nobody registered."""

    code = "keel.gate.change_control"
    status = 409


class StoreError(KeelError):
    code = "keel.store"


class ModelError(KeelError):
    """A model call did not produce a usable prediction.

    ``usage`` is what the failed call still spent (a paid answer that broke the contract, a
    refusal, a re-ask): its tokens, its cost and whether that cost is known; ``cost_usd`` is
    its cost.
    """

    code = "keel.model"
    retryable = False

    def __init__(self, message: str, *, retry_after_s: float | None = None,
                 cost_usd: float = 0.0, usage: Usage | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        base = usage if usage is not None else NO_USAGE
        self.usage = replace(base, cost_usd=base.cost_usd + cost_usd) if cost_usd else base

    @property
    def cost_usd(self) -> float:
        return self.usage.cost_usd

    @cost_usd.setter
    def cost_usd(self, value: float) -> None:
        self.usage = replace(self.usage, cost_usd=value)


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


class Truncated(MalformedOutput):
    """The answer was cut off at the token limit (``finish_reason: length``) and is unusable
    even after the re-ask: raise ``max_tokens`` (a reasoning model spends tokens thinking)."""

    code = "keel.model.truncated"


class EmptyAnswer(MalformedOutput):
    """The server answered with no choices, or a choice with no content."""

    code = "keel.model.empty"


class ImpossibleConfidence(MalformedOutput):
    """The server sent numbers no model can produce (a null, NaN or positive log-probability):
    the answer's confidence cannot be trusted, so it is never accepted on it."""

    code = "keel.model.impossible_confidence"


class Refused(ModelError):
    code = "keel.model.refused"


class ContentFiltered(Refused):
    """The server's content filter withheld or cut the answer (``finish_reason:
    content_filter``)."""

    code = "keel.model.content_filter"


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
