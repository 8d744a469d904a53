"""A speed trick at the edge: ``POST /v1/decisions`` with an API key, let in by plain ASGI.

Systems that submit decisions send thousands of small requests a second; routing each
through the framework's middleware and dependency machinery costs more than deciding the
record. This lane lets exactly that request shape (an API-key header, no session) past the
framework, authenticates it, and hands the body to the same ``decide_body`` the documented
FastAPI route calls: one decision route, two doors.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from keel import _json
from keel.errors import AuthError, BodyTooLarge, Forbidden, KeelError
from keel.server._http import status_of
from keel.server.api.decisions import decide_body

log = logging.getLogger("keel.server")

_JSON = [(b"content-type", b"application/json")]


class FastLane:
    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] != "POST"
                or scope["path"] != "/v1/decisions"):
            await self.app(scope, receive, send)
            return
        secret = _key(scope["headers"])
        if secret is None:  # a browser session (cookie + CSRF): the framework's route
            await self.app(scope, receive, send)
            return
        try:
            status, body = await self._decide(secret, scope, receive)
        except KeelError as exc:
            status, body = status_of(exc), _error(exc.code, exc.message, exc.problems)
        except Exception:
            log.exception("unexpected error deciding a request")
            status, body = 500, _error("keel.error", "keel hit an unexpected error; logged")
        headers = [*_JSON, (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _decide(self, secret: str, scope: Scope, receive: Receive) -> tuple[int, bytes]:
        state = self.state
        who = state.auth.by_secret(secret)
        if who is None:
            raise AuthError("unknown or revoked API key; create one with `keel keys create`")
        if not who.may("submit"):
            raise Forbidden(f"the {who.role} role may not do this (submit); "
                            "ask an admin for a key with the right role")
        return await decide_body(state, await _body(receive, state.settings.max_body_bytes), who)


def _key(headers: list[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            return value[7:].strip().decode("latin-1")
        if name == b"x-api-key":
            return value.strip().decode("latin-1")
    return None


async def _body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            break
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge(f"request body is larger than {limit:,} bytes; "
                               "send fewer records per request")
        parts.append(chunk)
        if not msg.get("more_body", False):
            break
    return b"".join(parts)


def _error(code: str, message: str, problems: list[dict[str, Any]] | None = None) -> bytes:
    extra = {"problems": problems} if problems else {}
    return _json.dumpb({"error": {"code": code, "message": message, **extra}})
