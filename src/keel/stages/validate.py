"""validate: the input contract. A violation quarantines the record with its reasons."""

from __future__ import annotations

from keel._record import Item
from keel.contracts import Contract, Violation

_MARK = "_invalid_utf8"


def _encoding_violations(raw: dict[str, object]) -> list[Violation]:
    """Fields holding undecodable bytes. The raw row is rewritten with the bytes shown as
    ``\\xNN`` and marked, so it can be stored and replay still knows it was bad."""
    found = []
    marked = raw.get(_MARK)
    if isinstance(marked, list):
        return [Violation(str(name), "encoding", "bytes are not valid UTF-8 (shown as \\xNN); "
                          "re-export the source as UTF-8 and run it again") for name in marked]
    for name, value in raw.items():
        if isinstance(value, str) and not value.isascii():  # ASCII is valid UTF-8
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                found.append(Violation(
                    str(name), "encoding",
                    f"bytes at character {exc.start} are not valid UTF-8; "
                    "re-export the source as UTF-8 and run it again",
                ))
                raw[name] = value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if found:
        raw[_MARK] = [v.field for v in found]
    return found


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
