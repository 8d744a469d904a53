"""Response shapes, for the OpenAPI document (answers are built as plain dicts)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

#: Text a request may carry: anything but NUL, which no store can keep.
NO_NUL = r"^[^\x00]*$"


class ErrorBody(BaseModel):
    code: str = Field(description="Stable keel error code, e.g. keel.request.batch_too_large")
    message: str = Field(description="What went wrong and how to fix it")


class ErrorResponse(BaseModel):
    error: ErrorBody


class TaskRef(BaseModel):
    id: str
    reason: str
    detail: str | None = None
    priority: int
    due_at: float
    created_at: float


class DecisionAnswer(BaseModel):
    key: str
    record_id: str
    disposition: Literal["accepted", "reviewed", "fallback", "quarantined", "failed",
                         "in_review"] | None
    reason: str | None = None
    output: dict[str, Any] | None = None
    confidence: float | None = None
    model_version: str | None = None
    already_decided: bool = Field(description="True when this key was decided before "
                                              "(the stored decision is returned)")
    review_task: TaskRef | None = None
    violations: list[dict[str, Any]] | None = None
    error: dict[str, Any] | None = None
    queued: bool = Field(False, description="keel serve --enqueue: waiting for a worker "
                                            "(GET `url` for its decision once made)")
    url: str | None = Field(None, description="Where this record's trace is")


class BatchAnswer(BaseModel):
    results: list[DecisionAnswer]
    counts: dict[str, int]


class DecisionBody(BaseModel):
    decision: Literal["accept", "correct", "reject"]
    output: dict[str, Any] | None = Field(
        None, description="The corrected output (correct): on a multi-step workflow, the "
                          "output of the task's step, as that step's output contract says")
    step: str | None = Field(None, max_length=100, pattern=NO_NUL,
                             description="The step the decision is on (optional; when given, "
                                         "it must be the task's step)")
    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL,
                               description="Why (required to reject)")


class ClaimBody(BaseModel):
    task_id: str | None = Field(None, max_length=64, pattern=NO_NUL,
                                description="A task to claim; omitted: the next task due")
    lease_s: float | None = Field(None, gt=0, le=3600)


class KeyBody(BaseModel):
    role: Literal["submitter", "reviewer", "approver", "admin"]
    name: str | None = Field(None, min_length=1, max_length=200, pattern=NO_NUL)


class RoutingBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(ge=0.0, le=1.0)
    per_class: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] | None = None
    note: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    override: bool = Field(False, description="Set a threshold below the certified one (or, "
                           "with no calibration, below the declared one): no guarantee then "
                           "holds. Needs a reason; kept with the policy.")
    reason: str | None = Field(None, min_length=1, max_length=2000, pattern=NO_NUL,
                               description="Why the guarantee is given up (with override).")


class ReasonBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL,
                               description="Why: kept on the audit trail with who did it")


class RolloutBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    challenger: str = Field(min_length=1, max_length=200, pattern=NO_NUL,
                            description="The release to try (name or id)")
    shadow: bool = Field(False, description="First answer all traffic in the shadow")
    canary: list[Annotated[float, Field(gt=0.0, le=100.0)]] | None = Field(
        None, max_length=20, description="Shares of traffic in percent, e.g. [5, 25, 50, 100]")
    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class EvalBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1, max_length=50_000,
                                       description="Labelled records: the input's fields and "
                                                   "the label column")
    label_column: str | None = Field(None, max_length=200, pattern=NO_NUL)
    release: str | None = Field(None, max_length=200, pattern=NO_NUL,
                                description="Release to evaluate (default: the champion)")
    against: str | None = Field(None, max_length=200, pattern=NO_NUL,
                                description="Compare with this release, record by record")
    slice: str | None = Field(None, max_length=200, pattern=NO_NUL)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 422)
}
