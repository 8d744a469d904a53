"""What one model call says about one record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True, frozen=True)
class Usage:
    """Tokens and money spent on one prediction.

    ``cached_tokens`` are the input tokens the server read from its prompt cache (part of
    ``input_tokens``, billed at the cached price). ``priced`` is False when a model with no
    known price was used: ``cost_usd`` then counts only what was priced, and keel reports the
    cost as unknown, never as $0.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cached_tokens: int = 0
    priced: bool = True

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.cost_usd + other.cost_usd,
            self.cached_tokens + other.cached_tokens,
            self.priced and other.priced,
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
