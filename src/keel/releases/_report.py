"""The evaluation's HTML report: one self-contained page with its plots drawn as SVG."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jinja2

#: The page, beside this module (a Jinja template, escaped).
_PAGE = jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent), autoescape=True,
).get_template("eval_report.html.j2")


def _pct(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:.1%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def reliability_svg(bins: list[dict[str, Any]], size: int = 260) -> str:
    """A reliability plot: accuracy per confidence bin as bars, the diagonal of perfect
    calibration, bin counts as bar opacity."""
    pad = 30
    inner = size - 2 * pad
    most = max((b["count"] for b in bins), default=1)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
             f'role="img" aria-label="reliability plot">',
             f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="#f6f8fa"/>']
    for b in bins:
        x = pad + b["low"] * inner
        w = (b["high"] - b["low"]) * inner - 1
        h = b["accuracy"] * inner
        opacity = 0.35 + 0.65 * b["count"] / most
        parts.append(f'<rect x="{x:.1f}" y="{pad + inner - h:.1f}" width="{w:.1f}" '
                     f'height="{h:.1f}" fill="#0969da" fill-opacity="{opacity:.2f}">'
                     f'<title>confidence {b["low"]:.1f}-{b["high"]:.1f}: accuracy '
                     f'{b["accuracy"]:.1%} over {b["count"]} records</title></rect>')
    parts.append(f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" '
                 'stroke="#cf222e" stroke-dasharray="4 3"/>')
    parts.append(f'<text x="{size / 2}" y="{size - 6}" text-anchor="middle" font-size="11">'
                 'confidence</text>')
    parts.append(f'<text x="10" y="{size / 2}" font-size="11" transform="rotate(-90 10 '
                 f'{size / 2})" text-anchor="middle">accuracy</text>')
    parts.append("</svg>")
    return "".join(parts)


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    """Write an eval report (``EvalReport.as_dict()``) as one HTML file (the report itself
    is left as it was: the CLI prints it as JSON afterwards)."""
    report = copy.deepcopy(report)
    for m in report["releases"].values():
        for k in m["per_class"]:
            k["recall_key"] = -1.0 if k["recall"] is None else k["recall"]
    out = Path(path)
    out.write_text(_PAGE.render(r=report, pct=_pct, num=_num, reliability_svg=reliability_svg),
                   encoding="utf-8")
    return out
