"""Admin only: API keys and the routing policy."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from keel.errors import BelowGuarantee
from keel.review import policy_from_params
from keel.server import _keys
from keel.server._http import Admin, Reader
from keel.server.api._models import ERRORS, KeyBody, RoutingBody
from keel.store.reviews import active_routing_policy, save_routing_policy
from keel.workflow import Policy

log = logging.getLogger("keel.server")

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
    """A manual routing policy, stored like a calibrated one (`keel calibrate` replaces it).

    A threshold below the floor (the certified threshold of the calibrated policy in force,
    else the workflow's declared one) gives up the guarantee: it is refused unless the
    request says ``override`` with a ``reason``, both kept with the new policy."""
    state = request.app.state
    wf = state.workflow
    declared: Policy = wf.policy
    floor, basis = _floor(state)
    lowest = min([body.threshold, *(body.per_class or {}).values()])
    if lowest < floor and not (body.override and body.reason):
        raise BelowGuarantee(
            f"threshold {lowest:.3f} is below {basis} ({floor:.3f}): decisions above it would "
            "carry no guarantee. Send \"override\": true with a \"reason\" to do it anyway "
            "(kept on record), or run `keel calibrate` for a certified threshold")
    params = {"threshold": body.threshold, "per_class": body.per_class or {},
              "class_field": declared.class_field, "model_version": state.runner.model_version,
              "method": "manual"}
    evidence = {"set_by": who.name, "note": body.note, "previous": state.runner.policy.version,
                "override": {"reason": body.reason, "floor": floor, "basis": basis}
                if lowest < floor else None}
    version = save_routing_policy(state.store, wf.name, params, evidence)
    state.runner.set_policy(policy_from_params(declared, version, params))
    if lowest < floor:
        log.warning("routing policy %s set below %s by %s: %s", version, basis, who.name,
                    body.reason)
    policy: dict[str, Any] = state.runner.policy.as_dict()
    return policy


def _floor(state: Any) -> tuple[float, str]:
    """The lowest threshold that keeps a guarantee: the calibrated one in force for the live
    model, else the workflow's declared one."""
    wf = state.workflow
    active = active_routing_policy(state.store, wf.name)
    if active is not None and active["params"].get("method") != "manual" and \
            active["params"].get("model_version") == state.runner.model_version and \
            active["params"].get("threshold") is not None:
        return float(active["params"]["threshold"]), f"the certified threshold ({active['version']})"
    return float(wf.policy.threshold), "the workflow's declared threshold"
