"""Pages: login/logout, review inbox, task, dashboard, record story, API docs."""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from keel import store as store_api
from keel.errors import KeelError, LeaseConflict, NotFoundError
from keel.server._http import LoginRequired, Reader
from keel.server._keys import Principal
from keel.server.ui._document import document_path, failed_fields, preview_png
from keel.server.ui._forms import REASONS, form_fields, headline, story
from keel.store import serving as sq

router = APIRouter(include_in_schema=False)

PEOPLE = ("reviewer", "admin")

#: Pages run only keel's own scripts, are never framed, and leak no URLs to other sites.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def person(request: Request) -> Principal:
    """The signed-in reviewer or admin of a browser session, or off to the login page."""
    key_id = request.session.get("key_id")
    who = request.app.state.auth.by_id(key_id) if key_id else None
    if who is None or who.role not in PEOPLE:
        request.session.clear()
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise LoginRequired(target)
    return who  # type: ignore[no-any-return]


Person = Annotated[Principal, Depends(person)]


def page(request: Request, name: str, who: Principal | None, status: int = 200,
         **ctx: Any) -> HTMLResponse:
    from keel.server.ui import ASSETS_FIX, csrf_token, vendor_dir

    state = request.app.state
    ctx.update(request=request, who=who, workflow=state.workflow,
               csrf=csrf_token(request.session), flash=request.session.pop("flash", None),
               has_vendor=vendor_dir() is not None, assets_fix=ASSETS_FIX)
    resp: HTMLResponse = state.templates.TemplateResponse(request, name, ctx, status_code=status,
                                                          headers=SECURITY_HEADERS)
    return resp


def _safe_next(url: str | None) -> str:
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/ui/review"


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/ui/review" if request.session.get("key_id") else "/login", 303)


@router.get("/login")
def login_form(request: Request, next: str = "/ui/review") -> Response:
    request.session.pop("key_id", None)
    return page(request, "login.html", None, next=_safe_next(next))


@router.post("/login")
def login(request: Request, key: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "",
          next: Annotated[str, Form()] = "/ui/review") -> Response:
    if not csrf or csrf != request.session.get("csrf"):
        return page(request, "login.html", None, 403, next=_safe_next(next),
                    error="The form expired; please try again.")
    who = request.app.state.auth.by_secret(key.strip()) if key.strip() else None
    if who is None or who.role not in PEOPLE:
        error = ("That key is for systems (submitter role); ask an admin for a reviewer key."
                 if who is not None else "That key is unknown or was revoked.")
        return page(request, "login.html", None, 401, next=_safe_next(next), error=error)
    request.session.clear()
    request.session.update(key_id=who.key_id, csrf=secrets.token_urlsafe(24))
    return RedirectResponse(_safe_next(next), 303)


@router.post("/logout")
def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
    if csrf and csrf == request.session.get("csrf"):
        request.session.clear()
    return RedirectResponse("/login", 303)


@router.get("/ui/review")
def inbox(request: Request, who: Person) -> Response:
    q = request.app.state.review
    tasks = q.list(status="open", limit=200)
    counts: dict[str, int] = {}
    for task in tasks:
        counts[task["reason"]] = counts.get(task["reason"], 0) + 1
    backlog = sq.backlog(request.app.state.store, request.app.state.workflow.name, time.time())
    return page(request, "inbox.html", who, tasks=tasks[:50], counts=counts, backlog=backlog,
                reasons=REASONS)


@router.get("/ui/review/next")
def next_task(request: Request, who: Person, skip: str | None = None) -> Response:
    """Claim the most urgent open task nobody else holds, leaving out ones passed over."""
    q = request.app.state.review
    skipped: list[str] = request.session.get("skipped", [])
    if skip:
        _release(q, skip, who.name)
        skipped = [*skipped[-49:], skip]
        request.session["skipped"] = skipped
    claimed = q.claim(None, who.name, lease_s=request.app.state.settings.lease_s, skip=skipped)
    if claimed is not None:
        return RedirectResponse(f"/ui/review/tasks/{claimed['id']}", 303)
    request.session["skipped"] = []
    request.session["flash"] = ("Nothing left to review." if not skipped else
                                "Nothing left to review except the tasks you skipped.")
    return RedirectResponse("/ui/review", 303)


def _release(q: Any, task_id: str, reviewer: str) -> None:
    with contextlib.suppress(KeelError):
        q.release(task_id, reviewer)


@router.get("/ui/review/tasks/{task_id}")
def task_page(request: Request, who: Person, task_id: str) -> Response:
    state = request.app.state
    q = state.review
    task = q.get(task_id)
    if task["status"] == "open":
        try:
            task = {**task, **(q.claim(task_id, who.name, lease_s=state.settings.lease_s) or {})}
        except LeaseConflict as exc:
            request.session["flash"] = f"Someone else is reviewing that task ({exc.message})."
            return RedirectResponse("/ui/review", 303)
    record = store_api.trace(task["record_id"], store=state.store, workflow=state.workflow.name)[0]
    model_output = task.get("model_output")
    step = task.get("step")  # a multi-step workflow: the form is that step's output contract
    schema = step["schema"] if step else state.workflow.output.model_json_schema()
    fields = form_fields(schema)
    suggestions = {f.name: sq.output_values(state.store, state.workflow.name, f.name)
                   for f in fields if f.kind == "text" and (step is None or step["last"])}
    raw = store_api.trace(task["record_id"], store=state.store, workflow=state.workflow.name, raw=True)[0]
    similar = store_api.masked(state.store, sq.similar_decisions(
        state.store, state.workflow.name, record["record_id"],
        _text_of(raw["input"], state.workflow.key), q.get(task_id, raw=True).get("model_output")))
    return page(request, "task.html", who, task=task, record=record, model_output=model_output,
                confidence=task.get("confidence"), fields=fields, suggestions=suggestions,
                step=step,
                similar=similar, why=REASONS.get(task["reason"], task["reason"]),
                lease_s=state.settings.lease_s,
                document=document_path(raw["input"]) is not None,
                failed=failed_fields(task.get("detail")))


@router.get("/ui/review/tasks/{task_id}/document")
def task_document(request: Request, who: Person, task_id: str) -> Response:
    """The scanned document the task's record names, as a PNG (404: none, or unreadable)."""
    state = request.app.state
    task = state.review.get(task_id)
    raw = store_api.trace(task["record_id"], store=state.store, workflow=state.workflow.name,
                          raw=True)[0]
    path = document_path(raw["input"])
    png = preview_png(path) if path is not None else None
    if png is None:
        return Response("this record names no readable document", 404,
                        media_type="text/plain", headers=SECURITY_HEADERS)
    return Response(png, media_type="image/png",
                    headers={**SECURITY_HEADERS, "Cache-Control": "private, max-age=300"})


def _text_of(value: dict[str, Any], key_field: str) -> dict[str, Any]:
    return {k: v for k, v in value.items() if k != key_field}


@router.get("/ui/dashboard")
def dashboard(request: Request, who: Person) -> Response:
    return page(request, "dashboard.html", who)


@router.get("/ui/gate")
def gate_page(request: Request, who: Person) -> Response:
    """The readiness report for managers: the same page as `keel gate --html`."""
    from keel import gates  # start-up: the page loads the gate code on first view

    state = request.app.state
    rep = gates.report(state.workflow, state.store).as_dict()
    html = gates.render_html(rep, gates.history(state.store, state.workflow.name))
    return HTMLResponse(html, headers=SECURITY_HEADERS)


@router.get("/ui/records")
def find_record(request: Request, who: Person, key: str = "") -> Response:
    if key.strip():
        from urllib.parse import quote

        return RedirectResponse(f"/ui/records/{quote(key.strip(), safe='')}", 303)
    return page(request, "record.html", who, record=None, missing=None)


@router.get("/ui/records/{key:path}")
def record_page(request: Request, who: Person, key: str) -> Response:
    state = request.app.state
    try:  # a key or a record id (links use ids: a key may hold personal data)
        record = store_api.trace(key, store=state.store, workflow=state.workflow.name)[0]
    except NotFoundError:
        return page(request, "record.html", who, 404, record=None, missing=key)
    return page(request, "record.html", who, record=record, headline=headline(record),
                story=story(record), reasons=REASONS)


@router.get("/openapi.json")
def openapi(request: Request, who: Reader) -> Response:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
def docs(request: Request, who: Person) -> Response:
    from keel.server.ui import ASSETS_FIX, vendor_path

    if (vendor_path() / "swagger-ui-dist" / "swagger-ui-bundle.js").is_file():
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="keel API", swagger_favicon_url="",
            swagger_js_url="/static/vendor/swagger-ui-dist/swagger-ui-bundle.js",
            swagger_css_url="/static/vendor/swagger-ui-dist/swagger-ui.css")
    return page(request, "assets_missing.html", who, status=503, what="The API docs page",
                package="swagger-ui-dist", fix=ASSETS_FIX)
