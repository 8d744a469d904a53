"""keel: run an AI prototype as a governed production workflow."""

from keel._api import quarantined, replay, run, status, trace
from keel._policy import Policy
from keel._prediction import Prediction, Usage
from keel.contracts import Check, Contract, Violation, check
from keel.errors import (
    KeelError,
    MalformedOutput,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NonRetryableModelError,
    RateLimited,
    RetryableModelError,
    UserError,
)
from keel.models import FakeModel, FunctionModel, Model, Rules, SklearnModel
from keel.monitor._detector import DriftMonitor
from keel.resilience import RetryPolicy
from keel.runner import Runner, RunSummary
from keel.store import Store
from keel.workflow import Owners, Workflow, load_workflow

__version__ = "0.1.0"

__all__ = [
    "Check",
    "Contract",
    "DriftMonitor",
    "FakeModel",
    "FunctionModel",
    "KeelError",
    "MalformedOutput",
    "Model",
    "ModelError",
    "ModelTimeout",
    "ModelUnavailable",
    "NonRetryableModelError",
    "Owners",
    "Policy",
    "Prediction",
    "RateLimited",
    "RetryPolicy",
    "RetryableModelError",
    "Rules",
    "RunSummary",
    "Runner",
    "SklearnModel",
    "Store",
    "Usage",
    "UserError",
    "Violation",
    "Workflow",
    "__version__",
    "check",
    "load_workflow",
    "quarantined",
    "replay",
    "run",
    "status",
    "trace",
]
