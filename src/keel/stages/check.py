"""check: the output contract. A violating output is never accepted automatically."""

from __future__ import annotations

from keel._prediction import Prediction
from keel.contracts import Contract, Violation


class OutputChecker:
    """Validates a prediction's output; returns the clean output dict or the violations."""

    def __init__(self, contract: Contract) -> None:
        self.contract = contract

    def __call__(self, prediction: Prediction,
                 key: str | None = None) -> tuple[dict[str, object] | None, list[Violation]]:
        """``key``: the record's (its contract's unique checks run only with one)."""
        value, violations = self.contract.validate(prediction.output, key=key)
        if value is None:
            return None, violations
        return self.contract.as_json(value), []
