"""The runtime: the loop that runs a workflow's stages over batches of records (keel run,
keel replay, keel serve), its writer, and reading input files.

Names load on first use (PEP 562): a caller that needs one layer does not import the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.runtime._api import replay, run, submit, work
    from keel.runtime._runner import Earlier, ProgressFn, Runner, RunSummary
    from keel.runtime._worker import enqueue
    from keel.runtime._writer import RowWriter

_WHERE = {
    "Earlier": "keel.runtime._runner",
    "ProgressFn": "keel.runtime._runner",
    "RowWriter": "keel.runtime._writer",
    "RunSummary": "keel.runtime._runner",
    "Runner": "keel.runtime._runner",
    "replay": "keel.runtime._api",
    "run": "keel.runtime._api",
    "enqueue": "keel.runtime._worker",
    "submit": "keel.runtime._api",
    "work": "keel.runtime._api",
}

__all__ = [
    "Earlier",
    "ProgressFn",
    "RowWriter",
    "RunSummary",
    "Runner",
    "enqueue",
    "replay",
    "run",
    "submit",
    "work",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
