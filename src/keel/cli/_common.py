"""Shared CLI helpers: consoles, JSON output, the --db option."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from keel.errors import UserError

console = Console(highlight=False)
console_err = Console(stderr=True, highlight=False, soft_wrap=True)


def fit_consoles() -> None:
    """Take COLUMNS as it is now (Rich reads it once, when a console is made; one process
    may run many commands: tests, an embedding program)."""
    cols = os.environ.get("COLUMNS", "")
    for con in (console, console_err):
        con.width = int(cols) if cols.isdigit() and int(cols) > 0 else None  # type: ignore[assignment]

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="KEEL_DB",
                 help="Store URL or SQLite path (default: .keel/keel.db here)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
HeaderOption = Annotated[
    list[str] | None,
    typer.Option("--webhook-header", metavar="'NAME: VALUE'",
                 help="A header for every webhook POST (repeatable), e.g. the receiver's "
                      "'Authorization: Bearer ...'. Never stored: give it again to "
                      "`keel deliveries retry`."),
]


def parse_headers(raw: list[str] | None) -> dict[str, str]:
    """``["Name: value", ...]`` as a dict; a malformed one is a user error."""
    out: dict[str, str] = {}
    for item in raw or ():
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise UserError(f"webhook header {item.split(':')[0]!r}...: write it as 'Name: value'")
        out[name.strip()] = value.strip()
    return out


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=str, ensure_ascii=False) + "\n")


def fmt_num(value: Any) -> str:
    """A value for people: floats to three decimals (a confidence, a score), large ones with
    thousands separators; containers element by element; anything else as ``str``."""
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 1000 else f"{value:.3f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {fmt_num(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(fmt_num(v) for v in value) + "]"
    return str(value)


def fmt_cost(cost_usd: float, unknown: int = 0, what: str = "records") -> str:
    """Money spent; when a model with no known price was used, the cost is unknown (never $0)."""
    if not unknown:
        return f"${cost_usd:.4f}"
    return (f"unknown for {unknown:,} {what} (a model with no known price: pass "
            f"price_per_mtok) + ${cost_usd:.4f} priced")


def fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.1f} ms"


def fmt_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
