"""Redaction: find personal data in text and keep it out of logs, traces, exports and the store.

Detected in free text: e-mail addresses, phone numbers, payment card numbers (Luhn-checked)
and IBANs (mod-97-checked). A workflow may also declare ``sensitive_fields``: their values are
masked wherever the field appears, and wherever the value itself turns up in a message
(a contract violation quoting the input, say).

Two modes: ``"redact"`` replaces a finding by its kind (``[EMAIL]``); ``"hash"`` replaces it by
a keyed hash token (``[EMAIL:1f3a...]``) so equal values can still be matched without being
readable. The hash key comes from ``KEEL_HASH_KEY`` (set one in production: an unkeyed hash
of a phone number can be brute-forced).

The scrub stage (``keel.stages.scrub``) applies a workflow's ``storage`` policy with it
before anything is persisted.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MASK = "[REDACTED]"
MODES = ("redact", "hash")
#: Workflow ``storage`` policies: what the store keeps of a record's input.
STORAGE_POLICIES = ("raw", "redacted", "hash")

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_IBAN = re.compile(r"(?<![A-Za-z0-9])[A-Za-z]{2}\d{2}(?: ?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])")
_CARD = re.compile(r"(?<![\d.])\d(?:[ -]?\d){12,18}(?![\d])")
_PHONE = re.compile(r"(?<![\w.+-])(?:\+|00)?(?:\(\d{1,5}\)[ .-]?)?\d[\d .()-]{5,20}\d(?![\w])")
#: Cheap pre-check: nothing can be found in a string this does not match.
_CANDIDATE = re.compile(r"@|\d(?:[ .()-]{0,2}\d){8}|[A-Za-z]{2}\d{2}")
_DIGIT = re.compile(r"\d")
_NO_DIGITS = str.maketrans("", "", "0123456789")  # ASCII text: counting digits without a list
_IBANISH = re.compile(r"[A-Za-z]{2}\d{2}")


def may_hold_pii(s: str) -> bool:
    """Whether ``s`` may hold personal data (what ``_CANDIDATE`` finds), cheaply: a number
    of 9+ digits needs 9 digits (the digit pattern is the slow part of the search), an IBAN
    15 characters, and anything else an @ (short strings, ids and keys, stop early)."""
    if "@" in s:
        return True
    n = len(s)
    if n < 9:
        return False
    digits = n - len(s.translate(_NO_DIGITS)) if s.isascii() else len(_DIGIT.findall(s))
    if digits >= 9:
        return _CANDIDATE.search(s) is not None
    return n >= 15 and _IBANISH.search(s) is not None
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")
#: A contract violation quoting the value it got: ``(got ...)``.
QUOTED_VALUE = re.compile(r"\(got .*\)", re.DOTALL)
_SEPARATORS = re.compile(r"[ .()-]+")
#: an amount with cents ("10.00", "1234.5 " is not): line items such as "2 10.00 20.00" read
#: off an invoice have a phone number's digits and groups, never its shape
_AMOUNT = re.compile(r"\d\.\d{2}(?:\s|$)")

_SCALARS = frozenset({int, float, bool})
#: Keys whose values are identifiers keel made (hashes, ids), never personal data.
STRUCTURAL_KEYS = frozenset({
    "hash", "prev_hash", "record_id", "id", "run_id", "model_version", "predicted_by",
    "decided_by", "policy_version", "workflow", "version", "parent_id", "seq", "step",
})


#: Keys whose values are a record's own data (its input): nothing in them is keel's.
USER_DATA = frozenset({"input", "raw"})


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum every payment card number satisfies."""
    total = 0
    for n, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if n % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(text: str) -> bool:
    """ISO 13616 check: move the first four characters to the end, letters to numbers, mod 97."""
    s = text.replace(" ", "").upper()
    if not 15 <= len(s) <= 34 or not s[2:4].isdigit():
        return False
    moved = s[4:] + s[:4]
    try:
        number = int("".join(str(int(ch, 36)) for ch in moved))
    except ValueError:
        return False
    return number % 97 == 1


def _iban_prefix(text: str) -> int | None:
    """Length of the longest prefix of ``text`` (cut at a space) that is a valid IBAN."""
    cut = len(text)
    while cut >= 15:
        if iban_ok(text[:cut]):
            return cut
        cut = text.rfind(" ", 0, cut)
    return None


def _whole(check: Callable[[str], bool]) -> Callable[[str], int | None]:
    return lambda text: len(text) if check(text) else None


def _phone_ok(text: str) -> bool:
    digits = sum(ch.isdigit() for ch in text)
    if not 9 <= digits <= 15 or _DATE.match(text) or _AMOUNT.search(text):
        return False
    if text.startswith(("+", "00")):
        return True
    groups = [g for g in _SEPARATORS.split(text) if g]
    if "(" in text or len(groups) >= 3:
        return True
    return text.startswith("0") and 10 <= digits <= 11  # national format: 07700 900123


def _card_ok(text: str) -> bool:
    digits = text.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int
    text: str


_DETECTORS: tuple[tuple[str, re.Pattern[str], Callable[[str], int | None]], ...] = (
    ("EMAIL", _EMAIL, len),
    ("IBAN", _IBAN, _iban_prefix),
    ("CARD", _CARD, _whole(_card_ok)),
    ("PHONE", _PHONE, _whole(_phone_ok)),
)


def find_pii(text: str) -> list[Finding]:
    """Every e-mail, IBAN, card and phone number in ``text`` (no overlaps, in order)."""
    found: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, valid in _DETECTORS:
        for m in pattern.finditer(text):
            length = valid(m.group())
            if not length:
                continue
            span = (m.start(), m.start() + length)
            if any(a < span[1] and span[0] < b for a, b in taken):
                continue
            found.append(Finding(kind, span[0], span[1], text[span[0]:span[1]]))
            taken.append(span)
    return sorted(found, key=lambda f: f.start)


#: what masking leaves in a value: "[REDACTED]", "[PHONE]", "[EMAIL:3f9a...]"
_TOKEN = re.compile(r"\[(?:REDACTED|EMAIL|IBAN|CARD|PHONE)(?::[0-9a-f]{16})?\]")


def mask_left(value: Any) -> str | None:
    """The first mask token in a (nested) value: a form sent back with a masked value in it."""
    if isinstance(value, str):
        found = _TOKEN.search(value)
        return found.group() if found else None
    items = value.values() if isinstance(value, dict) else value if isinstance(
        value, (list, tuple)) else ()
    return next((t for t in (mask_left(v) for v in items) if t is not None), None)


def _hash_key() -> bytes:
    return os.environ.get("KEEL_HASH_KEY", "keel").encode()


class Redactor:
    """Masks personal data in strings and nested values. Cheap when there is nothing to find."""

    def __init__(self, sensitive_fields: Iterable[str] = (), *, mode: str = "redact",
                 key: bytes | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"redaction mode must be one of {MODES}, got {mode!r}")
        self.sensitive = frozenset(f.lower() for f in sensitive_fields)
        self.mode = mode
        self.key = key if key is not None else _hash_key()

    def token(self, kind: str, value: str) -> str:
        if self.mode == "redact":
            return f"[{kind}]"
        digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=self.key[:64],
                                 digest_size=8).hexdigest()
        return f"[{kind}:{digest}]"

    def mask(self, value: Any) -> str:
        """What a declared sensitive field's value becomes."""
        if self.mode == "redact" or value is None:
            return MASK
        return self.token("HASH", str(value))

    def text(self, s: str, known: Sequence[str] = ()) -> str:
        """``s`` with known sensitive values and detected personal data masked."""
        for value in known:
            if value in s:
                s = s.replace(value, self.mask(value))
        if not may_hold_pii(s):
            return s
        found = find_pii(s)
        if not found:
            return s
        parts: list[str] = []
        pos = 0
        for f in found:
            parts.append(s[pos:f.start])
            parts.append(self.token(f.kind, f.text))
            pos = f.end
        parts.append(s[pos:])
        return "".join(parts)

    def is_sensitive(self, name: str) -> bool:
        return bool(self.sensitive) and name.lower() in self.sensitive

    def known_values(self, raw: Mapping[str, Any] | None) -> tuple[str, ...]:
        """The declared sensitive values of one record (to find them inside messages)."""
        if not self.sensitive or not raw:
            return ()
        out: list[str] = []
        self._collect(raw, out)
        return tuple(sorted(set(out), key=len, reverse=True))

    def _collect(self, value: Any, out: list[str]) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                if self.is_sensitive(str(k)) and v is not None and not isinstance(v, (dict, list)):
                    text = str(v)
                    if len(text) >= 3:
                        out.append(text)
                else:
                    self._collect(v, out)
        elif isinstance(value, (list, tuple)):
            for v in value:
                self._collect(v, out)

    def value(self, value: Any, known: Sequence[str] = ()) -> Any:
        """A copy of ``value`` (dicts, lists, strings, numbers) with personal data masked."""
        kind = type(value)
        if kind is str:
            return self.text(value, known)
        if kind is dict:
            return self._mapping(value, known) if self.sensitive else self._plain(value, known)
        if kind in _SCALARS or value is None:
            return value
        if isinstance(value, str):
            return self.text(value, known)
        if isinstance(value, Mapping):
            return self._mapping(value, known)
        if isinstance(value, (list, tuple)):
            return [self.value(v, known) for v in value]
        return value

    def _plain(self, value: dict[Any, Any], known: Sequence[str]) -> dict[Any, Any]:
        """A dict when no field is declared sensitive: only text is scanned."""
        out = {}
        for k, v in value.items():
            kind = type(v)
            if kind is str:
                out[k] = v if k in STRUCTURAL_KEYS else self.text(v, known)
            elif kind in _SCALARS or v is None:
                out[k] = v
            elif k in USER_DATA and kind is dict:
                out[k] = self._user(v, known)
            else:
                out[k] = self.value(v, known)
        return out

    def _user(self, value: dict[Any, Any], known: Sequence[str]) -> dict[Any, Any]:
        """A record's own data: every field is the user's, even one named like keel's ids."""
        return {k: (self.mask(v) if self.is_sensitive(str(k)) and not isinstance(v, (dict, list))
                    else self.text(v, known) if isinstance(v, str) else self.value(v, known))
                for k, v in value.items()}

    def _mapping(self, value: Mapping[Any, Any], known: Sequence[str]) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        quoting = self.is_sensitive(str(value.get("field", ""))) and "message" in value
        for k, v in value.items():
            name = str(k)
            if self.is_sensitive(name):
                out[k] = self.mask(v) if not isinstance(v, (dict, list)) else MASK
            elif name in USER_DATA and isinstance(v, dict):
                out[k] = self._user(v, known)
            elif name in STRUCTURAL_KEYS and not isinstance(v, (dict, list)):
                out[k] = v
            elif quoting and name == "message" and isinstance(v, str):
                out[k] = self.text(QUOTED_VALUE.sub("(got [REDACTED])", v), known)
            else:
                out[k] = self.value(v, known)
        return out


#: Pattern-only redaction (no declared fields), used where no workflow is known.
DEFAULT = Redactor()


def for_spec(spec: Mapping[str, Any] | None, mode: str = "redact") -> Redactor:
    """The redactor for a workflow as saved in the store (its declared sensitive fields)."""
    fields = (spec or {}).get("sensitive_fields") or ()
    return Redactor(fields, mode=mode) if fields else (DEFAULT if mode == "redact" else Redactor(mode=mode))


__all__ = [
    "DEFAULT",
    "MASK",
    "STORAGE_POLICIES",
    "Finding",
    "Redactor",
    "find_pii",
    "for_spec",
    "iban_ok",
    "luhn_ok",
    "mask_left",
]
