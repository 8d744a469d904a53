"""The web app for people: login, review inbox and task pages, dashboard, record pages."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from keel.server.ui import _pages

HERE = Path(__file__).parent


def vendor_dir() -> Path | None:
    """Front-end packages installed from npm (`npm ci` in this folder; see .ci/run)."""
    env = os.environ.get("KEEL_UI_VENDOR")
    path = Path(env) if env else HERE / "node_modules"
    return path if path.is_dir() else None


def install(app: FastAPI) -> None:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["quote"] = quote
    templates.env.filters["pct"] = lambda x: "-" if x is None else f"{float(x):.0%}"
    app.state.templates = templates
    vendor = vendor_dir()
    app.state.vendor = vendor
    app.mount("/static/keel", StaticFiles(directory=str(HERE / "static")), name="static")
    if vendor is not None:
        app.mount("/static/vendor", StaticFiles(directory=str(vendor)), name="vendor")
    app.include_router(_pages.router)


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)
