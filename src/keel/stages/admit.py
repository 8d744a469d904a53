"""admit: dedupe by key and give each new record an id."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from keel import _json
from keel._record import Item, Known, RawRow, new_id
from keel.contracts import Violation


@dataclass
class Admitted:
    items: list[Item]
    #: (key, where, record_id or '' when the first copy is in this run)
    duplicates: list[tuple[str, str, str]] = field(default_factory=list)
    #: rows whose key was seen before with other content (each also an item, quarantined)
    conflicts: int = 0
    #: the key each row was admitted under, in order (a conflict's own key for a conflict)
    keys: list[str] = field(default_factory=list)


#: The field a row's raw data gets listing fields that held undecodable bytes.
UNDECODABLE = "_invalid_utf8"

#: How a conflicting version's key is made from the key it reused.
CONFLICT_KEY = "{key}~conflict-{digest}"


class Admitter:
    """Turns rows into records, skipping keys already decided (in this run or before).

    ``lookup(keys)`` answers which keys the store already holds. A key seen before but not
    yet decided (a run that stopped mid-batch) is resumed under its existing record id.

    A key seen again with *other* content is a conflict, never skipped in silence: the new
    version becomes a record of its own (key ``<key>~conflict-<digest>``), quarantined with a
    violation naming the record the key already belongs to, so both versions are kept.
    ``stored_form(raw)`` is the JSON text a row's input is stored as (the workflow's storage
    policy applied), so a repeat compares equal to what the store holds.
    """

    def __init__(self, key_field: str, lookup: Callable[[list[str]], dict[str, Known]],
                 stored_form: Callable[[dict[str, Any]], str] = _json.dumps, *,
                 remember_calls: int | None = None) -> None:
        """``remember_calls``: remember keys from only this many calls (this one included)
        and leave older ones to ``lookup``, for a caller that has committed every chunk
        admitted before those (`keel submit`: memory stays flat however long the file)."""
        self.key_field = key_field
        self.lookup = lookup
        self.stored_form = stored_form
        #: key -> a digest of its content as stored (not the content: a million rows' worth
        #: of it is hundreds of MB); two versions of one key differ in it but by 2^-64 chance
        self.seen: dict[str, bytes] = {}
        self._remember = remember_calls
        self._older: list[dict[str, bytes]] = []  # earlier calls' keys still remembered

    def _earlier(self, key: str) -> bytes | None:
        found = self.seen.get(key)
        if found is None:
            for older in self._older:
                found = older.get(key)
                if found is not None:
                    break
        return found

    def _forget(self) -> None:
        """Start a call: keys from calls more than ``remember_calls`` ago are forgotten."""
        if self._remember is not None:
            self._older = [self.seen, *self._older][:self._remember - 1]
            self.seen = {}

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
        text: dict[str, str] = {}
        self._forget()
        for row in rows:
            key = self.key_of(row)
            where = f"{row.source}:{row.line}"
            raw = _raw(row)
            stored = self.stored_form(raw)
            digest = _digest(stored)
            earlier = self._earlier(key)
            if earlier is not None and earlier != digest:
                key = _conflict_key(key, stored)
                out.keys.append(key)
                if self._earlier(key) is not None or key in fresh:
                    out.duplicates.append((key, where, ""))
                    continue
                item = self._conflict(self.key_of(row), key, raw, where, "")
            elif earlier is not None:
                out.keys.append(key)
                out.duplicates.append((key, where, ""))
                if key in fresh:
                    fresh[key].log("duplicate_seen", detail={"at": where})
                continue
            else:
                out.keys.append(key)
                item = Item(key=key, raw=raw, source=where)
                if row.data is None:
                    item.violations.append(Violation("*", "parse",
                                                     row.error or "row could not be parsed"))
            self.seen[key] = digest
            fresh[key] = item
            text[key] = stored
        known = self.lookup(list(fresh)) if fresh else {}
        for key, item in fresh.items():
            hit = known.get(key)
            if hit is not None and hit.input is not None and hit.input != text[key]:
                alt = _conflict_key(key, text[key])
                out.keys = [alt if k == key else k for k in out.keys]
                again = known.get(alt) or self.lookup([alt]).get(alt)
                if again is not None:
                    out.duplicates.append((alt, item.source, again.record_id))
                    continue
                item = self._conflict(key, alt, item.raw, item.source, hit.record_id)
                hit = None
            if hit is None:
                out.conflicts += int(item.conflict)
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

    def _conflict(self, key: str, alt: str, raw: dict[str, Any], where: str,
                  record_id: str) -> Item:
        """The new version of a reused key, kept as a quarantined record of its own."""
        owner = f"record {record_id}" if record_id else "an earlier row of this run"
        item = Item(key=alt, raw=raw, source=where, conflict=True)
        item.violations.append(Violation(
            self.key_field, "key_conflict",
            f"key {key!r} already belongs to {owner} with other content; this version is "
            f"kept as {alt!r}: compare both (`keel trace {key}`, `keel trace '{alt}'`), fix "
            "the source, and send the right one under a key of its own"))
        return item


def _digest(stored: str) -> bytes:
    return hashlib.blake2b(stored.encode("utf-8", "surrogatepass"), digest_size=8).digest()


def _conflict_key(key: str, stored: str) -> str:
    digest = hashlib.sha256(stored.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return CONFLICT_KEY.format(key=key, digest=digest)


def _raw(row: RawRow) -> dict[str, Any]:
    if row.data is None:
        return {"_unparsed": row.text if row.text is not None else ""}
    raw = row.data
    bad = [name for name, value in raw.items() if isinstance(value, str) and _not_text(value)]
    if bad:  # shown as \xNN so the row can be stored; validate quarantines it
        for name in bad:
            raw[name] = raw[name].encode("utf-8", "surrogateescape").decode(
                "utf-8", "backslashreplace").replace("\x00", "\\x00")
        raw[UNDECODABLE] = [str(n) for n in bad]
    return raw


def _not_text(value: str) -> bool:
    """Undecodable bytes (kept as surrogates by the reader) or a NUL, which no database text
    column takes."""
    if "\x00" in value:
        return True
    if value.isascii():
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
