"""The FastAPI application behind ``keel serve``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.middleware.sessions import SessionMiddleware

from keel import __version__
from keel.review import ReviewQueue
from keel.runner import Runner
from keel.server import api, ui
from keel.server._batcher import DecisionBatcher
from keel.server._fastlane import FastLane
from keel.server._http import BodyLimit, install_error_handlers
from keel.server._keys import Authenticator
from keel.server._support import PeriodicJob, ServerMetrics, Settings, run_jobs
from keel.stages.screen import Detector
from keel.store import Store
from keel.workflow import Workflow, load_workflow


def _review_queue(store: Store, workflow: Workflow) -> ReviewQueue:
    return ReviewQueue(store, workflow=workflow)


def create_app(workflow: Workflow | str | Path, *, store: Store | None = None,
               db: str | None = None, settings: Settings | None = None,
               jobs: Sequence[PeriodicJob] = (), detectors: Sequence[Detector] = (),
               extra_metrics: Sequence[Any] = ()) -> FastAPI:
    """The app for one workflow. ``jobs`` run on a schedule (alert and drift checks);
    ``extra_metrics`` are callables whose Prometheus text is appended to ``/metrics``."""
    wf = workflow if isinstance(workflow, Workflow) else load_workflow(workflow)
    settings = settings or Settings()
    own_store = store is None
    st = store or Store.open(db)
    runner = Runner(wf, st, batch_size=settings.max_batch, detectors=detectors)
    metrics = ServerMetrics(wf.name, extra_metrics)
    batcher = DecisionBatcher(runner, st, max_batch=settings.max_batch,
                              linger_s=settings.linger_ms / 1000.0, on_batch=metrics.on_batch)
    auth = Authenticator(st, ttl_s=settings.key_cache_s)
    all_jobs = [PeriodicJob("api-key-usage", 30.0, auth.flush_usage),
                PeriodicJob("routing-policy", 30.0, runner.reload_policy), *jobs]

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
            if own_store:
                st.close()

    app = FastAPI(title=f"keel: {wf.name}", version=__version__, lifespan=lifespan,
                  description=_description(wf), docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.workflow, app.state.store, app.state.runner = wf, st, runner
    app.state.batcher, app.state.auth, app.state.settings = batcher, auth, settings
    app.state.metrics, app.state.dashboard_cache = metrics, {}
    app.state.review = _review_queue(st, wf)
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
    schemas["DecisionBatch"] = {
        "type": "object", "required": ["records"], "additionalProperties": False,
        "properties": {"records": {"type": "array", "minItems": 1,
                                   "maxItems": app.state.settings.max_batch,
                                   "items": {"$ref": "#/components/schemas/WorkflowInput"}}},
    }
    app.openapi_schema = doc
    return doc
