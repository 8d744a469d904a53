"""keel's loggers and the one call that emits a structured event (no handlers configured here)."""

from __future__ import annotations

import logging
from typing import Any

LOGGER = logging.getLogger("keel")


def log_event(logger: logging.Logger, level: int, event: str, **fields: Any) -> None:
    """Log ``event`` with structured ``fields`` (a cheap no-op when the level is disabled)."""
    if logger.isEnabledFor(level):
        logger.log(level, event, extra={"keel": fields})
