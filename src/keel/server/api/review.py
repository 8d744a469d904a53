"""The review API: list, look at, claim, release and decide tasks (the `keel review` service)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Path, Query, Request, Response

from keel.errors import InvalidBody
from keel.server._http import Reviewer
from keel.server.api._models import ERRORS, ClaimBody, DecisionBody
from keel.server.api.decisions import has_nul

router = APIRouter(prefix="/v1/review", tags=["review"])

TaskId = Annotated[str, Path(max_length=64, description="A review task id")]


def _queue(request: Request) -> Any:
    return request.app.state.review


@router.get("/tasks", summary="Review tasks, most urgent first", responses=ERRORS)
def list_tasks(request: Request, who: Reviewer,
               status: Literal["open", "decided", "cancelled"] = "open",
               reason: Literal["low_confidence", "output_invalid", "out_of_distribution",
                               "model_failed", "audit_sample", "second_review",
                               "manual", "guarantee_void"] | None = None,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = _queue(request).list(status=status, reason=reason, limit=limit)
    return tasks


@router.get("/tasks/{task_id}", summary="One task with what a reviewer needs", responses=ERRORS)
def get_task(request: Request, who: Reviewer, task_id: TaskId) -> dict[str, Any]:
    task: dict[str, Any] = _queue(request).get(task_id)
    return task


@router.post("/claim", summary="Claim a task (or the next one due) under a lease",
             responses={204: {"description": "Nothing to review"}, **ERRORS})
def claim(request: Request, who: Reviewer,
          body: Annotated[ClaimBody | None, Body()] = None) -> Any:
    body = body or ClaimBody()
    lease = body.lease_s or request.app.state.settings.lease_s
    task = _queue(request).claim(body.task_id, who.name, lease_s=lease)
    if task is None:
        return Response(status_code=204)
    return task


@router.post("/tasks/{task_id}/release", summary="Give a claimed task back", responses=ERRORS)
def release(request: Request, who: Reviewer, task_id: TaskId) -> dict[str, str]:
    _queue(request).release(task_id, who.name)
    return {"task_id": task_id, "status": "released"}


@router.post("/tasks/{task_id}/decision", summary="Accept, correct or reject", responses=ERRORS)
def decide(request: Request, who: Reviewer, body: DecisionBody, task_id: TaskId) -> dict[str, Any]:
    # fields the task's contract does not declare are refused by the queue (CLI and API alike)
    if body.output is not None and has_nul(body.output):
        raise InvalidBody("the corrected output contains a NUL character (\\u0000), "
                          "which keel cannot store; remove it and send again")
    done: dict[str, Any] = _queue(request).decide(task_id, who.name, body.decision,
                                                  output=body.output, reason=body.reason,
                                                  step=body.step)
    request.app.state.dashboard_cache.clear()
    return done
