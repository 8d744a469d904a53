"""Model adapters: one interface, several ways to call a model.

Names load on first use, so that reading a store (``keel status``) never imports
scikit-learn or an HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.models._base import Model, Outcome, Rules
    from keel.models._confidence import (
        Confidence,
        Fixed,
        Judge,
        Logprobs,
        SelfConsistency,
        SelfReported,
    )
    from keel.models._fake import FakeModel
    from keel.models._function import FunctionModel
    from keel.models._openai import OpenAIModel
    from keel.models._prices import Price, price_for
    from keel.models._sklearn import SklearnModel
    from keel.models._wire import family_of

_WHERE = {
    "Confidence": "_confidence",
    "FakeModel": "_fake",
    "Fixed": "_confidence",
    "FunctionModel": "_function",
    "Judge": "_confidence",
    "Logprobs": "_confidence",
    "Model": "_base",
    "OpenAIModel": "_openai",
    "Outcome": "_base",
    "Price": "_prices",
    "Rules": "_base",
    "SelfConsistency": "_confidence",
    "SelfReported": "_confidence",
    "SklearnModel": "_sklearn",
    "family_of": "_wire",
    "price_for": "_prices",
}

__all__ = ["FakeModel", "FunctionModel", "Model", "OpenAIModel", "Outcome", "Rules",
           "SklearnModel"]
__all__ = ["Confidence", "FakeModel", "Fixed", "FunctionModel", "Judge", "Logprobs", "Model",
           "OpenAIModel", "Price", "Rules", "SelfConsistency", "SelfReported", "SklearnModel",
           "family_of", "price_for"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"keel.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'keel.models' has no attribute {name!r}")
