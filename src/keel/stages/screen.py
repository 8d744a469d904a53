"""screen: flags (drift, out-of-distribution) that travel with a record to routing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from keel._record import Item

#: A detector looks at valid records and sets ``item.flags`` on those it worries about.
Detector = Callable[[list[Item]], None]


class Screener:
    def __init__(self, detectors: Sequence[Detector] = ()) -> None:
        self.detectors = list(detectors)

    def __call__(self, items: list[Item]) -> list[Item]:
        live = [i for i in items if i.disposition is None]
        if live:
            for detect in self.detectors:
                detect(live)
            for item in live:
                if item.flags:
                    item.log("screened", detail={"flags": item.flags})
        return items
