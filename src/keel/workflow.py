"""The declaration of a workflow: contracts, model, fallback, policy, owners."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from keel._policy import Policy
from keel.alerts import AlertRule
from keel.contracts import Check, Contract
from keel.errors import WorkflowLoadError
from keel.models._base import Model, Rules
from keel.resilience import Resilience

if TYPE_CHECKING:
    from keel.monitor import DriftMonitor


@dataclass(frozen=True)
class Owners:
    """Who answers for the workflow: the business owner and the support owner."""

    business: str
    support: str
    escalation: str | None = None


def _as_model(item: Model | Callable[[Any], Any]) -> Model:
    if isinstance(item, Model):
        return item
    if callable(item):
        return Rules(item)
    raise TypeError(f"a fallback must be a keel Model or a function, got {type(item).__name__}")


#: When model answers are committed (see :class:`Workflow`).
CHECKPOINTS = ("auto", "always")


@dataclass
class Workflow:
    """A named, governed AI decision process.

    ``fallback`` is one model or rules function, or a list tried in order when the primary
    model fails or its output breaks the output contract (a function is wrapped in
    :class:`keel.Rules`). ``resilience`` sets retry, timeout, circuit breaker and rate limits
    for every model that carries no ``resilience`` of its own. Declaring a workflow has no
    side effects: models load on first use.

    ``sensitive_fields`` name input (or output) fields holding personal data: their values are
    masked in logs, traces, exports and ``keel trace``. ``storage`` says what the store keeps
    of each input: ``"raw"``, ``"redacted"`` (personal data masked) or ``"hash"`` (replaced by
    keyed hashes, so equal values still match). ``alerts`` are the rules ``keel alerts check``
    and ``keel serve`` evaluate (None: :data:`keel.alerts.DEFAULT_RULES`).

    ``checkpoint`` says when a model's answers are committed. ``"always"``: right after the
    call, before routing acts on them. ``"auto"`` (default): right after the call when they
    cost money or the call took at least 0.1 ms per record, otherwise in the batch's one
    transaction with the decisions (atomically: never a decision without its answer). A crash
    then re-asks only answers that were cheaper to recompute than to commit on their own.
    """

    name: str
    input: type[BaseModel]
    output: type[BaseModel]
    key: str
    model: Model
    owners: Owners
    fallback: Model | Callable[[Any], Any] | Sequence[Model | Callable[[Any], Any]] | None = None
    policy: Policy = field(default_factory=Policy)
    input_checks: Sequence[Check] = ()
    output_checks: Sequence[Check] = ()
    train: Callable[..., Model] | None = None
    resilience: Resilience | None = None
    description: str = ""
    source_path: str | None = None
    sensitive_fields: Sequence[str] = ()
    storage: str = "raw"
    alerts: Sequence[AlertRule] | None = None
    #: drift monitoring: ``keel.DriftMonitor()`` routes out-of-distribution records to review
    monitor: DriftMonitor | None = None
    checkpoint: str = "auto"

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise ValueError(f"workflow name {self.name!r}: use letters, digits, '-' and '_'")
        if self.key not in self.input.model_fields:
            raise ValueError(
                f"key field {self.key!r} is not a field of {self.input.__name__}; "
                f"fields are {sorted(self.input.model_fields)}"
            )
        self._check_privacy()
        if self.checkpoint not in CHECKPOINTS:
            raise ValueError(f"checkpoint {self.checkpoint!r}: use one of {', '.join(CHECKPOINTS)}")
        self.input_contract = Contract(self.input, self.input_checks)
        self.output_contract = Contract(self.output, self.output_checks)
        chain = self.fallback
        if chain is None:
            items: list[Model] = []
        elif isinstance(chain, (list, tuple)):
            items = [_as_model(c) for c in chain]
        else:
            items = [_as_model(chain)]  # type: ignore[arg-type]
        self.fallback_chain: tuple[Model, ...] = tuple(items)
        for m in (self.model, *self.fallback_chain):
            m.bind(self.output_contract)
        self._source_hash: str | None = None

    def _check_privacy(self) -> None:
        from keel.redact import STORAGE_POLICIES

        if self.storage not in STORAGE_POLICIES:
            raise ValueError(f"storage {self.storage!r}: use one of {', '.join(STORAGE_POLICIES)}")
        if isinstance(self.sensitive_fields, str):
            raise ValueError("sensitive_fields is a list of field names, e.g. ['email']")
        known = set(self.input.model_fields) | set(self.output.model_fields)
        unknown = sorted(set(self.sensitive_fields) - known)
        if unknown:
            raise ValueError(f"sensitive_fields {unknown} are not fields of {self.input.__name__} "
                             f"or {self.output.__name__}; fields are {sorted(known)}")
        if self.key in self.sensitive_fields:
            raise ValueError(f"the key field {self.key!r} cannot be sensitive: keel stores keys to "
                             "deduplicate; key records by an id instead")
        for rule in self.alerts or ():
            if not isinstance(rule, AlertRule):
                raise ValueError(f"alerts takes keel.AlertRule objects, got {type(rule).__name__}")

    @property
    def version(self) -> str:
        """Content hash of the workflow's source file (or its declaration when defined inline)."""
        if self._source_hash is None:
            if self.source_path and Path(self.source_path).exists():
                blob = Path(self.source_path).read_bytes()
            else:
                blob = repr((self.name, self.key, self.input.model_json_schema(),
                             self.output.model_json_schema(), self.policy)).encode()
            self._source_hash = hashlib.sha256(blob).hexdigest()[:12]
        return self._source_hash

    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key": self.key,
            "owners": {"business": self.owners.business, "support": self.owners.support,
                       "escalation": self.owners.escalation},
            "input": self.input.__name__,
            "output": self.output.__name__,
            "model": self.model.name,
            "fallback": [m.name for m in self.fallback_chain],
            "policy": self.policy.as_dict(),
            "input_checks": [c.name for c in self.input_checks],
            "output_checks": [c.name for c in self.output_checks],
            "sensitive_fields": list(self.sensitive_fields),
            "storage": self.storage,
            "checkpoint": self.checkpoint,
            "alerts": None if self.alerts is None else [r.as_dict() for r in self.alerts],
        }


def load_workflow(path: str | Path) -> Workflow:
    """Import a ``workflow.py`` file and return the Workflow it declares.

    The module may hold exactly one :class:`Workflow`, or name the one to use ``workflow``.
    """
    file = Path(path)
    if not file.is_file():
        raise WorkflowLoadError(f"workflow file {str(file)!r} does not exist; pass the path to a workflow.py")
    mod_name = f"keel_workflow_{uuid.uuid4().hex[:8]}"
    spec = importlib.util.spec_from_file_location(mod_name, file)
    if spec is None or spec.loader is None:
        raise WorkflowLoadError(f"{file} is not a Python file keel can import")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(file.parent.resolve()))
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise WorkflowLoadError(
            f"{file}:{exc.lineno}: syntax error: {exc.msg}; fix the file and run again"
        ) from exc
    except Exception as exc:
        raise WorkflowLoadError(
            f"importing {file} raised {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        sys.path.remove(str(file.parent.resolve()))
    found = {k: v for k, v in vars(module).items() if isinstance(v, Workflow)}
    if not found:
        raise WorkflowLoadError(
            f"{file} declares no keel.Workflow; assign one at module level, "
            "e.g. workflow = keel.Workflow(...)"
        )
    if len(found) > 1 and "workflow" not in found:
        raise WorkflowLoadError(
            f"{file} declares {len(found)} workflows ({', '.join(sorted(found))}); "
            "name the one to run 'workflow'"
        )
    wf = found.get("workflow") or next(iter(found.values()))
    wf.source_path = str(file.resolve())
    wf._source_hash = None
    return wf
