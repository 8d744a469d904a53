"""HTTP plumbing: error bodies with stable codes, the body-size limit, authentication."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel import _json
from keel.errors import (
    AuthError,
    BodyTooLarge,
    CsrfFailed,
    Forbidden,
    InvalidDecision,
    KeelError,
    LeaseConflict,
    NotFoundError,
    RequestError,
    ReviewError,
    StoreError,
    UserError,
)
from keel.server._keys import Principal

log = logging.getLogger("keel.server")

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_STATUS: tuple[tuple[type[KeelError], int], ...] = (
    (Forbidden, 403), (AuthError, 401), (NotFoundError, 404), (LeaseConflict, 409),
    (InvalidDecision, 422), (ReviewError, 400), (StoreError, 503), (UserError, 400),
)


def status_of(exc: KeelError) -> int:
    if isinstance(exc, RequestError):
        return exc.status
    return next((code for cls, code in _STATUS if isinstance(exc, cls)), 500)


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None, **extra: Any) -> Response:
    body = {"error": {"code": code, "message": message, **extra}}
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return Response(_json.dumpb(body), status_code=status, media_type="application/json",
                    headers=headers or None)


class LoginRequired(Exception):
    """A browser page needs a signed-in reviewer or admin: send them to the login page."""

    def __init__(self, next_url: str) -> None:
        self.next_url = next_url


async def _keel_error(_req: Request, exc: Exception) -> Response:
    assert isinstance(exc, KeelError)
    status = status_of(exc)
    if status >= 500:
        log.error("request failed: %s (%s)", exc.message, exc.code)
    if exc.problems:
        return error_response(status, exc.code, exc.message, problems=exc.problems)
    return error_response(status, exc.code, exc.message)


async def _validation(_req: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problems = [{"field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                 "message": e.get("msg", "")} for e in exc.errors()]
    first = problems[0] if problems else {"field": "", "message": "invalid request"}
    msg = f"{first['field'] or 'request'}: {first['message']}"
    return error_response(422, "keel.request.invalid", msg, problems=problems)


async def _http(req: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = "keel.not_found" if exc.status_code == 404 else f"keel.http.{exc.status_code}"
    headers = dict(exc.headers or {})
    if exc.status_code == 405:  # every method the path takes, over all of its routes
        headers["Allow"] = ", ".join(allowed_methods(req.app, req.url.path))
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def allowed_methods(app: Any, path: str) -> list[str]:
    found: set[str] = set()
    for route in app.routes:
        regex, methods = getattr(route, "path_regex", None), getattr(route, "methods", None)
        if regex is not None and methods and regex.match(path):
            found |= set(methods)
    return sorted(found)


async def _login(req: Request, exc: Exception) -> Response:
    assert isinstance(exc, LoginRequired)
    from urllib.parse import quote

    return RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303)


async def _unexpected(_req: Request, exc: Exception) -> Response:
    log.exception("unexpected error", exc_info=exc)
    return error_response(500, "keel.error", "keel hit an unexpected error; it has been logged")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(KeelError, _keel_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(LoginRequired, _login)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """Refuses request bodies over ``max_bytes`` (by Content-Length, or while streaming)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            resp = self._too_large() if declared.isdigit() else error_response(
                400, "keel.request.invalid", "Content-Length is not a number")
            await resp(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.max_bytes:
                raise BodyTooLarge(self._message())
            return msg

        await self.app(scope, counted, send)

    def _message(self) -> str:
        return (f"request body is larger than {self.max_bytes:,} bytes; "
                "send fewer records per request")

    def _too_large(self) -> Response:
        return error_response(413, BodyTooLarge.code, self._message())


_bearer = HTTPBearer(auto_error=False, description="An API key from `keel keys create`.")
_header = APIKeyHeader(name="X-API-Key", auto_error=False,
                       description="The same API key, in a header of its own.")


async def principal_of(request: Request, bearer: HTTPAuthorizationCredentials | None,
                       header_key: str | None) -> Principal:
    """The caller, from an API key header or a signed-in browser session (with CSRF check)."""
    auth = request.app.state.auth
    secret = header_key or (bearer.credentials if bearer else None)
    if secret:
        found = auth.by_secret(secret)
        if found is None:
            raise AuthError("unknown or revoked API key; create one with `keel keys create`")
        return found  # type: ignore[no-any-return]
    key_id = request.session.get("key_id") if "session" in request.scope else None
    if key_id:
        found = auth.by_id(key_id)
        if found is not None:
            if request.method not in SAFE_METHODS:
                sent = request.headers.get("x-csrf-token")
                if not sent or sent != request.session.get("csrf"):
                    raise CsrfFailed("this form is missing its CSRF token; reload the page")
            return found  # type: ignore[no-any-return]
        request.session.clear()
    raise AuthError("authentication required: send `Authorization: Bearer <key>` or "
                    "`X-API-Key: <key>` (create a key with `keel keys create`)")


def require(permission: str) -> Any:
    """A dependency: the caller, who must hold a role allowed ``permission``."""

    async def dep(request: Request,
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
                  header_key: Annotated[str | None, Depends(_header)]) -> Principal:
        who = await principal_of(request, bearer, header_key)
        if not who.may(permission):
            raise Forbidden(f"the {who.role} role may not do this ({permission}); "
                            "ask an admin for a key with the right role")
        return who

    return Depends(dep)



#: Parameter types for endpoints: the caller, checked for a permission.
Submitter = Annotated[Principal, require("submit")]
Reader = Annotated[Principal, require("read")]
Reviewer = Annotated[Principal, require("review")]
Watcher = Annotated[Principal, require("dashboard")]
Admin = Annotated[Principal, require("admin")]
Signer = Annotated[Principal, require("sign")]
