"""Drift and data-quality monitoring: reference profiles, drift checks, out-of-distribution
scores. ``keel drift`` is the command line over :func:`build_reference` and
:func:`drift_report`.

Names load on first use, so ``import keel`` stays light (SciPy loads with the drift checks).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.monitor._api import build_reference, drift_report, list_references, load_reference
    from keel.monitor._detector import DriftMonitor, OutOfDistributionDetector
    from keel.monitor._drift import Check, DriftReport, DriftSettings, compare
    from keel.monitor._profile import Profile, ProfileBuilder
    from keel.monitor._render import render_html
    from keel.monitor._window import Window, WindowCounter

_WHERE = {
    "build_reference": "_api",
    "drift_report": "_api",
    "list_references": "_api",
    "load_reference": "_api",
    "DriftMonitor": "_detector",
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
    "Check",
    "DriftMonitor",
    "DriftReport",
    "DriftSettings",
    "OutOfDistributionDetector",
    "Profile",
    "ProfileBuilder",
    "Window",
    "WindowCounter",
    "build_reference",
    "compare",
    "drift_report",
    "list_references",
    "load_reference",
    "render_html",
]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"keel.monitor.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'keel.monitor' has no attribute {name!r}")
