"""The routing policy in force: the calibrated one for the live model, else the declared one."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from keel.store import Store
from keel.store import reviews as sql
from keel.workflow import NEVER, Policy


def policy_from_params(base: Policy, version: str, params: dict[str, Any]) -> Policy:
    """The workflow's declared policy with the calibrated thresholds in place."""
    threshold = params.get("threshold")
    return replace(base, threshold=NEVER if threshold is None else float(threshold),
                   per_class=dict(params.get("per_class") or {}),
                   class_field=params.get("class_field"), version=version)


def policy_in_force(store: Store, workflow: str, model_version: str,
                    declared: Policy) -> tuple[Policy, str | None]:
    """(policy, note). A calibrated policy applies only to the model it was calibrated for."""
    row = sql.active_routing_policy(store, workflow)
    if row is None:
        return declared, None
    calibrated_for = row["params"].get("model_version")
    if calibrated_for != model_version:
        return declared, (f"routing policy {row['version']} was calibrated for model "
                          f"{calibrated_for}, not {model_version}; using the declared policy "
                          "until you run `keel calibrate` again")
    policy = policy_from_params(declared, row["version"], row["params"])
    if declared.on_void == "review":
        watch = sql.guarantee_watch(store, workflow, row["version"], row["params"])
        if watch["void"]:
            return replace(policy, review_all="guarantee_void"), (
                f"the guarantee of routing policy {row['version']} is void: the audits of its "
                f"decisions contradict it ({watch['audited']} audited, {watch['wrong']} wrong); "
                "every record goes to a person (on_void='review') until `keel calibrate` "
                "stores a policy whose guarantee holds")
    return policy, None
