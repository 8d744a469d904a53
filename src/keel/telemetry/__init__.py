"""Observability: structured logs, OpenTelemetry traces, Prometheus metrics (with redaction).

For ``keel serve``::

    telemetry = Telemetry.from_options()            # KEEL_OTEL_EXPORTER etc.
    runner = Runner(workflow, store, telemetry=telemetry)
    body = metrics_text(store, telemetry)           # GET /metrics, media type CONTENT_TYPE
    telemetry.shutdown()                            # at exit, bounded by its deadline

Names load on first use: reading a drift signal or a log format does not start OpenTelemetry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

    from keel._record import reason_class
    from keel.telemetry._core import Telemetry, build_registry, metrics_text
    from keel.telemetry._export import EXPORTERS, make_exporter
    from keel.telemetry._logs import FORMATS, configure_logging, resolve_format
    from keel.telemetry._metrics import (
        drift_scores,
        drift_signal,
        record_drift,
        register_drift_source,
    )

_WHERE = {
    "Telemetry": "keel.telemetry._core", "build_registry": "keel.telemetry._core",
    "metrics_text": "keel.telemetry._core", "EXPORTERS": "keel.telemetry._export",
    "make_exporter": "keel.telemetry._export", "FORMATS": "keel.telemetry._logs",
    "configure_logging": "keel.telemetry._logs", "resolve_format": "keel.telemetry._logs",
    "drift_scores": "keel.telemetry._metrics", "drift_signal": "keel.telemetry._metrics",
    "record_drift": "keel.telemetry._metrics",
    "register_drift_source": "keel.telemetry._metrics", "reason_class": "keel._record",
}

__all__ = [
    "CONTENT_TYPE",
    "EXPORTERS",
    "FORMATS",
    "Telemetry",
    "build_registry",
    "configure_logging",
    "drift_scores",
    "drift_signal",
    "make_exporter",
    "metrics_text",
    "reason_class",
    "record_drift",
    "register_drift_source",
    "resolve_format",
]


def __getattr__(name: str) -> Any:
    if name == "CONTENT_TYPE":
        from prometheus_client import CONTENT_TYPE_LATEST

        return CONTENT_TYPE_LATEST
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'keel.telemetry' has no attribute {name!r}")
