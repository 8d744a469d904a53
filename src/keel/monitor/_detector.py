"""Per-record out-of-distribution scores in the screen stage.

A record's score is 1 - the mean cosine similarity of its text to its k nearest reference
texts. Above the reference's calibrated threshold (at most ``ood_fpr`` of in-distribution
records score higher, 1% by default) the record is flagged ``out_of_distribution`` and the
router sends it to review with that reason, whatever the model's confidence.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from keel._record import Item
from keel.monitor._api import load_reference
from keel.monitor._profile import Profile
from keel.store import Store
from keel.store import drift as sm
from keel.workflow import DriftMonitor


class OutOfDistributionDetector:
    """Flags records whose text fields are far from the reference profile's texts."""

    def __init__(self, profile: Profile, fields: Sequence[str] | None = None) -> None:
        self.profile = profile
        names = [n for n in profile.text if profile.text[n].threshold is not None]
        self.fields = [
            n for n in names if fields is None or n.split(".", 1)[-1] in fields or n in fields
        ]

    def __call__(self, items: list[Item]) -> None:
        for name in self.fields:
            rt = self.profile.text[name].runtime(self.profile.sample)
            if rt is None:
                continue
            attr = name.split(".", 1)[-1]
            pairs = [(i, _value(i, attr)) for i in items]
            pairs = [(i, v) for i, v in pairs if isinstance(v, str) and v]
            if not pairs:
                continue
            scores = rt.scores([v for _, v in pairs])
            for (item, _), score in zip(pairs, scores, strict=True):
                if score > rt.threshold and not item.flags.get("out_of_distribution"):
                    item.flags["out_of_distribution"] = round(float(score), 4)
                    item.flags["ood_field"] = attr
                    item.flags["ood_threshold"] = round(float(rt.threshold), 4)

    def score(self, texts: Sequence[str], field: str | None = None) -> np.ndarray:
        """Scores for texts of one text field (the first when not named)."""
        name = field if field in self.profile.text else (self.fields[0] if self.fields else None)
        if name is None:
            return np.zeros(len(texts))
        rt = self.profile.text[name].runtime(self.profile.sample)
        return rt.scores(list(texts)) if rt is not None else np.zeros(len(texts))


def _value(item: Item, attr: str) -> Any:
    if item.input is not None:
        return getattr(item.input, attr, None)
    return item.raw.get(attr)


def detector_for(settings: DriftMonitor, store: Store,
                 workflow: str) -> StoredProfileDetector | None:
    """The screen-stage detector a workflow's ``monitor=keel.DriftMonitor(...)`` asks for."""
    return StoredProfileDetector(store, workflow, settings) if settings.ood else None


class StoredProfileDetector:
    """An :class:`OutOfDistributionDetector` on the newest stored profile, loaded lazily."""

    def __init__(self, store: Store, workflow: str, monitor: DriftMonitor) -> None:
        self.store, self.workflow, self.monitor = store, workflow, monitor
        self._detector: OutOfDistributionDetector | None = None
        self._profile_id: str | None = None
        self._checked = -float("inf")

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self.monitor.refresh_s:
            return
        self._checked = now
        found = sm.load_profile(self.store, self.workflow, self.monitor.reference)
        if found is None or found[0] == self._profile_id:
            return
        profile = load_reference(self.store, self.workflow, profile_id=found[0])
        if profile is not None:
            self._detector = OutOfDistributionDetector(profile, self.monitor.fields)
            self._profile_id = found[0]

    def __call__(self, items: list[Item]) -> None:
        self._refresh()
        if self._detector is not None:
            self._detector(items)
            for item in items:
                if item.flags.get("out_of_distribution"):
                    item.flags["reference_profile"] = self._profile_id
