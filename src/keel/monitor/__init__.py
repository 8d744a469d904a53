"""Drift and data-quality monitoring: reference profiles, drift checks, out-of-distribution scores."""

from keel.monitor._drift import Check, DriftReport, DriftSettings, compare
from keel.monitor._profile import Profile, ProfileBuilder
from keel.monitor._window import Window, WindowCounter

__all__ = [
    "Check",
    "DriftReport",
    "DriftSettings",
    "Profile",
    "ProfileBuilder",
    "Window",
    "WindowCounter",
    "compare",
]
