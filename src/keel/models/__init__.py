"""Model adapters: one interface, several ways to call a model.

Names load on first use, so that reading a store (``keel status``) never imports
scikit-learn or an HTTP client.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from keel.models._base import Model, Outcome, Rules
    from keel.models._fake import FakeModel
    from keel.models._function import FunctionModel
    from keel.models._openai import OpenAIModel
    from keel.models._sklearn import SklearnModel

_WHERE = {
    "FakeModel": "_fake",
    "FunctionModel": "_function",
    "Model": "_base",
    "OpenAIModel": "_openai",
    "Outcome": "_base",
    "Rules": "_base",
    "SklearnModel": "_sklearn",
}

__all__ = ["FakeModel", "FunctionModel", "Model", "OpenAIModel", "Outcome", "Rules",
           "SklearnModel"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"keel.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'keel.models' has no attribute {name!r}")
