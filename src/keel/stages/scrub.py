"""scrub: apply the workflow's ``storage`` policy to what is about to be persisted."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from keel import _json
from keel._record import Item
from keel.contracts import Violation
from keel.redact import QUOTED_VALUE, STORAGE_POLICIES, Redactor

#: Events whose detail keel writes from its own values (positions, numbers, step names),
#: never from the record's content: nothing in them to redact.
_KEEL_MADE = frozenset({"received", "validated", "predicted", "checkpoint_used", "resumed",
                        "duplicate_seen"})


class StorageRedactor:
    """The stage that applies a workflow's ``storage`` policy to what is about to be persisted.

    Called before each write: it masks the record's input, the messages derived from it
    (violations, errors, review details) and prompt/response metadata. The decided output is
    the business result delivered to sinks and is kept as the model gave it.
    """

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor
        self._known: dict[str, tuple[str, ...]] = {}

    @classmethod
    def for_policy(cls, storage: str, sensitive_fields: Iterable[str]) -> StorageRedactor | None:
        if storage not in STORAGE_POLICIES:
            raise ValueError(f"storage must be one of {STORAGE_POLICIES}, got {storage!r}")
        if storage == "raw":
            return None
        return cls(Redactor(sensitive_fields, mode="hash" if storage == "hash" else "redact"))

    def __call__(self, items: Sequence[Item]) -> Sequence[Item]:
        r = self.redactor
        for item in items:
            known = self._known.get(item.record_id)
            if known is None:
                known = self._known[item.record_id] = r.known_values(item.raw)
                item.raw = r.value(item.raw, known)
            for ev in item.events[item.written_events:]:
                if ev.detail is not None and ev.kind not in _KEEL_MADE:
                    ev.detail = r.value(ev.detail, known)
            if item.reason:
                item.reason = r.text(item.reason, known)
            if item.error:
                item.error = r.text(item.error, known)
            if item.review is not None:
                item.review.detail = r.text(item.review.detail, known)
            item.violations = [_violation(v, r, known) for v in item.violations]
            if item.prediction is not None and item.prediction.metadata:
                item.prediction.metadata = r.value(item.prediction.metadata, known)
        return items

    def stored_json(self, raw: dict[str, Any]) -> str:
        """A row's input as the store keeps it under this policy (JSON text)."""
        r = self.redactor
        return _json.dumps(r.value(raw, r.known_values(raw)))

    def done(self, items: Sequence[Item]) -> None:
        """Forget the batch's sensitive values once its outcomes are written."""
        for item in items:
            self._known.pop(item.record_id, None)


def _violation(v: Violation, r: Redactor, known: Sequence[str]) -> Violation:
    message = QUOTED_VALUE.sub("(got [REDACTED])", v.message) if r.is_sensitive(v.field) else v.message
    return Violation(v.field, v.rule, r.text(message, known))
