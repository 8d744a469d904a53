"""Telemetry options shared by `keel run` and `keel replay`: logs, traces, metrics out."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keel._log import log_event
from keel.errors import ConfigError

if TYPE_CHECKING:
    from keel.runtime import RunSummary
    from keel.telemetry import Telemetry

OtelOption = Annotated[str | None, typer.Option(
    "--otel", envvar="KEEL_OTEL_EXPORTER", metavar="EXPORTER",
    help="Traces: none (default), console, otlp / otlp-http, otlp-grpc.")]
OtelEndpointOption = Annotated[str | None, typer.Option(
    "--otel-endpoint", envvar="KEEL_OTEL_ENDPOINT",
    help="OTLP collector URL (default: the OTEL_EXPORTER_OTLP_* variables, else localhost).")]
MetricsFileOption = Annotated[Path | None, typer.Option(
    "--metrics-file", help="Write Prometheus metrics to this textfile when the run ends.")]
PushgatewayOption = Annotated[str | None, typer.Option(
    "--pushgateway", envvar="KEEL_PUSHGATEWAY", help="Push metrics to this Pushgateway URL at the end.")]
LogFormatOption = Annotated[str, typer.Option(
    "--log-format", envvar="KEEL_LOG_FORMAT",
    help="auto (JSON unless stderr is a terminal), json or human.")]
LogLevelOption = Annotated[str | None, typer.Option(
    "--log-level", envvar="KEEL_LOG_LEVEL",
    help="debug (one line per record), info (per batch), warning... Default: info for JSON, "
         "warning in a terminal.")]


@dataclass
class TelemetryOptions:
    otel: str | None = None
    otel_endpoint: str | None = None
    metrics_file: Path | None = None
    pushgateway: str | None = None
    log_format: str = "auto"
    log_level: str | None = None


@contextlib.contextmanager
def session(opts: TelemetryOptions, db: str | None) -> Iterator[Telemetry]:
    """Configure logging, build the Telemetry, and on the way out flush it and write metrics."""
    from keel.telemetry import (  # start-up: OpenTelemetry only for commands that run
        Telemetry,
        configure_logging,
        resolve_format,
    )

    try:
        fmt = resolve_format(opts.log_format)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    level = opts.log_level or ("info" if fmt == "json" else "warning")
    if level.upper() not in logging.getLevelNamesMapping():
        raise ConfigError(f"--log-level {level!r}: use debug, info, warning or error")
    configure_logging(fmt, level)
    wants_metrics = bool(opts.metrics_file or opts.pushgateway)
    telemetry = Telemetry.from_options(opts.otel, opts.otel_endpoint, metrics=wants_metrics)
    try:
        yield telemetry
    finally:
        telemetry.shutdown()
        if wants_metrics:
            _metrics_out(telemetry, opts, db)


def log_summary(summary: RunSummary) -> None:
    """One structured line with the run's closing summary (counts, latency, cost)."""
    log_event(logging.getLogger("keel.run"), logging.INFO, "run finished", **summary.as_dict())


def _metrics_out(telemetry: Telemetry, opts: TelemetryOptions, db: str | None) -> None:
    from keel.store import Store  # start-up: see keel.cli

    store = Store.open(db)
    try:
        if opts.metrics_file:
            telemetry.write_metrics(opts.metrics_file, store)
        if opts.pushgateway:
            try:
                telemetry.push_metrics(opts.pushgateway, store)
            except Exception as exc:  # the run is done; a gateway being down only costs metrics
                log_event(logging.getLogger("keel.run"), logging.WARNING, "metrics push failed",
                          gateway=opts.pushgateway, error=f"{type(exc).__name__}: {exc}")
    finally:
        store.close()
