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


#: What a page says when the front-end packages are missing.
ASSETS_FIX = ("run `pip install -e .` again with network (it fetches them from the npm registry), "
              "or `npm ci --prefix src/keel/server/ui`, or set KEEL_UI_VENDOR to a node_modules "
              "folder holding chart.js and swagger-ui-dist; no restart is needed")


def vendor_path() -> Path:
    """Where the front-end packages from npm live (see hatch_build.py)."""
    env = os.environ.get("KEEL_UI_VENDOR")
    return Path(env) if env else HERE / "node_modules"


def vendor_dir() -> Path | None:
    """The front-end packages' folder, if they are installed. Looked up on every page, so
    packages fetched while the server runs are used at once."""
    path = vendor_path()
    return path if (path / "chart.js").is_dir() else None


def install(app: FastAPI) -> None:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["quote"] = quote
    templates.env.filters["pct"] = lambda x: "-" if x is None else f"{float(x):.0%}"
    app.state.templates = templates
    app.mount("/static/keel", StaticFiles(directory=str(HERE / "static")), name="static")
    app.mount("/static/vendor", StaticFiles(directory=str(vendor_path()), check_dir=False),
              name="vendor")
    app.include_router(_pages.router)


def csrf_token(session: dict[str, Any]) -> str:
    token = session.get("csrf")
    if not token:
        token = session["csrf"] = secrets.token_urlsafe(24)
    return str(token)
