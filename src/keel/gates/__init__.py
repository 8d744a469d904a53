"""Gates: construction stages (prototype -> mvp -> production), the readiness report that
computes from evidence whether a workflow may take the next one, promotion with overrides
kept on the audit trail, approvers' signatures and recovery drills.

Names load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.gates._criteria import DEFAULTS, Verdict, evaluate
    from keel.gates._drill import FaultyModel, drill
    from keel.gates._report import render_html, write_html
    from keel.gates._stage import Report, current, history, promote, report, sign

_WHERE = {
    "DEFAULTS": "keel.gates._criteria",
    "Verdict": "keel.gates._criteria",
    "evaluate": "keel.gates._criteria",
    "FaultyModel": "keel.gates._drill",
    "drill": "keel.gates._drill",
    "render_html": "keel.gates._report",
    "write_html": "keel.gates._report",
    "Report": "keel.gates._stage",
    "current": "keel.gates._stage",
    "promote": "keel.gates._stage",
    "history": "keel.gates._stage",
    "report": "keel.gates._stage",
    "sign": "keel.gates._stage",
}

__all__ = [
    "DEFAULTS",
    "FaultyModel",
    "Report",
    "Verdict",
    "current",
    "drill",
    "evaluate",
    "history",
    "promote",
    "render_html",
    "report",
    "sign",
    "write_html",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'keel.gates' has no attribute {name!r}")
