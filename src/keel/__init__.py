"""keel: run an AI prototype as a governed production workflow."""

from keel._api import quarantined, replay, run, status, trace
from keel._deliveries import deliveries, retry_deliveries
from keel._policy import Policy
from keel._prediction import Prediction, Usage
from keel._webhook import WebhookSink
from keel.alerts import AlertRule
from keel.contracts import Check, Contract, Violation, check
from keel.errors import (
    CircuitOpen,
    DeadlineExceeded,
    KeelError,
    MalformedOutput,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NonRetryableModelError,
    RateLimited,
    Refused,
    RetryableModelError,
    UserError,
)
from keel.models import FakeModel, FunctionModel, Model, OpenAIModel, Rules, SklearnModel
from keel.monitor._detector import DriftMonitor
from keel.resilience import BreakerPolicy, RateLimits, Resilience, RetryPolicy
from keel.runner import Runner, RunSummary
from keel.store import Store
from keel.workflow import Owners, Workflow, load_workflow

__version__ = "0.1.0"

__all__ = [
    "AlertRule",
    "BreakerPolicy",
    "Check",
    "CircuitOpen",
    "Contract",
    "DeadlineExceeded",
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
    "OpenAIModel",
    "Owners",
    "Policy",
    "Prediction",
    "RateLimited",
    "RateLimits",
    "Refused",
    "Resilience",
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
    "WebhookSink",
    "Workflow",
    "__version__",
    "check",
    "deliveries",
    "load_workflow",
    "quarantined",
    "replay",
    "retry_deliveries",
    "run",
    "status",
    "trace",
]
