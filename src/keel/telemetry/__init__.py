"""Observability: structured logs, OpenTelemetry traces, Prometheus metrics (with redaction).

For ``keel serve``::

    telemetry = Telemetry.from_options()            # KEEL_OTEL_EXPORTER etc.
    runner = Runner(workflow, store, telemetry=telemetry)
    body = metrics_text(store, telemetry)           # GET /metrics, media type CONTENT_TYPE
    telemetry.shutdown()                            # at exit, bounded by its deadline
"""

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

from keel._record import reason_class
from keel.telemetry._core import Telemetry, build_registry, metrics_text
from keel.telemetry._export import EXPORTERS, make_exporter
from keel.telemetry._logs import FORMATS, configure_logging
from keel.telemetry._metrics import (
    drift_scores,
    record_drift,
    register_drift_source,
)

__all__ = [
    "CONTENT_TYPE",
    "EXPORTERS",
    "FORMATS",
    "Telemetry",
    "build_registry",
    "configure_logging",
    "drift_scores",
    "make_exporter",
    "metrics_text",
    "reason_class",
    "record_drift",
    "register_drift_source",
]
