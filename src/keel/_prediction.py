"""What one model call says about one record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class Usage:
    """Tokens and money spent on one prediction."""

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
        )


NO_USAGE = Usage()


@dataclass(slots=True)
class Prediction:
    """A model's answer for one record.

    ``output`` is a dict (or pydantic model) checked against the workflow's output contract;
    ``confidence`` is in [0, 1]; ``metadata`` may carry the prompt text and raw response.
    """

    output: Any
    confidence: float
    usage: Usage = NO_USAGE  # frozen: one shared instance
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        conf = float(self.confidence)
        if not 0.0 <= conf <= 1.0 or conf != conf:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence!r}")
        self.confidence = conf
