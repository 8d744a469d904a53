"""Reviewing one step of a multi-step workflow: which step a task is about, that step's output
as the reviewer's form starts from, and the steps after it run again from a corrected output.

A task names the step that was unsure or invalid (its detail reads ``step NAME: ...``); a
task that names none (the policy judged the workflow's output, an audit, a manual reopen) is
about the last step, whose output is the workflow's. A correction is checked against the
step's own contract; a correction of an earlier step hands the corrected output to the steps
after it, which run again (once each, model then fallbacks) and must answer within their
contracts: their answer is the record's output.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from keel._prediction import Prediction
from keel.contracts import Contract
from keel.errors import InvalidDecision
from keel.models import Model
from keel.stages.steps import named_step
from keel.workflow import PlannedStep, Workflow


def task_step(task: dict[str, Any], wf: Workflow | None) -> dict[str, Any] | None:
    """The step a task of a multi-step workflow is about, with that step's latest answer and
    the JSON schema of its output contract (None: a one-step workflow, or none loaded)."""
    if wf is None or not wf.planned_steps:
        return None
    planned = wf.planned_steps
    names = [p.name for p in planned]
    name = named_step(task.get("detail"))
    index = names.index(name) if name in names else len(planned) - 1
    step = planned[index]
    answer = next((a for a in reversed(task.get("answers") or [])
                   if a["step"] == step.name or a["step"].startswith(step.name + "/")), None)
    return {"name": step.name, "index": index, "of": len(planned),
            "last": index == len(planned) - 1,
            "output": answer["output"] if answer else None,
            "confidence": answer["confidence"] if answer else None,
            "model_version": answer["model_version"] if answer else None,
            "schema": step.contract.model.model_json_schema()}


def step_contract(wf: Workflow, name: str) -> Contract:
    return next(p.contract for p in wf.planned_steps if p.name == name)


def run_following(wf: Workflow, index: int, value: BaseModel,
                  key: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Run the steps after step ``index`` from its (corrected) output ``value``: the record's
    output, and what each step answered (step, model version, confidence). Raises
    :class:`InvalidDecision` when a step gives no answer within its contract."""
    ran: list[dict[str, Any]] = []
    for step in wf.planned_steps[index + 1:]:
        value, entry = _answer(step, value, key)  # a step takes the output before it
        ran.append(entry)
    return wf.output_contract.as_json(value), ran


def _answer(step: PlannedStep, given: BaseModel, key: str) -> tuple[BaseModel, dict[str, Any]]:
    tried: list[str] = []
    for model in (step.model, *step.fallbacks):
        outcome = _call(model, given)
        if not isinstance(outcome, Prediction):
            tried.append(f"{model.name}: {outcome}")
            continue
        value, problems = step.contract.validate(outcome.output, key=key)
        if value is None:
            tried.append(f"{model.name}: " + "; ".join(str(p) for p in problems))
            continue
        return value, {"step": step.name, "model_version": model.version,
                       "confidence": outcome.confidence}
    raise InvalidDecision(
        f"with this correction, step {step.name} gives no answer within its contract "
        f"({' | '.join(tried)}); correct the output differently, or reject the task",
        problems=[{"field": "*", "rule": f"step {step.name}", "message": t} for t in tried])


def _call(model: Model, given: BaseModel) -> Any:
    try:
        outs: Sequence[Any] = (asyncio.run(model.apredict([given])) if model.is_async
                               else model.predict([given]))
    except Exception as exc:  # a model that raises is an answer the reviewer must read
        return f"{type(exc).__name__}: {exc}"
    return outs[0] if outs else "no answer"


__all__ = ["run_following", "step_contract", "task_step"]
