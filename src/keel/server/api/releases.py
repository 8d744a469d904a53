"""Releases over HTTP: what exists and was live when (readers), evaluations, promotions,
rollbacks and rollouts (admins). The same functions as `keel releases`, `keel eval` and
`keel rollout`."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from keel import releases
from keel.server._http import Admin, Reader
from keel.server.api._models import ERRORS, EvalBody, ReasonBody, RolloutBody
from keel.store import releases as sql

router = APIRouter(prefix="/v1", tags=["releases"])

Name = Annotated[str, Path(max_length=200, pattern=r"^[^\x00/]+$")]


@router.get("/releases", summary="Every release: aliases, model version, records decided",
            responses=ERRORS)
def list_releases(request: Request, who: Reader) -> list[dict[str, Any]]:
    return releases.listing(request.app.state.store, request.app.state.workflow.name)


@router.get("/releases/history", summary="Release events, and what was live at a moment",
            responses=ERRORS)
def release_history(request: Request, who: Reader,
                    at: Annotated[str | None, Query(
                        max_length=40, pattern=r"^([0-9]+(\.[0-9]+)?|[0-9]{4}-[0-9]{2}-[0-9]{2}"
                        r"([T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?)?(Z|[+-][0-9]{2}:[0-9]{2})?)$",
                        description="ISO 8601 time or epoch seconds")] = None,
                    ) -> dict[str, Any]:
    store, wf = request.app.state.store, request.app.state.workflow
    until = releases.parse_when(at) if at else None
    names = {r["id"]: r["name"] for r in sql.releases(store, wf.name)}
    live = sql.aliases_at(store, wf.name, until) if until is not None else sql.aliases(store, wf.name)
    return {"workflow": wf.name, "at": until,
            "live": {alias: names.get(rid, rid) for alias, rid in live.items()},
            "events": releases.history(store, wf.name, until=until)}


@router.get("/releases/{name}", summary="One release: model, prompt, contract, policy, fallback",
            responses=ERRORS)
def show_release(request: Request, who: Reader, name: Name) -> dict[str, Any]:
    store, wf = request.app.state.store, request.app.state.workflow
    rel = releases.get(store, wf.name, name)
    return {**rel.as_dict(),
            "aliases": [a for a, rid in sql.aliases(store, wf.name).items() if rid == rel.id],
            "evaluations": [{"id": e["id"], "at": e["created_at"], "rows": e["rows"],
                             "data_hash": e["data_hash"], "against": e["against_id"],
                             "verdict": (e["metrics"].get("comparison") or {}).get("verdict")}
                            for e in sql.eval_runs(store, wf.name, rel.id)]}


@router.post("/releases/{name}/promote", summary="Make a release the champion now",
             responses=ERRORS)
def promote_release(request: Request, who: Admin, name: Name, body: ReasonBody) -> dict[str, Any]:
    state = request.app.state
    rel = releases.promote(state.workflow, state.store, name, by=who.name, reason=body.reason)
    state.runner.reload_policy()
    return {"champion": rel.name, "release_id": rel.id}


@router.post("/rollback", summary="End the rollout under way, else move the champion back",
             responses=ERRORS)
def rollback(request: Request, who: Admin, body: ReasonBody) -> dict[str, Any]:
    state = request.app.state
    out = releases.rollback(state.workflow, state.store, by=who.name, reason=body.reason)
    state.runner.reload_policy()
    return out


@router.get("/rollout", summary="The champion and the rollout: step, evidence, next verdict",
            responses=ERRORS)
def rollout_status(request: Request, who: Reader) -> dict[str, Any]:
    return releases.status(request.app.state.workflow, request.app.state.store)


@router.post("/rollout", status_code=201, summary="Start trying a challenger on live traffic",
             responses=ERRORS)
def start_rollout(request: Request, who: Admin, body: RolloutBody) -> dict[str, Any]:
    state = request.app.state
    releases.start(state.workflow, state.store, body.challenger, shadow=body.shadow,
                   canary=body.canary, by=who.name, reason=body.reason)
    state.runner.reload_policy()
    return releases.status(state.workflow, state.store)


@router.post("/rollout/{action}", summary="Pause, resume (or approve the canary) or abort",
             responses=ERRORS)
def steer_rollout(request: Request, who: Admin, body: ReasonBody,
                  action: Annotated[str, Path(pattern=r"^(pause|resume|abort)$")]) -> dict[str, Any]:
    state = request.app.state
    out: dict[str, Any] = getattr(releases, action)(state.workflow, state.store, by=who.name,
                                                    reason=body.reason)
    state.runner.reload_policy()
    return out


@router.get("/evals", summary="Stored evaluation runs", responses=ERRORS)
def list_evals(request: Request, who: Reader) -> list[dict[str, Any]]:
    return sql.eval_runs(request.app.state.store, request.app.state.workflow.name)


@router.post("/evals", status_code=201, summary="Evaluate releases on labelled records "
             "(production stages, no production record touched)", responses=ERRORS)
def run_eval(request: Request, who: Admin, body: EvalBody) -> dict[str, Any]:
    state = request.app.state
    data = releases.labelled_rows(state.workflow, body.rows, label_column=body.label_column,
                                  slice_column=body.slice)
    report = releases.evaluate(state.workflow, state.store, data, release=body.release,
                               against=body.against, confidence=body.confidence)
    return report.as_dict()
