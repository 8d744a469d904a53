"""Admin only: API keys and the routing policy."""

from __future__ import annotations

import dataclasses
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from keel._policy import Policy
from keel.server import _keys
from keel.server._http import Admin, Reader
from keel.server.api._models import ERRORS, KeyBody, RoutingBody
from keel.store import _serving as sq

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


@router.put("/routing", summary="Change the routing policy (from the next batch on)",
            responses=ERRORS)
def put_routing(request: Request, who: Admin, body: RoutingBody) -> dict[str, Any]:
    state = request.app.state
    old: Policy = state.runner.policy
    changes: dict[str, Any] = {"threshold": body.threshold,
                               "version": f"manual-{int(time.time() * 1000)}"}
    if body.audit_rate is not None:
        changes["audit_rate"] = body.audit_rate
    if body.per_class is not None:
        changes["per_class"] = body.per_class
    try:
        new = dataclasses.replace(old, **changes)
    except ValueError as exc:
        from keel.errors import RequestError

        raise RequestError(str(exc)) from exc
    sq.save_routing_policy(state.store, state.workflow.name, new.version, new.as_dict(),
                           {"set_by": who.name, "note": body.note, "previous": old.version})
    state.runner.set_policy(new)
    return new.as_dict()
