"""The FastAPI application behind ``keel serve``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.sessions import SessionMiddleware

from keel import cost
from keel import monitor as alerts
from keel._version import __version__
from keel.errors import NotFoundError
from keel.monitor import drift_report
from keel.releases import tend_retraining
from keel.review import ReviewQueue
from keel.runtime import Runner
from keel.server import api, ui
from keel.server._batcher import DecisionBatcher
from keel.server._fastlane import FastLane
from keel.server._http import BodyLimit, install_error_handlers
from keel.server._keys import Authenticator
from keel.server._support import PeriodicJob, ServerMetrics, Settings, run_jobs
from keel.server.api.decisions import MAX_KEY_CHARS
from keel.stages.screen import Detector
from keel.store import Store
from keel.telemetry import Telemetry, record_drift
from keel.workflow import Workflow, load_workflow

log = logging.getLogger("keel.server")


def _alert_check(store: Store, wf: Workflow) -> Any:
    """Evaluate the workflow's alert rules; changes go to the log and to KEEL_ALERT_WEBHOOK
    (else to where the workflow's gates send alerts, ``keel.Gates(alerts_to=...)``)."""
    channels: list[alerts.Channel] = [alerts.LogChannel()]
    hook = os.environ.get("KEEL_ALERT_WEBHOOK") or (wf.gates.alerts_to if wf.gates else None)
    if hook:
        channels.append(alerts.WebhookChannel(hook))
    return lambda: alerts.evaluate(store, wf, channels=channels)


def _drift_check(store: Store, wf: Workflow, last: dict[str, Any]) -> Any:
    """Compare the recent window with the reference; publish the scores (gauges, alert) and
    keep a summary of the last check in ``last`` (the dashboard shows it)."""
    monitor = wf.monitor
    assert monitor is not None

    def check() -> None:
        try:
            report = drift_report(store, wf, monitor.check_window, name=monitor.reference)
        except NotFoundError as exc:  # no reference yet, or a quiet window: nothing to say
            log.info("drift check skipped: %s", exc.message)
            last.update(checked_at=time.time(), status="skipped", note=exc.message)
            return
        record_drift(report)
        last.update(checked_at=time.time(), status="drift" if report.drifted else "ok",
                    alerts=len(report.alerts), checks=len(report.checks),
                    window=monitor.check_window, note=None)
        if report.drifted:
            log.warning("drift: %d of the checks fired over the last %s",
                        len(report.alerts), monitor.check_window)

    return check


def _no_nul(node: Any) -> None:
    """Every string in the documented schemas excludes NUL, which no store can keep."""
    if isinstance(node, dict):
        if node.get("type") == "string":
            node["allOf"] = [*node.get("allOf", []), {"pattern": "^[^\\u0000]*$"}]
        for value in node.values():
            _no_nul(value)
    elif isinstance(node, list):
        for value in node:
            _no_nul(value)


def create_app(workflow: Workflow | str | Path, *, store: Store | None = None,
               db: str | None = None, settings: Settings | None = None,
               jobs: Sequence[PeriodicJob] = (), detectors: Sequence[Detector] = (),
               telemetry: Telemetry | None = None, extra_metrics: Sequence[Any] = ()) -> FastAPI:
    """The app for one workflow.

    ``telemetry`` (default: from KEEL_OTEL_* settings) traces and counts the pipeline and
    feeds ``/metrics``; alert rules are evaluated every ``settings.alert_interval_s``;
    ``jobs`` run on a schedule beside them (a drift check, say); ``extra_metrics`` are
    callables whose Prometheus text is appended to ``/metrics``.
    """
    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    settings = settings or Settings()
    own_store, own_telemetry = store is None, telemetry is None
    st = store or Store.open(db)
    tel = telemetry or Telemetry.from_options()
    runner = Runner(wf, st, batch_size=settings.max_batch, detectors=detectors, telemetry=tel)
    if wf.cost is not None:  # spend, value and budgets, read at scrape time
        extra_metrics = [*extra_metrics, lambda: cost.metrics_text(wf, st)]
    metrics = ServerMetrics(wf.name, st, tel, extra_metrics)
    batcher = DecisionBatcher(runner, st, max_batch=settings.max_batch,
                              linger_s=settings.linger_ms / 1000.0, on_batch=metrics.on_batch)
    auth = Authenticator(st, ttl_s=settings.key_cache_s)
    review = ReviewQueue(st, workflow=wf)
    all_jobs = [PeriodicJob("api-key-usage", 30.0, auth.flush_usage),
                PeriodicJob("routing-policy", 30.0, runner.reload_policy),
                PeriodicJob("rollout", max(1.0, wf.rollout.check_every_s), runner.tend_rollout),
                PeriodicJob("review-escalation", 60.0, review.escalate_overdue),
                PeriodicJob("alerts", settings.alert_interval_s, _alert_check(st, wf)), *jobs]
    if runner.budget is not None:  # book what the last batches spent (see BudgetKeeper)
        all_jobs.append(PeriodicJob("budget-settle", 2.0, runner.budget.flush))
    if wf.retrain is not None:
        all_jobs.append(PeriodicJob("retraining", 60.0, lambda: _retrain_check(st, wf)))
    last_drift: dict[str, Any] = {"status": "not monitored"}
    if wf.monitor is not None and wf.monitor.check_every_s > 0:
        last_drift.update(status="not checked yet", every_s=wf.monitor.check_every_s)
        all_jobs.append(PeriodicJob("drift", wf.monitor.check_every_s,
                                    _drift_check(st, wf, last_drift)))

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        app.state.started_at = time.time()
        background = asyncio.create_task(run_jobs(all_jobs), name="keel-jobs")
        try:
            yield
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
            await batcher.stop()
            auth.flush_usage()
            if own_telemetry:
                tel.shutdown()
            if own_store:
                st.close()

    app = FastAPI(title=f"keel: {wf.name}", version=__version__, lifespan=lifespan,
                  description=_description(wf), docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.workflow, app.state.store, app.state.runner = wf, st, runner
    app.state.batcher, app.state.auth, app.state.settings = batcher, auth, settings
    app.state.metrics, app.state.dashboard_cache = metrics, {}
    app.state.outlook_cache = {}
    app.state.review, app.state.last_drift = review, last_drift
    app.state.started_at = time.time()
    install_error_handlers(app)
    for router in api.ROUTERS:
        app.include_router(router)
    ui.install(app)
    app.add_middleware(SessionMiddleware, secret_key=settings.session_secret,
                       session_cookie="keel_session", max_age=settings.session_max_age_s,
                       same_site="lax", https_only=settings.secure_cookies)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(FastLane, state=app.state)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _description(wf: Workflow) -> str:
    return (f"{wf.description or 'A keel workflow.'}\n\nEvery endpoint except `/healthz` and "
            "`/readyz` needs an API key (`keel keys create --role ...`), sent as "
            "`Authorization: Bearer <key>` or `X-API-Key: <key>`. Errors answer "
            "`{\"error\": {\"code\", \"message\"}}` with a stable keel error code.")


def _step_outputs(wf: Workflow, schemas: dict[str, Any]) -> list[dict[str, str]]:
    """The output contract of each step before the last (a review task on such a step is
    corrected with that step's output), as schemas ``StepOutput_<step>``."""
    refs = []
    for p in wf.planned_steps[:-1]:
        schema = p.contract.model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        if p.contract.model.model_config.get("extra") != "allow":
            schema["additionalProperties"] = False
        _no_nul(schema)
        schemas[f"StepOutput_{p.name}"] = schema
        refs.append({"$ref": f"#/components/schemas/StepOutput_{p.name}"})
    return refs


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    wf: Workflow = app.state.workflow
    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for name, model in (("WorkflowInput", wf.input), ("WorkflowOutput", wf.output)):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[name] = schema
    win = schemas["WorkflowInput"]
    if wf.input.model_config.get("extra") != "allow":  # the API refuses fields it does not know
        win["additionalProperties"] = False
    key = win.get("properties", {}).get(wf.key)
    if isinstance(key, dict) and key.get("type") == "string":  # what the API takes as a key
        key["allOf"] = [*key.get("allOf", []), {"pattern": r"\S"}]
        key["maxLength"] = min(key.get("maxLength", MAX_KEY_CHARS), MAX_KEY_CHARS)
    _no_nul(win)
    wout = schemas["WorkflowOutput"]
    if wf.output.model_config.get("extra") != "allow":  # a correction names only its fields
        wout["additionalProperties"] = False
    _no_nul(wout)
    decision = schemas.get("DecisionBody", {}).get("properties", {})
    if "output" in decision:  # a correction is an output: the workflow's output contract
        decision["output"] = {"anyOf": [{"$ref": "#/components/schemas/WorkflowOutput"},
                                        *_step_outputs(wf, schemas), {"type": "null"}],
                              "description": "The corrected output (correct); on a multi-step "
                                             "workflow, the output of the task's step"}
    schemas["DecisionBatch"] = {
        "type": "object", "required": ["records"], "additionalProperties": False,
        "properties": {"records": {"type": "array", "minItems": 1,
                                   "maxItems": app.state.settings.max_batch,
                                   "items": {"$ref": "#/components/schemas/WorkflowInput"}}},
    }
    app.openapi_schema = doc
    return doc


def _retrain_check(store: Store, wf: Workflow) -> None:
    """The workflow's retraining policy: retrain, evaluate, roll out when not worse."""
    done = tend_retraining(wf, store)
    if done is not None:
        log.info("retraining policy: %s -> release %s: %s", done.get("trigger"),
                 done.get("release"), done.get("action"))
