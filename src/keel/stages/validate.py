"""validate: the input contract. A violation quarantines the record with its reasons."""

from __future__ import annotations

from keel._record import Item
from keel.contracts import Contract, Violation
from keel.stages.admit import UNDECODABLE


def _encoding_violations(raw: dict[str, object]) -> list[Violation]:
    """Fields holding undecodable bytes: admit rewrote them as ``\\xNN`` and marked them (so
    the row can be stored, and a replay still knows it was bad)."""
    marked = raw.get(UNDECODABLE)
    if not isinstance(marked, list):
        return []
    return [Violation(str(name), "encoding", "holds bytes that are not text (invalid UTF-8 or a "
                      "NUL, shown as \\xNN); re-export the source as UTF-8 (or pass --encoding) "
                      "and run it again") for name in marked]


class InputValidator:
    """Parses each record's raw fields with the input contract."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def __call__(self, items: list[Item]) -> list[Item]:
        for item in items:
            if item.disposition is not None:
                continue
            if not item.violations:
                item.violations = _encoding_violations(item.raw)
            if not item.violations:
                item.input, item.violations = self.contract.validate(item.raw)
            if item.violations:
                reasons = [v.as_dict() for v in item.violations]
                item.log("quarantined", detail={"violations": reasons})
                item.finish("quarantined", str(item.violations[0]))
            else:
                item.log("validated")
        return items
