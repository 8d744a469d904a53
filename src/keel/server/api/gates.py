"""Gates over HTTP: the readiness report and the stage history (any role), promotion
(admin), approvers' signatures (approver or admin)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from keel import gates
from keel.server._http import Admin, Reader, Signer
from keel.server.api._models import ERRORS, NO_NUL
from keel.store import gates as sql

router = APIRouter(prefix="/v1", tags=["gates"])


class PromoteBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(pattern=r"^(prototype|mvp|production)$")
    override: bool = Field(False, description="Promote although the gate says not yet "
                                              "(needs a reason; recorded)")
    reason: str | None = Field(None, max_length=2000, pattern=NO_NUL)


class SignBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(pattern=r"^(security_review|operational_signoff)$")
    note: str | None = Field(None, max_length=2000, pattern=NO_NUL)


@router.get("/gate", summary="The readiness report for the next stage (or ?to=)",
            responses=ERRORS)
def gate_report(request: Request, who: Reader,
                to: Annotated[str | None, Query(pattern=r"^(prototype|mvp|production)$")] = None,
                ) -> dict[str, Any]:
    state = request.app.state
    return gates.report(state.workflow, state.store, to=to).as_dict()


@router.get("/gate/history", summary="Every stage change and what it rested on",
            responses=ERRORS)
def gate_history(request: Request, who: Reader) -> list[dict[str, Any]]:
    return gates.history(request.app.state.store, request.app.state.workflow.name)


@router.post("/gate/promote", summary="Move the workflow to a stage (forward when the gate "
             "passes, or with an override and a reason; back at any time)", responses=ERRORS)
def gate_promote(request: Request, who: Admin, body: PromoteBody) -> dict[str, Any]:
    state = request.app.state
    row = gates.promote(state.workflow, state.store, body.to, by=who.name, reason=body.reason,
                        override=body.override)
    state.runner.reload_policy()
    return row


@router.post("/gate/sign", status_code=201, summary="An approver signs a review of this "
             "workflow version", responses=ERRORS)
def gate_sign(request: Request, who: Signer, body: SignBody) -> dict[str, Any]:
    state = request.app.state
    wf = state.workflow
    return sql.sign(state.store, wf.name, body.kind, who.name, who.key_id, wf.version, body.note)
