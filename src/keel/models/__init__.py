"""Model adapters: one interface, several ways to call a model."""

from keel.models._base import Model, Rules
from keel.models._fake import FakeModel
from keel.models._function import FunctionModel
from keel.models._openai import OpenAIModel
from keel.models._sklearn import SklearnModel

__all__ = ["FakeModel", "FunctionModel", "Model", "OpenAIModel", "Rules", "SklearnModel"]
