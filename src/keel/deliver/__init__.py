"""Delivering decisions: sinks (files, webhooks) and the outbox of what each is owed.

Names load on first use (PEP 562): a caller that needs one layer does not import the rest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.deliver._owed import deliveries, retry_deliveries, send
    from keel.deliver._sinks import FileSink, Sink, Written
    from keel.deliver._webhook import WebhookSink

_WHERE = {
    "FileSink": "keel.deliver._sinks",
    "Sink": "keel.deliver._sinks",
    "WebhookSink": "keel.deliver._webhook",
    "Written": "keel.deliver._sinks",
    "deliveries": "keel.deliver._owed",
    "retry_deliveries": "keel.deliver._owed",
    "send": "keel.deliver._owed",
}

__all__ = [
    "FileSink",
    "Sink",
    "WebhookSink",
    "Written",
    "deliveries",
    "retry_deliveries",
    "send",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
