"""keel.unique's memory of decided outputs: read whole once, then only what is new, and now
and then the last minutes again, so a decision committed late is still learned."""

from __future__ import annotations

from typing import Any

import pytest

from keel import contracts
from keel.contracts import DecidedValues


class Source:
    """A store's decided outputs: (key, output, decided_at) rows; records each read."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, Any, float]] = []
        self.reads: list[float | None] = []

    def __call__(self, since: float | None) -> list[tuple[str, Any, float]]:
        self.reads.append(since)
        return [r for r in self.rows if since is None or r[2] >= since]


def test_reads_whole_once_then_what_is_new_and_sweeps_for_late_commits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(contracts.time, "monotonic", lambda: clock[0])
    src = Source()
    src.rows = [("a", {"vendor": "Acme", "number": "1"}, 500.0)]
    book = DecidedValues(("vendor", "number"))
    book.bind(src)
    assert src.reads == [None]
    assert book.claim({"vendor": " ACME", "number": "1"}, "b") == "a"

    book.refresh()  # the first refresh also sweeps: the last minutes read again
    src.rows.append(("c", {"vendor": "Bolt", "number": "2"}, 600.0))
    clock[0] += 1
    book.refresh()  # then only what is new
    assert src.reads[1:] == [500.0 - DecidedValues.OVERLAP_S, 500.0]
    assert book.claim({"vendor": "bolt", "number": "2"}, "d") == "c"

    # a transaction that committed late: decided at 590, after 600 was read
    src.rows.append(("e", {"vendor": "Cord", "number": "3"}, 590.0))
    clock[0] += 1
    book.refresh()
    assert src.reads[-1] == 600.0 and ("cord", "3") not in book.owner  # missed, for now
    clock[0] += DecidedValues.SWEEP_EVERY_S
    book.refresh()
    assert src.reads[-1] == 600.0 - DecidedValues.OVERLAP_S
    assert book.claim({"vendor": "Cord", "number": "3"}, "g") == "e"  # learned by the sweep


def test_an_output_missing_a_field_is_not_compared() -> None:
    book = DecidedValues(("vendor", "number"))
    assert book.claim({"vendor": "Acme"}, "a") is None
    assert book.claim({"vendor": "Acme"}, "b") is None
    assert book.claim({"vendor": "Acme", "number": "1"}, "a") is None
    assert book.claim({"vendor": "Acme", "number": "1"}, "a") is None  # itself: no duplicate
