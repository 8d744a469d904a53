"""Structured logs on the standard library's ``logging``: JSON lines or a readable terminal line.

Every keel log record carries its fields in ``record.keel`` (a dict). The JSON formatter writes
one object per line; the human formatter writes ``time LEVEL event key=value ...``. A filter
on keel's handler masks personal data in every string field, so a log line never carries an
e-mail, phone number, card number or IBAN even when a caller forgot to redact.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

import orjson

from keel._log import LOGGER, log_event
from keel.redact import DEFAULT, Redactor

FORMATS = ("auto", "json", "human")
_HANDLER_NAME = "keel-telemetry"
__all__ = [
    "FORMATS",
    "HumanFormatter",
    "JsonFormatter",
    "RedactingFilter",
    "configure_logging",
    "log_event",
]
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None)))


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out = dict(getattr(record, "keel", None) or {})
    for key, value in vars(record).items():
        if key not in _RESERVED and key != "keel" and not key.startswith("_"):
            out.setdefault(key, value)
    return out


class RedactingFilter(logging.Filter):
    """Masks personal data in the message and every string field of a record."""

    def __init__(self, redactor: Redactor = DEFAULT) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = self.redactor.text(record.msg)
        fields = getattr(record, "keel", None)
        if isinstance(fields, Mapping):
            record.keel = self.redactor.value(fields)
        return True


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {"ts": _iso(record.created), "level": record.levelname.lower(),
                                "logger": record.name, "event": record.getMessage()}
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ",".join(f"{k}:{_show(v)}" for k, v in value.items())
    text = str(value)
    return f'"{text}"' if " " in text else text


class HumanFormatter(logging.Formatter):
    """``12:00:01 INFO  batch decided workflow=tickets records=500 ...`` for a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        fields = " ".join(f"{k}={_show(v)}" for k, v in _fields(record).items() if v is not None)
        line = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        line = f"{line} {fields}" if fields else line
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is now (so a progress bar can redirect it)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._fixed = stream

    @property
    def stream(self) -> TextIO:
        return self._fixed or sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        self._fixed = value if value is not sys.stderr else None


def resolve_format(fmt: str, stream: TextIO | None = None) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, got {fmt!r}")
    if fmt != "auto":
        return fmt
    target = stream or sys.stderr
    return "human" if getattr(target, "isatty", lambda: False)() else "json"


def configure_logging(fmt: str = "auto", level: str | int = "info",
                      stream: TextIO | None = None) -> logging.Handler:
    """Send keel's logs to stderr (or ``stream``): JSON when not a terminal or when asked.

    Calling it again replaces keel's handler; other loggers are left alone.
    """
    chosen = resolve_format(fmt, stream)
    handler = _StderrHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if chosen == "json" else HumanFormatter())
    handler.addFilter(RedactingFilter())
    for old in [h for h in LOGGER.handlers if h.get_name() == _HANDLER_NAME]:
        LOGGER.removeHandler(old)
        old.close()
    LOGGER.addHandler(handler)
    LOGGER.setLevel(level.upper() if isinstance(level, str) else level)
    LOGGER.propagate = False
    return handler
