"""A release: everything that decides a record, as one versioned bundle.

A release names its model version (the artifact's content hash), the prompt of an LLM model,
the output contract, the routing policy and the fallback chain. Its id is a hash of those
parts, so the same bundle registered twice is the same release. The model itself is kept as
an artifact (pickled) so that a release can decide records after the workflow file has
moved on; a release without one can run only while the workflow file declares its model.
"""

from __future__ import annotations

import hashlib
import pickle
import sys
from dataclasses import dataclass
from typing import Any

import cloudpickle  # type: ignore[import-untyped]

from keel import _json
from keel.errors import ReleaseError
from keel.models import Model
from keel.workflow import Policy, Workflow

#: The parts of a release that decide records (its id hashes them; metrics and notes do not).
DECIDING = ("model_version", "prompt", "output_contract", "policy", "fallback")


@dataclass(frozen=True)
class Release:
    """A stored release (``keel releases show``)."""

    id: str
    workflow: str
    name: str
    spec: dict[str, Any]
    model_version: str
    artifact: str | None
    created_at: float
    created_by: str | None = None
    note: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Release:
        return cls(**{k: row.get(k) for k in cls.__dataclass_fields__})  # type: ignore[arg-type]

    @property
    def short(self) -> str:
        return self.id[:12]

    def policy(self, declared: Policy) -> Policy:
        """The release's routing policy (the workflow's own SLAs and priorities kept)."""
        p = self.spec["policy"]
        return Policy(threshold=p["threshold"], per_class=dict(p.get("per_class") or {}),
                      class_field=p.get("class_field"), audit_rate=p["audit_rate"],
                      on_model_failure=p["on_model_failure"],
                      second_review_above=p.get("second_review_above"),
                      on_void=p.get("on_void", declared.on_void),
                      review_sla_s=declared.review_sla_s,
                      review_priority=declared.review_priority, version=declared.version)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "workflow": self.workflow, "name": self.name,
                "model_version": self.model_version, "runnable": self.artifact is not None,
                "created_at": self.created_at, "created_by": self.created_by,
                "note": self.note, "spec": self.spec}


def contract_of(wf: Workflow) -> dict[str, Any]:
    """The output contract's identity: a hash of its JSON schema, and its checks by name."""
    schema = _json.dumps(wf.output.model_json_schema())
    return {"schema": wf.output.__name__,
            "schema_hash": hashlib.sha256(schema.encode()).hexdigest()[:16],
            "checks": [c.name for c in wf.output_checks]}


def _prompt(model: Model) -> dict[str, Any] | None:
    prompt = getattr(model, "prompt", None)
    if prompt is None:
        return None
    return {"text": prompt if isinstance(prompt, str) else f"<function {getattr(prompt, '__name__', '?')}>",
            "system": getattr(model, "system", None)}


def _policy(policy: Policy) -> dict[str, Any]:
    return {"threshold": policy.threshold, "per_class": policy.per_class,
            "class_field": policy.class_field, "audit_rate": policy.audit_rate,
            "on_model_failure": policy.on_model_failure,
            "second_review_above": policy.second_review_above}


def bundle(wf: Workflow, model: Model | None = None,
           policy: Policy | None = None) -> dict[str, Any]:
    """The spec of the release ``wf`` declares (or ``wf`` with another model or policy)."""
    model = model or wf.model
    model.bind(wf.output_contract)  # as the workflow binds its own: an LLM asks for this shape
    model.warm()
    info = model.describe()
    return {
        "model_version": info["version"],
        "model": {k: info.get(k) for k in ("name", "kind", "version", "artifact_hash",
                                           "training_data_hash", "metrics")},
        "prompt": _prompt(model),
        "output_contract": contract_of(wf),
        "policy": _policy(policy or wf.policy),
        "fallback": [{"name": m.name, "kind": m.kind, "version": m.version}
                     for m in wf.fallback_chain],
    }


def release_id(spec: dict[str, Any]) -> str:
    deciding = {k: spec[k] for k in DECIDING}
    return hashlib.sha256(_json.dumps(deciding).encode()).hexdigest()[:32]


def pack(model: Model, wf: Workflow | None = None) -> bytes | None:
    """The model as an artifact, or None when it cannot be kept (an open file, a lock).

    Functions and classes defined in the workflow file itself (a FunctionModel's function,
    the output model an LLM adapter was bound to) are kept by value (cloudpickle): the file
    was imported under a name of keel's that no other process can import. What the file
    imports from installed packages or its own folder is kept by reference, as pickle does.
    """
    module = sys.modules.get(wf.module_name) if wf is not None and wf.module_name else None
    if module is not None:
        cloudpickle.register_pickle_by_value(module)
    try:
        data: bytes = cloudpickle.dumps(model, protocol=5)
        return data
    except Exception:  # anything pickle refuses: the release runs only as declared
        return None
    finally:
        if module is not None:
            cloudpickle.unregister_pickle_by_value(module)


def unpack(data: bytes, sha256: str, release: Release) -> Model:
    """Load a release's model from its artifact, refusing one whose bytes changed."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ReleaseError(f"release {release.name}: its stored model artifact does not match "
                           "its hash; the store was changed outside keel (`keel audit verify`)")
    try:
        model = pickle.loads(data)
    except Exception as exc:
        raise ReleaseError(f"release {release.name}: its model artifact could not be loaded "
                           f"({type(exc).__name__}: {exc}); is the code it needs installed?") from exc
    if not isinstance(model, Model):
        raise ReleaseError(f"release {release.name}: its artifact is not a keel Model")
    if model.version != release.model_version:
        raise ReleaseError(f"release {release.name}: the loaded model is version "
                           f"{model.version}, the release names {release.model_version}")
    return model


def check_fits(wf: Workflow, release: Release) -> None:
    """A release decides this workflow's records only when its output contract is the one
    the workflow checks outputs against."""
    mine, theirs = contract_of(wf), release.spec["output_contract"]
    if mine["schema_hash"] != theirs["schema_hash"]:
        raise ReleaseError(
            f"release {release.name} was made for output contract {theirs['schema']} "
            f"({theirs['schema_hash']}), but {wf.name} declares {mine['schema']} "
            f"({mine['schema_hash']}); register a release from this workflow file "
            "(`keel release register`) or restore the contract it was made for")
