"""Storage: SQLAlchemy Core on SQLite (default) or PostgreSQL. Only this package speaks SQL.

The public face: :class:`Store`, reading it (``status``, ``trace``, ``quarantined``, with
personal data masked) and its audit trail (``verify_trail``, ``anchor_trail``,
``export_trail``). The reading and trail functions load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from keel.store._engine import resolve_url
from keel.store._store import BatchRows, BreakerBook, SinkLedger, Store, batch_rows, merge_rows

if TYPE_CHECKING:
    from keel.store._inspect import masked, opened, quarantined, status, trace
    from keel.store._trail import (
        anchor_trail,
        export_trail,
        iter_trail,
        trail_report,
        verify_trail,
    )
    from keel.store.queries import realized_accuracy

_WHERE = {
    "masked": "_inspect", "opened": "_inspect", "quarantined": "_inspect", "status": "_inspect",
    "trace": "_inspect", "anchor_trail": "_trail", "export_trail": "_trail",
    "iter_trail": "_trail", "trail_report": "_trail", "verify_trail": "_trail",
    "realized_accuracy": "queries",
}

__all__ = [
    "BatchRows",
    "BreakerBook",
    "SinkLedger",
    "Store",
    "anchor_trail",
    "batch_rows",
    "export_trail",
    "iter_trail",
    "masked",
    "merge_rows",
    "opened",
    "quarantined",
    "realized_accuracy",
    "resolve_url",
    "status",
    "trace",
    "trail_report",
    "verify_trail",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"keel.store.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'keel.store' has no attribute {name!r}")
