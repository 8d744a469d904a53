"""GET /v1/records/{key}: a record's whole story."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from keel import store as store_api
from keel.server._http import Reader
from keel.server.api._models import ERRORS

router = APIRouter(prefix="/v1", tags=["records"])


def record_story(request: Request, key: str) -> dict[str, Any]:
    state = request.app.state
    found: list[dict[str, Any]] = store_api.trace(key, store=state.store, workflow=state.workflow.name)
    return found[0]


@router.get("/records/{key:path}", summary="A record's trace: input, predictions, decision, events",
            responses=ERRORS)
def get_record(request: Request, key: Annotated[str, Path(max_length=500)],
               who: Reader) -> dict[str, Any]:
    return record_story(request, key)
