"""The audit trail's arithmetic: hash chains, row digests, the keyed ledger (no SQL here).

* A record's events are stored in segments (the events one transaction wrote), each hashed
  over its content and its predecessor's hash: a per-record chain.
* A segment also carries the digests of the record's rows that transaction wrote (its input
  row, each model answer, its decision), so the chain commits to the rows, not only to the
  events: editing a decision or an input is caught.
* Every transaction's segments are sealed into one block of a global ledger, HMAC-keyed with a
  key kept outside the database: deleting a record, truncating its trail, or editing a
  segment and recomputing its hashes all break a block, and without the key no block can be
  forged. An anchor (the ledger's head, signed) kept outside the store proves that nothing
  before it changed.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

GENESIS = "0" * 64


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def segment_hash(prev_hash: str, record_id: str, seq: int, workflow: str, at: float,
                 entries: str, digests: str | None = None) -> str:
    """Hash of one stored segment (a record's events written in one transaction), given the
    previous segment's hash (GENESIS for the first). ``entries`` is the stored JSON text;
    ``digests`` the row digests the segment commits to (None in stores from before 0004)."""
    payload = f"{prev_hash}|{record_id}|{seq}|{workflow}|{_num(at)}|{entries}"
    if digests is not None:
        payload += f"|{digests}"
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def row_hash(prev_hash: str, row: Mapping[str, Any]) -> str:
    """Hash of one stored segment row (a mapping with the events table's columns)."""
    return segment_hash(prev_hash, str(row["record_id"]), int(row["seq"]), str(row["workflow"]),
                        row["at"], str(row["entries"]), row.get("digests"))


# -- row digests ------------------------------------------------------------------------------
#: How each column kind is written into a digest, so that a value digests the same before it
#: is stored and after it is read back (an int stored in a REAL column comes back a float).
def _f(v: Any) -> str:
    return repr(float(v))


def _i(v: Any) -> str:
    return str(int(v))


def _b(v: Any) -> str:
    return "1" if v else "0"


CONVERTERS = {"f": _f, "i": _i, "b": _b, "s": str}


def row_digest(values: tuple[Any, ...], kinds: tuple[Any, ...]) -> str:
    """128-bit digest of one row's values, each converted by its column's kind. Trailing
    NULLs are left out, so a nullable column added by a later migration does not change the
    digest of a row written before it."""
    end = len(values)
    while end and values[end - 1] is None:
        end -= 1
    text = "\x1f".join("\x00" if v is None else conv(v)
                       for v, conv in zip(values[:end], kinds[:end], strict=True))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def digester(kinds: tuple[Any, ...]) -> Callable[[tuple[Any, ...]], str]:
    """:func:`row_digest` for one table's columns, unrolled: the same digest, computed
    without a generator and a converter call per column (it runs three times per record)."""
    names = {conv: f"c{n}" for n, conv in enumerate(dict.fromkeys(kinds))}
    parts = []
    for pos, conv in enumerate(kinds):
        value = f"v[{pos}]"
        text = value if conv is str else f"{names[conv]}({value})"
        if conv is str:  # a str column holds str; anything else is converted as before
            text = f"({value} if {value}.__class__ is str else str({value}))"
        parts.append(f"('\\x00' if {value} is None else {text})")
    width = len(kinds)
    src = (f"def digest(v):\n"
           f"    if len(v) == {width} and v[{width - 1}] is not None:\n"
           f"        text = '\\x1f'.join(({', '.join(parts)},))\n"
           f"    else:\n"
           f"        return slow(v, kinds)\n"
           f"    return sha(text.encode('utf-8', 'surrogatepass')).hexdigest()[:32]\n")
    scope: dict[str, Any] = {name: conv for conv, name in names.items()}
    scope.update(slow=row_digest, kinds=kinds, sha=hashlib.sha256)
    exec(src, scope)  # code built above from a fixed table of converters
    fn: Callable[[tuple[Any, ...]], str] = scope["digest"]
    return fn


def join_digests(found: Mapping[str, str]) -> str:
    """The text a segment stores: ``name=digest`` pairs, sorted, ``;``-separated."""
    return ";".join(f"{k}={found[k]}" for k in sorted(found))


def split_digests(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return dict(part.split("=", 1) for part in text.split(";") if "=" in part)


# -- the keyed ledger ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditKey:
    """The HMAC key that seals ledger blocks and signs anchors. ``key_id`` names it (a hash
    prefix) so a verifier can say which key it would need."""

    secret: bytes
    source: str

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.secret).hexdigest()[:12]

    def mac(self, text: str) -> str:
        return hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()

    @classmethod
    def resolve(cls, *, create: bool = True) -> AuditKey | None:
        """``KEEL_AUDIT_KEY`` (the key itself), else ``KEEL_AUDIT_KEY_FILE``, else this user's
        key file (``$XDG_CONFIG_HOME/keel/audit.key``), created on first use with ``create``.
        Give every machine that writes to one store the same key."""
        raw = os.environ.get("KEEL_AUDIT_KEY")
        if raw:
            return cls(raw.encode(), "KEEL_AUDIT_KEY")
        path = Path(os.environ.get("KEEL_AUDIT_KEY_FILE") or default_key_file())
        if path.is_file():
            return cls(path.read_bytes().strip(), str(path))
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        return cls(path.read_bytes().strip(), str(path))


def default_key_file() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "keel" / "audit.key"


def block_digest(segments: Iterable[tuple[str, int, str]]) -> str:
    """Digest of the segments one transaction wrote: (record_id, seq, hash), in any order."""
    lines = sorted(f"{rid}:{seq}:{h}" for rid, seq, h in segments)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def block_text(prev_hash: str, seq: int, at: float, count: int, digest: str, key_id: str) -> str:
    return f"{prev_hash}|{seq}|{_num(at)}|{count}|{digest}|{key_id}"


def anchor_text(anchor: Mapping[str, Any]) -> str:
    """What an anchor's signature covers."""
    return "|".join(str(anchor[k]) for k in ANCHOR_FIELDS)


ANCHOR_FIELDS = ("seq", "hash", "at", "segments", "records", "key_id", "made_at")


_SEGMENT_FIELDS = ("workflow", "at", "entries")


@dataclass
class Break:
    """The first broken link of one record's chain: where, and what kind of change it shows."""

    record_id: str
    key: str | None
    workflow: str
    seq: int
    problem: str  # seq_gap | content_changed | link_broken | rewritten | chain_missing
    #: the segment as stored (seq, at, entries, prev_hash, hash)
    message: str
    event: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"record_id": self.record_id, "key": self.key, "workflow": self.workflow,
                "seq": self.seq, "problem": self.problem, "message": self.message,
                "event": self.event}


@dataclass
class ChainReport:
    records: int = 0
    #: workflows' release histories (promotions, rollouts, rollbacks), chained like records
    release_trails: int = 0
    events: int = 0
    segments: int = 0
    broken: list[Break] = field(default_factory=list)
    broken_records: int = 0
    #: the global ledger: blocks, its head, what is wrong with it, keys it could not check
    blocks: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    ledger_problems: list[dict[str, Any]] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    key_id: str | None = None
    anchor: dict[str, Any] | None = None  # the anchor checked against, and what it found

    @property
    def ok(self) -> bool:
        return (self.broken_records == 0 and not self.ledger_problems and not self.unknown_keys
                and (self.anchor is None or bool(self.anchor.get("ok"))))

    @property
    def root(self) -> str:
        """The ledger's head hash (what an anchor keeps)."""
        return self.head_hash

    def add_break(self, found: Break, limit: int = 100) -> None:
        self.broken_records += 1
        if len(self.broken) < limit:
            self.broken.append(found)


def _shown(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in ("seq", *_SEGMENT_FIELDS, "prev_hash", "hash")}


def check_record(rows: Sequence[Mapping[str, Any]]) -> Break | None:
    """The first broken link in one record's segments (ordered by seq), or None."""
    prev = GENESIS
    expected = 1
    for n, row in enumerate(rows):
        seq = int(row["seq"])
        def brk(problem: str, message: str, row: Mapping[str, Any] = row, seq: int = seq) -> Break:
            return Break(str(row["record_id"]), row.get("record_key"), str(row["workflow"]),
                         seq, problem, message, _shown(row))
        if seq != expected:
            return brk("seq_gap", f"segments seq {expected}..{seq - 1} are missing: deleted from "
                                  "the trail")
        if row["prev_hash"] != prev:
            return brk("link_broken", f"prev_hash does not match the hash of segment seq {seq - 1}: "
                                      "that segment was replaced, or this link was edited")
        if row_hash(str(row["prev_hash"]), row) != row["hash"]:
            return brk("content_changed", "the segment's content no longer matches its hash: one "
                       f"of {', '.join(_SEGMENT_FIELDS)} was edited after it was written")
        nxt = rows[n + 1] if n + 1 < len(rows) else None
        if nxt is not None and int(nxt["seq"]) == seq + 1 and nxt["prev_hash"] != row["hash"]:
            return brk("rewritten", "the segment and its hash were rewritten together: the next "
                                    f"segment (seq {seq + 1}) still points to the original")
        prev = str(row["hash"])
        expected = seq + 1
    return None


def entry_count(entries: Any) -> int:
    try:
        found = orjson.loads(entries)
    except (orjson.JSONDecodeError, TypeError):
        return 0  # an edited segment: its hash check reports it
    return len(found) if isinstance(found, list) else 0
