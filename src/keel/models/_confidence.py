"""Where an LLM's confidence comes from: a strategy declared on the model.

Each gives a score in [0, 1] that ``keel calibrate`` turns into a threshold with a guarantee;
none is trusted as a probability until then. The score is part of the model's version, so a
threshold certified on one strategy is never used with another.

- :class:`Logprobs`: the joint probability of the answer's tokens, when the server sends
  log-probabilities (OpenAI's chat models, vLLM, llama.cpp; not reasoning models, not most
  proxies to hosted models); otherwise ``default``.
- :class:`SelfConsistency`: ``samples`` answers at ``temperature``; the most common answer
  is the output and the share of samples that agree with it is the confidence (Wang et al.,
  2023). Works with any server; costs the extra samples (asked for as ``n`` in one request
  where the server honours it, so the prompt is paid once).
- :class:`Judge`: a second model (or the same one) asked whether the answer is right; the
  confidence is its probability of "correct" (from its log-probabilities, or the share of
  ``samples`` verdicts that say so).
- :class:`SelfReported`: a number the model is asked to put in a field of its answer
  (easy, and the least reliable: calibrate before trusting it).
- :class:`Fixed`: one number for every answer (0 by default: a person sees everything).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

DEFAULT_JUDGE_PROMPT = (
    "Another assistant was given this input:\n{input}\n\nIt answered:\n{answer}\n\n"
    "Is that answer correct for the input? Reply with a JSON object "
    '{{"correct": true}} or {{"correct": false}}.'
)


@dataclass(frozen=True)
class Confidence:
    """Base of the confidence strategies (see the module's documentation)."""

    @property
    def kind(self) -> str:
        return type(self).__name__

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.kind, **asdict(self)}


@dataclass(frozen=True)
class Logprobs(Confidence):
    """exp(sum of the answer tokens' log-probabilities); ``default`` when there are none."""

    default: float = 0.0

    def __post_init__(self) -> None:
        _unit("Logprobs(default=...)", self.default)


@dataclass(frozen=True)
class SelfConsistency(Confidence):
    """``samples`` answers at ``temperature``: the majority answer, and the share agreeing.

    ``fields`` names the output fields that must agree (default: all of them; name only the
    decision when the output also has free text, such as a reason). Samples that break the
    output contract count as disagreeing. Reasoning models sample at their own temperature.
    """

    samples: int = 5
    temperature: float = 0.7
    fields: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not 2 <= self.samples <= 128:
            raise ValueError(f"SelfConsistency(samples={self.samples}): use 2 to 128 samples")
        if not 0.0 < self.temperature <= 2.0:
            raise ValueError(f"SelfConsistency(temperature={self.temperature}): samples need "
                             "a temperature in (0, 2] to differ")
        if self.fields is not None:
            object.__setattr__(self, "fields", tuple(self.fields))


@dataclass(frozen=True)
class Judge(Confidence):
    """A model asked whether the answer is right; its probability of "correct".

    ``model``, ``base_url`` and ``api_key`` default to the answering model's. ``prompt`` is a
    template over ``{input}`` (the input as JSON), ``{answer}`` (the answer as JSON) and the
    input's fields. With ``samples`` = 1 the probability comes from the judge's
    log-probabilities (a plain verdict, 1 or 0, when its server has none); with more, from
    the share of verdicts at ``temperature`` that say "correct". The judge's cost is counted.
    """

    model: str | None = None
    prompt: str = DEFAULT_JUDGE_PROMPT
    samples: int = 1
    temperature: float = 0.7
    base_url: str | None = None
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.samples <= 128:
            raise ValueError(f"Judge(samples={self.samples}): use 1 to 128 samples")

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out.pop("api_key", None)
        return out


@dataclass(frozen=True)
class SelfReported(Confidence):
    """A number in [0, 1] the model puts in ``field`` (removed from the output unless the
    output contract declares it)."""

    field: str = "confidence"


@dataclass(frozen=True)
class Fixed(Confidence):
    """The same confidence for every answer."""

    value: float = 0.0

    def __post_init__(self) -> None:
        _unit("Fixed(value=...)", self.value)


def _unit(what: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1], got {value!r}")
