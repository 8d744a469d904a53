"""Monitoring: drift and data-quality (reference profiles, drift checks, out-of-distribution
scores) and alert rules evaluated over the store. ``keel drift`` is the command line over
:func:`build_reference` and :func:`drift_report`; ``keel alerts`` over :func:`evaluate`.

Names load on first use, so ``import keel`` stays light (SciPy loads with the drift checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.monitor._alerts import (
        AlertScheduler,
        Channel,
        CheckResult,
        LogChannel,
        WebhookChannel,
        evaluate,
        format_value,
        history,
        rules_for,
    )
    from keel.monitor._api import build_reference, drift_report, list_references, load_reference
    from keel.monitor._detector import OutOfDistributionDetector, detector_for
    from keel.monitor._drift import Check, DriftReport, DriftSettings, compare
    from keel.monitor._profile import Profile, ProfileBuilder
    from keel.monitor._render import render_html
    from keel.monitor._window import Window, WindowCounter

_WHERE = {
    "build_reference": "_api",
    "drift_report": "_api",
    "list_references": "_api",
    "load_reference": "_api",
    "AlertScheduler": "_alerts",
    "Channel": "_alerts",
    "CheckResult": "_alerts",
    "LogChannel": "_alerts",
    "WebhookChannel": "_alerts",
    "evaluate": "_alerts",
    "format_value": "_alerts",
    "history": "_alerts",
    "rules_for": "_alerts",
    "detector_for": "_detector",
    "OutOfDistributionDetector": "_detector",
    "Check": "_drift",
    "DriftReport": "_drift",
    "DriftSettings": "_drift",
    "compare": "_drift",
    "Profile": "_profile",
    "ProfileBuilder": "_profile",
    "render_html": "_render",
    "Window": "_window",
    "WindowCounter": "_window",
}

__all__ = [
    "AlertScheduler",
    "Channel",
    "Check",
    "CheckResult",
    "DriftReport",
    "DriftSettings",
    "LogChannel",
    "OutOfDistributionDetector",
    "Profile",
    "ProfileBuilder",
    "WebhookChannel",
    "Window",
    "WindowCounter",
    "build_reference",
    "compare",
    "detector_for",
    "drift_report",
    "evaluate",
    "format_value",
    "history",
    "list_references",
    "load_reference",
    "render_html",
    "rules_for",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"keel.monitor.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'keel.monitor' has no attribute {name!r}")
