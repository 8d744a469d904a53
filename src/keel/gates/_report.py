"""The readiness report as one HTML page (for `keel gate --html` and the web app)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jinja2

_PAGE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
).get_template("gate_report.html.j2")


def render_html(report: dict[str, Any], history: list[dict[str, Any]] | None = None) -> str:
    """``Report.as_dict()`` (and the stage history) as a page."""
    rows = [{**h, "when": time.strftime("%Y-%m-%d %H:%M", time.localtime(h["at"]))}
            for h in history or []]
    return _PAGE.render(r=report, history=rows)


def write_html(report: dict[str, Any], path: str | Path,
               history: list[dict[str, Any]] | None = None) -> Path:
    out = Path(path)
    out.write_text(render_html(report, history), encoding="utf-8")
    return out
