"""Admin only: API keys and the routing policy."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from keel._policy import Policy
from keel.review._routing import policy_from_params
from keel.server import _keys
from keel.server._http import Admin, Reader
from keel.server.api._models import ERRORS, KeyBody, RoutingBody
from keel.store._review import save_routing_policy

router = APIRouter(prefix="/v1", tags=["admin"])


@router.get("/keys", summary="API keys (never the keys themselves)", responses=ERRORS)
def list_keys(request: Request, who: Admin) -> list[dict[str, Any]]:
    return _keys.list_keys(request.app.state.store)


@router.post("/keys", status_code=201, summary="Create a key; the answer is the only time "
             "it is shown", responses=ERRORS)
def create_key(request: Request, who: Admin, body: KeyBody) -> dict[str, Any]:
    record, secret = _keys.create_key(request.app.state.store, body.role, body.name)
    return {**record, "key": secret}


@router.delete("/keys/{key_id}", summary="Revoke a key (effective at once)", responses=ERRORS)
def revoke_key(request: Request, key_id: Annotated[str, Path(max_length=64)],
               who: Admin) -> dict[str, str]:
    _keys.revoke_key(request.app.state.store, key_id)
    request.app.state.auth.forget()
    return {"id": key_id, "status": "revoked"}


@router.get("/routing", summary="The routing policy in force", responses=ERRORS)
def get_routing(request: Request, who: Reader) -> dict[str, Any]:
    policy: dict[str, Any] = request.app.state.runner.policy.as_dict()
    return policy


@router.put("/routing", summary="Set the confidence thresholds (from the next batch on)",
            responses=ERRORS)
def put_routing(request: Request, who: Admin, body: RoutingBody) -> dict[str, Any]:
    """A manual routing policy, stored like a calibrated one (`keel calibrate` replaces it)."""
    state = request.app.state
    wf = state.workflow
    declared: Policy = wf.policy
    params = {"threshold": body.threshold, "per_class": body.per_class or {},
              "class_field": declared.class_field, "model_version": wf.model.version,
              "method": "manual"}
    evidence = {"set_by": who.name, "note": body.note, "previous": state.runner.policy.version}
    version = save_routing_policy(state.store, wf.name, params, evidence)
    state.runner.set_policy(policy_from_params(declared, version, params))
    policy: dict[str, Any] = state.runner.policy.as_dict()
    return policy
