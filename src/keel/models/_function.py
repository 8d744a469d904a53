"""Wrap a plain Python function (sync or async, per record or per batch) as a model."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from keel.errors import ModelError, NonRetryableModelError
from keel.models._base import Model, Outcome, hash_text, source_hash, to_prediction


class FunctionModel(Model):
    """``fn(input) -> Prediction | (output, confidence)``, or with ``batched=True``
    ``fn(list_of_inputs) -> list of those``. ``fn`` may be ``async def``.

    Exceptions a function raises become per-record model errors (keel's ``ModelError``
    subclasses keep their retry semantics; anything else is not retried).
    """

    kind = "function"

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        batched: bool = False,
        name: str | None = None,
        version: str | None = None,
    ) -> None:
        self.fn = fn
        self.batched = batched
        self.request_size = None if batched else 1
        self.name = name or str(getattr(fn, "__name__", "function"))
        self.is_async = inspect.iscoroutinefunction(fn)
        self._version = version or hash_text(self.name, source_hash(fn))

    @property
    def version(self) -> str:
        return self._version

    def predict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        if self.is_async:
            return asyncio.run(self.apredict(inputs))
        if self.batched:
            return self._from_batch(inputs, lambda: self.fn(list(inputs)))
        return [self._call_one(item) for item in inputs]

    async def apredict(self, inputs: Sequence[BaseModel]) -> list[Outcome]:
        if not self.is_async:
            return await super().apredict(inputs)
        if self.batched:
            try:
                values = await self.fn(list(inputs))
            except Exception as exc:
                return [_as_error(exc, self.name)] * len(inputs)
            return self._from_batch(inputs, lambda: values)
        if len(inputs) == 1:  # one request per record (the default): no task to gather
            try:
                results: list[Any] = [await self.fn(inputs[0])]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(*(self.fn(item) for item in inputs),
                                           return_exceptions=True)
        return [_as_error(r, self.name) if isinstance(r, BaseException) else self._convert(r)
                for r in results]

    def _call_one(self, item: BaseModel) -> Outcome:
        try:
            value = self.fn(item)
        except Exception as exc:
            return _as_error(exc, self.name)
        return self._convert(value)

    def _convert(self, value: Any) -> Outcome:
        try:
            return to_prediction(value, where=f"model {self.name!r}")
        except Exception as exc:
            return _as_error(exc, self.name)

    def _from_batch(self, inputs: Sequence[BaseModel], call: Callable[[], Any]) -> list[Outcome]:
        try:
            values = list(call())
        except Exception as exc:
            return [_as_error(exc, self.name)] * len(inputs)
        if len(values) != len(inputs):
            err = NonRetryableModelError(
                f"model {self.name!r} returned {len(values)} results for {len(inputs)} inputs"
            )
            return [err] * len(inputs)
        return [self._convert(v) for v in values]


def _as_error(exc: BaseException, name: str) -> ModelError:
    if isinstance(exc, ModelError):
        return exc
    err = NonRetryableModelError(f"model {name!r} raised {type(exc).__name__}: {exc}")
    err.__cause__ = exc
    return err
