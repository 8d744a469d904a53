"""admit: dedupe by key and give each new record an id."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from keel._record import Item, Known, new_id
from keel.contracts import Violation


@dataclass(slots=True)
class RawRow:
    """One row as a source read it: parsed fields, or the reason it could not be parsed."""

    source: str
    line: int
    data: dict[str, Any] | None
    error: str | None = None
    text: str | None = None


@dataclass
class Admitted:
    items: list[Item]
    #: (key, where, record_id or '' when the first copy is in this run)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)


class Admitter:
    """Turns rows into records, skipping keys already decided (in this run or before).

    ``lookup(keys)`` answers which keys the store already holds. A key seen before but not
    yet decided (a run that stopped mid-batch) is resumed under its existing record id.
    """

    def __init__(self, key_field: str, lookup: Callable[[list[str]], dict[str, Known]]) -> None:
        self.key_field = key_field
        self.lookup = lookup
        self.seen: set[str] = set()

    def key_of(self, row: RawRow) -> str:
        """The record key of a row (its key field, or ``source#line`` when it has none)."""
        if row.data is not None:
            value = row.data.get(self.key_field)
            if value is not None and str(value).strip() != "":
                key = str(value).strip()
                if not key.isascii():  # undecodable bytes must not reach the store's key
                    key = key.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
                return key
        return f"{row.source}#{row.line}"

    def __call__(self, rows: Iterable[RawRow]) -> Admitted:
        batch: list[Item] = []
        out = Admitted(batch)
        fresh: dict[str, Item] = {}
        for row in rows:
            key = self.key_of(row)
            where = f"{row.source}:{row.line}"
            if key in self.seen:
                out.duplicates.append((key, where, ""))
                if key in fresh:
                    fresh[key].log("duplicate_seen", detail={"at": where})
                continue
            self.seen.add(key)
            item = Item(key=key, raw=_raw(row), source=where)
            if row.data is None:
                item.violations.append(Violation("*", "parse", row.error or "row could not be parsed"))
            fresh[key] = item
        known = self.lookup(list(fresh)) if fresh else {}
        for key, item in fresh.items():
            hit = known.get(key)
            if hit is None:
                item.record_id = new_id()
                item.log("received", detail={"source": item.source})
                batch.append(item)
            elif hit.disposition is None:
                item.record_id = hit.record_id
                item.is_new = False
                item.log("resumed", detail={"source": item.source})
                batch.append(item)
            else:
                out.duplicates.append((key, item.source, hit.record_id))
        return out


def _raw(row: RawRow) -> dict[str, Any]:
    if row.data is not None:
        return row.data
    return {"_unparsed": row.text if row.text is not None else ""}
