"""keel: run an AI prototype as a governed production workflow.

Names load on first use (PEP 562), so that ``import keel`` and the command line start fast;
``keel.Workflow`` and the rest import their module the first time they are read.
"""

import importlib as _importlib
import typing as _typing

if _typing.TYPE_CHECKING:
    from keel._money import Budget, Cost, ModelPrice
    from keel._prediction import Prediction, Usage
    from keel.contracts import Check, Contract, Unique, Violation, check, unique
    from keel.deliver import WebhookSink, deliveries, retry_deliveries
    from keel.errors import (
        CircuitOpen,
        ContentFiltered,
        DeadlineExceeded,
        EmptyAnswer,
        ImpossibleConfidence,
        KeelError,
        MalformedOutput,
        ModelError,
        ModelTimeout,
        ModelUnavailable,
        NonRetryableModelError,
        RateLimited,
        Refused,
        RetryableModelError,
        Truncated,
        UserError,
    )
    from keel.models import (
        FakeModel,
        FunctionModel,
        Judge,
        Logprobs,
        Model,
        OpenAIModel,
        Rules,
        SelfConsistency,
        SelfReported,
        SklearnModel,
        price_for,
    )
    from keel.resilience import BreakerPolicy, RateLimits, Resilience, RetryPolicy
    from keel.runtime import Runner, RunSummary, replay, run, submit, work
    from keel.store import Store, quarantined, status, trace
    from keel.watch import Watch
    from keel.workflow import (
        AlertRule,
        Criterion,
        DriftMonitor,
        Gates,
        MvpLimits,
        Owners,
        Policy,
        Retrain,
        Rollout,
        Step,
        Workflow,
        load_workflow,
    )

__version__ = "0.1.0"

_WHERE = {
    "AlertRule": "keel.workflow",
    "BreakerPolicy": "keel.resilience",
    "Budget": "keel._money",
    "Cost": "keel._money",
    "ModelPrice": "keel._money",
    "Check": "keel.contracts",
    "CircuitOpen": "keel.errors",
    "ContentFiltered": "keel.errors",
    "Contract": "keel.contracts",
    "DeadlineExceeded": "keel.errors",
    "Criterion": "keel.workflow",
    "DriftMonitor": "keel.workflow",
    "Gates": "keel.workflow",
    "MvpLimits": "keel.workflow",
    "EmptyAnswer": "keel.errors",
    "FakeModel": "keel.models",
    "FunctionModel": "keel.models",
    "ImpossibleConfidence": "keel.errors",
    "Judge": "keel.models",
    "KeelError": "keel.errors",
    "Logprobs": "keel.models",
    "MalformedOutput": "keel.errors",
    "Model": "keel.models",
    "ModelError": "keel.errors",
    "ModelTimeout": "keel.errors",
    "ModelUnavailable": "keel.errors",
    "NonRetryableModelError": "keel.errors",
    "OpenAIModel": "keel.models",
    "Owners": "keel.workflow",
    "Policy": "keel.workflow",
    "Prediction": "keel._prediction",
    "RateLimited": "keel.errors",
    "RateLimits": "keel.resilience",
    "Refused": "keel.errors",
    "Resilience": "keel.resilience",
    "Retrain": "keel.workflow",
    "RetryPolicy": "keel.resilience",
    "RetryableModelError": "keel.errors",
    "Rollout": "keel.workflow",
    "Step": "keel.workflow",
    "Rules": "keel.models",
    "RunSummary": "keel.runtime",
    "Runner": "keel.runtime",
    "SelfConsistency": "keel.models",
    "SelfReported": "keel.models",
    "SklearnModel": "keel.models",
    "Store": "keel.store",
    "Truncated": "keel.errors",
    "Usage": "keel._prediction",
    "UserError": "keel.errors",
    "Unique": "keel.contracts",
    "Violation": "keel.contracts",
    "Watch": "keel.watch",
    "WebhookSink": "keel.deliver",
    "Workflow": "keel.workflow",
    "check": "keel.contracts",
    "unique": "keel.contracts",
    "deliveries": "keel.deliver",
    "load_workflow": "keel.workflow",
    "price_for": "keel.models",
    "quarantined": "keel.store",
    "replay": "keel.runtime",
    "retry_deliveries": "keel.deliver",
    "run": "keel.runtime",
    "status": "keel.store",
    "submit": "keel.runtime",
    "trace": "keel.store",
    "work": "keel.runtime",
}

__all__ = [
    "AlertRule",
    "BreakerPolicy",
    "Budget",
    "Check",
    "CircuitOpen",
    "ContentFiltered",
    "Contract",
    "Cost",
    "Criterion",
    "DeadlineExceeded",
    "DriftMonitor",
    "EmptyAnswer",
    "FakeModel",
    "FunctionModel",
    "Gates",
    "ImpossibleConfidence",
    "Judge",
    "KeelError",
    "Logprobs",
    "MalformedOutput",
    "Model",
    "ModelError",
    "ModelPrice",
    "ModelTimeout",
    "ModelUnavailable",
    "MvpLimits",
    "NonRetryableModelError",
    "OpenAIModel",
    "Owners",
    "Policy",
    "Prediction",
    "RateLimited",
    "RateLimits",
    "Refused",
    "Resilience",
    "Retrain",
    "RetryPolicy",
    "RetryableModelError",
    "Rollout",
    "Rules",
    "RunSummary",
    "Runner",
    "SelfConsistency",
    "SelfReported",
    "SklearnModel",
    "Step",
    "Store",
    "Truncated",
    "Unique",
    "Usage",
    "UserError",
    "Violation",
    "Watch",
    "WebhookSink",
    "Workflow",
    "__version__",
    "check",
    "deliveries",
    "load_workflow",
    "price_for",
    "quarantined",
    "replay",
    "retry_deliveries",
    "run",
    "status",
    "submit",
    "trace",
    "unique",
    "work",
]


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value  # the next read is a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_WHERE})
