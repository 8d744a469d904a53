"""Health, readiness, status, the dashboard's data and Prometheus metrics."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response

from keel import _json, cost
from keel import store as store_api
from keel.server._http import Reader, Watcher, error_response
from keel.server.api._models import ERRORS
from keel.store import queue
from keel.store import serving as sq
from keel.telemetry import CONTENT_TYPE

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness: the process answers (no authentication)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: the store answers and the pipeline is running",
            responses={503: {"description": "Not ready"}})
def readyz(request: Request) -> Response:
    state = request.app.state
    if not state.batcher.running:
        return error_response(503, "keel.not_ready", "the pipeline is starting or stopped")
    try:
        sq.ping(state.store)
    except Exception as exc:
        return error_response(503, "keel.store", f"the store does not answer: {exc}")
    return Response(_json.dumpb({"status": "ready"}), media_type="application/json")


@router.get("/v1/status", summary="The workflow at a glance and this server's state",
            responses=ERRORS)
def status(request: Request, who: Reader) -> dict[str, Any]:
    state = request.app.state
    found = store_api.status(store=state.store, workflow=state.workflow.name)[0]
    st = state.batcher.stats
    found["server"] = {
        "started_at": state.started_at, "uptime_s": round(time.time() - state.started_at, 1),
        "queue_depth": state.batcher.depth, "batches": st.batches, "records": st.records,
        "largest_batch": st.largest, "pipeline_busy_s": round(st.busy_s, 3),
        "policy": state.runner.policy.as_dict(),
    }
    return found


@router.get("/v1/dashboard", summary="Everything the live dashboard draws", responses=ERRORS)
def dashboard(request: Request, who: Watcher,
              window_s: Annotated[float, Query(ge=60, le=30 * 86400)] = 3600.0) -> Response:
    state = request.app.state
    cache: dict[float, tuple[float, bytes]] = state.dashboard_cache
    hit = cache.get(window_s)
    now = time.monotonic()
    if hit is None or hit[0] < now:
        bucket = max(60.0, window_s / 60)
        data = sq.dashboard(state.store, state.workflow.name, window_s=window_s, bucket_s=bucket,
                            costs=_costs(state, now))
        data["server"] = {"queue_depth": state.batcher.depth,
                          "batches": state.batcher.stats.batches}
        data["drift"] = dict(state.last_drift)
        data["workers"] = _workers(state.store, state.workflow.name)
        data["budgets"] = [{k: b[k] for k in ("period", "limit_usd", "spent_usd", "remaining_usd")}
                           for b in cost.budget_state(state.workflow, state.store)
                           if b["limit_usd"] is not None]
        hit = (now + state.settings.dashboard_cache_s, _json.dumpb(data))
        cache[window_s] = hit
    return Response(hit[1], media_type="application/json")


def _workers(store: Any, workflow: str) -> dict[str, Any]:
    """Records queued for `keel worker` processes, the oldest wait, the live workers."""
    found = queue.depth(store, workflow)
    live = [w for w in queue.workers(store, workflow) if w["alive"]]
    return {**found, "live": len(live),
            "records_per_s": round(sum(w["records_per_s"] for w in live), 2)}


def _costs(state: Any, now: float) -> list[dict[str, Any]]:
    """Cost per day, recomputed at most once a minute (a scan over two weeks of decisions)."""
    cached: tuple[float, list[dict[str, Any]]] | None = getattr(state, "cost_cache", None)
    if cached is None or cached[0] < now:
        cached = (now + 60.0, sq.cost_per_day(state.store, state.workflow.name, 14))
        state.cost_cache = cached
    return cached[1]


@router.get("/metrics", summary="Prometheus metrics (any role)", response_class=Response,
            responses=ERRORS)
def metrics(request: Request, who: Reader) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)
