"""Cost over HTTP: the report, projection and threshold trade-off (any role); the declared
prices and the budgets' state (admin)."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from keel import _json, cost
from keel.server._http import Admin, Reader
from keel.server.api._models import ERRORS

router = APIRouter(prefix="/v1", tags=["cost"])

_WINDOW = r"^(all|[0-9]{1,6}[mhd]|since:[1-9][0-9]{3}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]))$"
_VOLUME = r"^0*[1-9][0-9]{0,9}\s*/\s*(day|d|month|mo|hour|h)$"


@router.get("/cost", summary="Where the money went: per component, disposition, release; "
            "?project=50000/day adds the projection, ?thresholds=true the trade-off",
            responses=ERRORS)
def cost_report(request: Request, who: Reader,
                window: Annotated[str | None, Query(pattern=_WINDOW)] = None,
                project: Annotated[str | None, Query(pattern=_VOLUME)] = None,
                thresholds: bool = False) -> dict[str, Any]:
    state = request.app.state
    wf, store = state.workflow, state.store
    out: dict[str, Any] = {"report": cost.report(wf, store, window=window)}
    if project is not None:
        out["projection"] = cost.project(wf, store, project, window=window)
    if thresholds:
        out["thresholds"] = cost.thresholds(wf, store, volume=project or "1000/day",
                                            window=window)
    return out


@router.get("/cost/outlook", summary="Spend against each budget, net value of automation per "
            "day, and the projection to the target volume (what the dashboard shows)",
            responses=ERRORS)
def cost_outlook(request: Request, who: Reader,
                 window: Annotated[str, Query(pattern=_WINDOW)] = "7d",
                 project: Annotated[str | None, Query(pattern=_VOLUME)] = None) -> Response:
    state = request.app.state
    cache: dict[tuple[str, str | None], tuple[float, bytes]] = state.outlook_cache
    now = time.monotonic()
    hit = cache.get((window, project))
    if hit is None or hit[0] < now:
        found = cost.outlook(state.workflow, state.store, window=window, volume=project)
        hit = (now + state.settings.cost_cache_s, _json.dumpb(found))
        if len(cache) >= 32:  # a few windows and volumes are asked for; keep it small
            cache.clear()
        cache[(window, project)] = hit
    return Response(hit[1], media_type="application/json")


@router.get("/cost/prices", summary="The workflow's declared prices and rates (admin)",
            responses=ERRORS)
def cost_prices(request: Request, who: Admin) -> dict[str, Any]:
    wf = request.app.state.workflow
    if wf.cost is None:
        return {"declared": False}
    return {"declared": True, **wf.cost.as_dict()}


@router.get("/cost/budgets", summary="Each budget in its current window: limit, spent, "
            "reserved, remaining, records turned away (admin)", responses=ERRORS)
def cost_budgets(request: Request, who: Admin) -> list[dict[str, Any]]:
    state = request.app.state
    return cost.budget_state(state.workflow, state.store)
