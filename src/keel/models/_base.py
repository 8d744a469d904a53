"""The one-method model interface every adapter implements."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from keel._prediction import Prediction
from keel.errors import MalformedOutput, ModelError

if TYPE_CHECKING:
    from keel.contracts import Contract
    from keel.resilience import Resilience

#: What a model returns for each input: a prediction, or the error for that one record.
Outcome = Prediction | ModelError


class Model(ABC):
    """A model takes a batch of validated inputs and returns one outcome per input.

    Subclasses implement :meth:`predict` (sync) or override :meth:`apredict` (async) and set
    ``is_async``. ``version`` is a content hash: the same artifact gives the same version.
    """

    name: str = "model"
    kind: str = "model"
    is_async: bool = False
    #: Records per request for an async model (None: the whole batch in one request).
    request_size: int | None = 1
    #: How this model is called (retry, timeout, breaker, limits); None: the workflow's.
    resilience: Resilience | None = None

    @property
    @abstractmethod
    def version(self) -> str:
        """Content hash of the model (artifact, code or configuration)."""

    @abstractmethod
    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        """One outcome per input, in order."""

    async def apredict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        return await asyncio.to_thread(self.predict, inputs)

    def describe(self) -> dict[str, Any]:
        """What the store records about this model version."""
        return {"name": self.name, "kind": self.kind, "version": self.version}

    def warm(self) -> None:  # noqa: B027 - optional hook, most models need none
        """Load artifacts ahead of the first batch (training the demo model, say)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release what async calls opened on the current event loop (HTTP clients)."""

    def bind(self, output_contract: Contract) -> None:  # noqa: B027 - optional hook
        """Told the workflow's output contract (an LLM adapter asks for that shape)."""


def hash_text(*parts: str | bytes, length: int = 12) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:length]


def source_hash(fn: Callable[..., Any]) -> str:
    """A stable hash of a function's source code (falls back to its qualified name)."""
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        src = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', repr(fn))}"
    return hash_text(src)


def to_prediction(value: Any, *, where: str) -> Prediction:
    """Accept what a user function returns: a Prediction or ``(output, confidence)``."""
    if isinstance(value, Prediction):
        return value
    if isinstance(value, tuple) and len(value) == 2:
        try:
            return Prediction(output=value[0], confidence=float(value[1]))
        except (TypeError, ValueError) as exc:
            raise MalformedOutput(f"{where} returned an invalid confidence: {exc}") from exc
    raise MalformedOutput(
        f"{where} returned {type(value).__name__}; return keel.Prediction(output, confidence) "
        "or a tuple (output, confidence)"
    )


class Rules(Model):
    """Deterministic rules used as a fallback: ``fn(input) -> output or None``.

    ``None`` means the rules do not know; the next step of the fallback chain decides.
    Rules answer with confidence 1.0 and cost nothing.
    """

    kind = "rules"

    def __init__(self, fn: Callable[[Any], Any], *, name: str | None = None) -> None:
        self.fn = fn
        self.name = name or str(getattr(fn, "__name__", "rules"))
        self._version = f"rules-{self.name}-{source_hash(fn)}"

    @property
    def version(self) -> str:
        return self._version

    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        out: list[Outcome] = []
        for item in inputs:
            try:
                value = self.fn(item)
            except Exception as exc:  # a bug in user rules must not lose the record
                out.append(ModelError(f"rules {self.name!r} raised {type(exc).__name__}: {exc}"))
                continue
            if value is None:
                out.append(ModelError(f"rules {self.name!r} had no answer"))
            else:
                out.append(Prediction(output=value, confidence=1.0, metadata={"rules": self.name}))
        return out
