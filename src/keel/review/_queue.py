"""The review queue: claim with a lease, decide, escalate, second review.

A decision is a typed outcome relative to the model's output: ``accept`` (the model was
right), ``correct`` (here is the right output, checked against the output contract) or
``reject`` (no output is right; say why). Each final decision updates the record, appends a
``reviewed`` event to its audit chain and becomes a labelled example.
"""

from __future__ import annotations

import builtins
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from pydantic import BaseModel

from keel import _json
from keel._record import new_id
from keel.contracts import Contract, DecidedValues
from keel.errors import InvalidDecision, LeaseConflict, NotFoundError
from keel.redact import for_spec, mask_left
from keel.review._steps import run_following, step_contract, task_step
from keel.stages.route import audit_draw
from keel.store import Store
from keel.store import reviews as sql
from keel.store.queries import watch_decided
from keel.workflow import Policy, Workflow, load_workflow

log = logging.getLogger("keel.review")

DECISIONS = ("accept", "correct", "reject")
#: Reasons whose final decision makes the record ``reviewed`` (audits keep ``accepted``).
_NO_MODEL_ANSWER = ("output_invalid", "model_failed")
EscalationHook = Callable[[dict[str, Any]], None]


def _policy_from_spec(spec: dict[str, Any] | None) -> Policy:
    data = dict((spec or {}).get("policy") or {})
    known = {k: v for k, v in data.items() if k in Policy.__dataclass_fields__}
    try:
        return Policy(**known)
    except (TypeError, ValueError):
        return Policy()


class ReviewQueue:
    """Python API over the review tasks in a store (the CLI and the web app use this).

    ``workflow`` (optional) supplies the output contract that corrections are checked
    against and the policy (SLAs, second review); without it keel loads the workflow file
    recorded in the store when it can, else it checks only that a correction is an object.
    ``clock`` returns the time in epoch seconds (tests move it instead of sleeping).
    ``on_escalate`` is called with each task escalated for being overdue (wire alerts here).
    """

    def __init__(self, store: Store, workflow: Workflow | None = None, *,
                 clock: Callable[[], float] = time.time,
                 on_escalate: EscalationHook | Sequence[EscalationHook] = (),
                 auto_escalate: bool = True) -> None:
        self.store = store
        self.workflow = workflow
        self.clock = clock
        self.hooks = [on_escalate] if callable(on_escalate) else list(on_escalate)
        self.auto_escalate = auto_escalate
        self._workflows: dict[str, Workflow | None] = {}
        self._specs: dict[str, dict[str, Any] | None] = {}
        self._decided: dict[str, builtins.list[DecidedValues]] = {}

    # -- reading ------------------------------------------------------------------------------
    def list(self, status: str | None = "open", reason: str | None = None, limit: int = 100,
             workflow: str | None = None, queue: str | None = None,
             raw: bool = False) -> list[dict[str, Any]]:
        """Tasks, highest priority first, then earliest due. Overdue tasks are escalated first.
        Personal data is masked unless ``raw`` (admins)."""
        if self.auto_escalate and status in (None, "open"):
            self.escalate_overdue()
        name = workflow or (self.workflow.name if self.workflow else None)
        rows = sql.list_tasks(self.store, status=status, reason=reason, workflow=name,
                              limit=limit, queue=queue)
        now = self.clock()
        for row in rows:
            row["overdue"] = row["status"] == "open" and row["due_at"] < now
            row["leased"] = bool(row["claimed_by"] and (row["lease_until"] or 0) >= now)
        return rows if raw else [self._masked(r) for r in rows]

    def get(self, task_id: str, raw: bool = False) -> dict[str, Any]:
        """The task, the record's key and input, the model's output and confidence, and why.
        Personal data (the workflow's sensitive fields; e-mail addresses, phone, card and IBAN
        numbers anywhere, the key included) is masked unless ``raw`` (admins)."""
        task = self._get(task_id)
        return task if raw else self._masked(task)

    def _masked(self, task: dict[str, Any]) -> dict[str, Any]:
        red = for_spec(self._spec(task["workflow"]))
        return red.value(task, red.known_values(task.get("input")))  # type: ignore[no-any-return]

    def _get(self, task_id: str) -> dict[str, Any]:
        task = sql.task_context(self.store, task_id)
        if task is None:
            raise NotFoundError(f"no review task {task_id!r}; `keel review list` shows open tasks")
        task["why"] = _why(task)
        task["step"] = task_step(task, self._workflow(task["workflow"]))
        task.pop("answers", None)
        if task["step"] is not None:  # what the reviewer decides on: the step's answer
            task["model_output"] = task["step"]["output"]
            task["confidence"] = task["step"]["confidence"]
            task["model_version"] = task["step"]["model_version"] or task["model_version"]
        task["overdue"] = task["status"] == "open" and task["due_at"] < self.clock()
        task["policy_in_force"] = _policy_now(self.store, task["workflow"])
        return task

    # -- leases -------------------------------------------------------------------------------
    def claim(self, task_id: str | None, reviewer: str, lease_s: float = 300.0, *,
              skip: Sequence[str] = (), workflow: str | None = None,
              reason: str | None = None) -> dict[str, Any] | None:
        """Lease a task to ``reviewer`` (``None``: the next task in queue order, or None).

        Raises :class:`LeaseConflict` when someone else holds a live lease on ``task_id``.
        """
        _need_reviewer(reviewer)
        if lease_s <= 0:
            raise InvalidDecision("lease_s must be positive")
        if task_id is not None:
            return self._claim_one(task_id, reviewer, lease_s)
        if self.auto_escalate:
            self.escalate_overdue()
        name = workflow or (self.workflow.name if self.workflow else None)
        for _round in range(5):  # others may win a race for a candidate; try the next one
            ids = sql.claim_candidates(self.store, reviewer, self.clock(), workflow=name,
                                       reason=reason, skip=skip)
            if not ids:
                return None
            for tid in ids:
                if sql.claim(self.store, tid, reviewer, lease_s, self.clock()):
                    return self.get(tid)
        return None

    def _claim_one(self, task_id: str, reviewer: str, lease_s: float) -> dict[str, Any]:
        task = self._get(task_id)
        self._check_open(task, reviewer)
        if not sql.claim(self.store, task_id, reviewer, lease_s, self.clock()):
            self._check_open(self._get(task_id), reviewer)
            raise LeaseConflict(f"task {task_id} could not be claimed; try again")
        return self.get(task_id)

    def release(self, task_id: str, reviewer: str) -> None:
        """Give a claimed task back to the queue (a no-op if ``reviewer`` does not hold it);
        an unknown task is a NotFoundError."""
        self._get(task_id)
        sql.release(self.store, task_id, reviewer)

    def _check_open(self, task: dict[str, Any], reviewer: str) -> None:
        if task["status"] != "open":
            by = f" by {task['decided_by']}" if task.get("decided_by") else ""
            raise InvalidDecision(f"task {task['id']} is already {task['status']}{by}")
        holder, until = task.get("claimed_by"), task.get("lease_until") or 0.0
        if holder and holder != reviewer and until >= self.clock():
            raise LeaseConflict(
                f"task {task['id']} is claimed by {holder} for another "
                f"{until - self.clock():.0f} s; pick another task or wait for the lease to end")
        parent = task.get("parent")
        if parent and parent.get("decided_by") == reviewer:
            raise InvalidDecision(
                f"task {task['id']} is a second review of {reviewer}'s own decision; "
                "someone else must confirm it")

    # -- deciding -----------------------------------------------------------------------------
    def decide(self, task_id: str, reviewer: str, decision: str,
               output: dict[str, Any] | None = None, reason: str | None = None, *,
               step: str | None = None) -> dict[str, Any]:
        """Record a person's decision on a task; returns the decided task.

        On a multi-step workflow the decision is on the step the task names (``task["step"]``;
        ``step``, when given, must be that step): a correction is checked against that step's
        output contract, and a correction (or acceptance) of an earlier step runs the steps
        after it again from it, their answer being the record's output.

        Raises :class:`InvalidDecision` (unknown decision, a correction that breaks the output
        contract, a reject without a reason, a task already decided) or :class:`LeaseConflict`.
        """
        _need_reviewer(reviewer)
        if decision not in DECISIONS:
            raise InvalidDecision(
                f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
        task = self._get(task_id)
        self._check_open(task, reviewer)
        on = task["step"]
        if step is not None and (on is None or step != on["name"]):
            raise InvalidDecision(
                f"task {task_id} is about {'step ' + repr(on['name']) if on else 'the output'}, "
                f"not step {step!r}; reload the task")
        contract = self.contract(task["workflow"])
        if on is not None and not on["last"]:
            write = self._plan_step(task, reviewer, decision, output, reason)
            final = write.output
        else:
            final = self._final_output(task, decision, output, reason, contract)
            write = self._plan(task, reviewer, decision, final, reason, contract)
        if not sql.commit_decision(self.store, write):
            self._check_open(self._get(task_id), reviewer)
            raise LeaseConflict(f"task {task_id} changed while deciding; reload it")
        task.update(status="decided", decided_by=reviewer, decided_at=write.now,
                    decision=decision, output=final, note=reason, claimed_by=reviewer,
                    lease_until=None, overdue=False)
        if write.record_update:
            task["disposition"] = write.record_update.get("disposition", task["disposition"])
            task["decision_output"] = final
        task["second_review_id"] = write.second_review["id"] if write.second_review else None
        return self._masked(task)

    def _final_output(self, task: dict[str, Any], decision: str, output: dict[str, Any] | None,
                      reason: str | None, contract: Contract | None) -> dict[str, Any] | None:
        if decision == "reject":
            if not (reason or "").strip():
                raise InvalidDecision("a reject needs a reason a person can read later")
            return None
        if decision == "accept":
            model_out = task["model_output"]
            if task["reason"] in _NO_MODEL_ANSWER or model_out is None:
                raise InvalidDecision(
                    f"task {task['id']} has no valid model output to accept "
                    f"({task['reason']}); correct it with the right output or reject it")
            checked = _checked(model_out, contract, "the model's output", task["key"])
            if (output is not None
                    and _checked(output, contract, "the output", task["key"]) != checked):
                raise InvalidDecision("accept takes the model's output as it is; use correct "
                                      "to give a different output")
            return checked
        if output is None:
            raise InvalidDecision("a correction needs the corrected output")
        return _checked(output, contract, "the corrected output", task["key"])

    def _plan_step(self, task: dict[str, Any], reviewer: str, decision: str,
                   output: dict[str, Any] | None, reason: str | None) -> sql.DecisionWrite:
        """A decision on an earlier step: that step's output (as corrected, or as the model
        gave it) goes through the steps after it; a reject ends the record as usual."""
        wf, on = self._workflow(task["workflow"]), task["step"]
        assert wf is not None and on is not None
        contract = step_contract(wf, on["name"])
        given = on["output"] if decision == "accept" else output
        if decision == "accept" and given is None:
            raise InvalidDecision(f"step {on['name']} gave no output to accept; correct it with "
                                  "the right output or reject the task")
        if decision == "correct" and given is None:
            raise InvalidDecision("a correction needs the corrected output")
        final: dict[str, Any] | None = None
        step_out: dict[str, Any] | None = None
        ran: builtins.list[dict[str, Any]] = []
        if decision != "reject":
            value = _parsed(given, contract, f"the corrected output of step {on['name']}")
            step_out = contract.as_json(value)
            final, ran = run_following(wf, on["index"], value, task["key"])
        elif not (reason or "").strip():
            raise InvalidDecision("a reject needs a reason a person can read later")
        model_out = _normal(on["output"], contract)
        model_correct = step_out is not None and step_out == model_out
        event: dict[str, Any] = {
            "task_id": task["id"], "reason": task["reason"], "decision": decision,
            "step": on["name"], "step_output": step_out, "output": final, "ran_again": ran,
            "note": reason, "model_correct": model_correct,
            "previous_disposition": task["disposition"],
            "previous_output": task["decision_output"],
            "override": task["disposition"] in ("accepted", "fallback", "reviewed")}
        return sql.DecisionWrite(
            task=task, reviewer=reviewer, decision=decision, output=final, note=reason,
            now=self.clock(), event=event, label=None,  # a label is for the workflow's model
            record_update=_record_update(task["reason"], task, reviewer, decision, final,
                                         reason, model_correct, self.clock()))

    def _plan(self, task: dict[str, Any], reviewer: str, decision: str,
              final: dict[str, Any] | None, reason: str | None,
              contract: Contract | None) -> sql.DecisionWrite:
        now = self.clock()
        policy = self._policy(task["workflow"])
        model_out = _normal(task["model_output"], contract, task["key"])
        model_correct = final is not None and model_out is not None and final == model_out
        root = task["parent"]["reason"] if task["parent"] else task["reason"]
        event: dict[str, Any] = {
            "task_id": task["id"], "reason": task["reason"], "decision": decision,
            "output": final, "note": reason, "model_correct": model_correct,
            "previous_disposition": task["disposition"], "previous_output": task["decision_output"],
        }
        if task["step"] is not None:
            event["step"] = task["step"]["name"]
        write = sql.DecisionWrite(task=task, reviewer=reviewer, decision=decision, output=final,
                                  note=reason, now=now, record_update=None, event=event, label=None)
        conf = task["confidence"]
        high = policy.second_review_above
        if (high is not None and not model_correct and conf is not None and conf >= high
                and task["reason"] != "second_review"):
            write.second_review = self._second_task(task, policy, now)
            event["second_review"] = write.second_review["id"]
            return write
        event["override"] = task["disposition"] in ("accepted", "fallback", "reviewed") and (
            not model_correct or task["disposition"] == "reviewed")
        write.record_update = _record_update(root, task, reviewer, decision, final, reason,
                                             model_correct, now)
        write.label = self._label(task, root, reviewer, decision, final, reason, model_correct,
                                  policy, now)
        return write

    def _second_task(self, task: dict[str, Any], policy: Policy, now: float) -> dict[str, Any]:
        return {
            "id": new_id(), "record_id": task["record_id"], "workflow": task["workflow"],
            "reason": "second_review", "priority": policy.review_priority.get("second_review", 70),
            "detail": f"a reviewer disagreed with a {task['confidence']:.3f}-confidence model "
                      f"output (second review above {policy.second_review_above})",
            "status": "open", "queue": task["queue"], "created_at": now,
            "due_at": now + policy.review_sla_s.get("second_review", 86400.0),
            "parent_id": task["id"],
        }

    def _label(self, task: dict[str, Any], root: str, reviewer: str, decision: str,
               final: dict[str, Any] | None, reason: str | None, model_correct: bool,
               policy: Policy, now: float) -> dict[str, Any]:
        note = reason
        if task["parent"]:
            first = task["parent"]
            note = (f"second review; first {first['decision']} by {first['decided_by']}"
                    + (f": {reason}" if reason else ""))
        sampled = (root in ("low_confidence", "audit_sample") and task["confidence"] is not None
                   and audit_draw(task["key"]) < policy.audit_rate)
        return {
            "workflow": task["workflow"], "record_id": task["record_id"], "task_id": task["id"],
            "key": task["key"], "input": _json.dumps(task["input"]),
            "model_output": (_json.dumps(task["model_output"])
                             if task["model_output"] is not None else None),
            "label": _json.dumps(final) if final is not None else None, "decision": decision,
            "model_correct": model_correct, "confidence": task["confidence"],
            "model_version": task["model_version"], "policy_version": task["policy_version"],
            "reason": root, "sampled": sampled, "reviewer": reviewer, "decided_at": now,
            "note": note,
        }

    # -- reopening a decided record -------------------------------------------------------------
    def reopen(self, workflow: str, key: str, requested_by: str,
               note: str | None = None) -> dict[str, Any]:
        """Open a review task on a record already decided (to override an automatic decision)."""
        _need_reviewer(requested_by)
        rec = sql.find_record(self.store, workflow, key)
        if rec is None:
            raise NotFoundError(f"no record {key!r} in workflow {workflow!r}")
        if rec["open_task"]:
            raise InvalidDecision(
                f"record {key!r} already has an open review task {rec['open_task']}")
        if rec["disposition"] not in ("accepted", "fallback", "reviewed"):
            raise InvalidDecision(f"record {key!r} is {rec['disposition']}; only decided records "
                                  "(accepted, fallback, reviewed) can be reopened")
        policy, now = self._policy(workflow), self.clock()
        row = {"id": new_id(), "record_id": rec["id"], "workflow": workflow, "reason": "manual",
               "detail": note or f"reopened by {requested_by}", "status": "open",
               "priority": policy.review_priority.get("manual", 70), "queue": "default",
               "created_at": now, "due_at": now + policy.review_sla_s.get("manual", 86400.0)}
        sql.open_task(self.store, row, {"task_id": row["id"], "note": note,
                                        "disposition": rec["disposition"]}, requested_by)
        return self.get(row["id"])

    # -- escalation ---------------------------------------------------------------------------
    def escalate_overdue(self) -> builtins.list[dict[str, Any]]:
        """Move overdue open tasks to their workflow's escalation queue (once each).

        The target is ``Owners.escalation`` (else the queue ``escalation``); each escalation
        is an ``escalated`` event on the record's chain, and every ``on_escalate`` hook is
        called with the task.
        """
        now = self.clock()
        name = self.workflow.name if self.workflow else None
        done = []
        for task in sql.overdue(self.store, now, name):
            owner = ((self._spec(task["workflow"]) or {}).get("owners") or {}).get("escalation")
            target = owner or "escalation"
            priority = min(100, int(task["priority"]) + 30)
            detail = {"task_id": task["id"], "reason": task["reason"], "due_at": task["due_at"],
                      "overdue_s": round(now - task["due_at"], 3), "queue": target,
                      "from_queue": task["queue"], "priority": priority}
            if sql.escalate(self.store, task, target, priority, now, detail):
                task.update(queue=target, priority=priority, escalated_at=now, escalated_to=target)
                done.append(task)
                self._notify(task)
        return done

    def _notify(self, task: dict[str, Any]) -> None:
        for hook in self.hooks:
            try:
                hook(task)
            except Exception:  # an alert channel being down must not stop the queue
                log.exception("escalation hook %r failed for task %s", hook, task["id"])

    # -- the workflow behind a task -------------------------------------------------------------
    def _spec(self, workflow: str) -> dict[str, Any] | None:
        if workflow not in self._specs:
            self._specs[workflow] = sql.workflow_spec(self.store, workflow)
        return self._specs[workflow]

    def _workflow(self, name: str) -> Workflow | None:
        if self.workflow is not None and self.workflow.name == name:
            return self.workflow
        if name not in self._workflows:
            path = (self._spec(name) or {}).get("source_path")
            found = None
            if path:
                try:
                    found = load_workflow(path)
                except Exception:  # moved or broken file: fall back to the stored spec
                    log.warning("cannot load workflow %s from %s", name, path, exc_info=True)
            self._workflows[name] = found if found is not None and found.name == name else None
        return self._workflows[name]

    def contract(self, workflow: str) -> Contract | None:
        """The output contract corrections for ``workflow`` are checked against (if known);
        its :func:`keel.unique` checks know every output decided in the store until now."""
        wf = self._workflow(workflow)
        if wf is None:
            return None
        if workflow not in self._decided:
            self._decided[workflow] = watch_decided(wf.unique_checks, self.store, workflow)
        else:
            for book in self._decided[workflow]:
                book.refresh()
        return wf.output_contract

    def _policy(self, workflow: str) -> Policy:
        wf = self._workflow(workflow)
        return wf.policy if wf else _policy_from_spec(self._spec(workflow))


def _need_reviewer(reviewer: str) -> None:
    if not isinstance(reviewer, str) or not reviewer.strip():
        raise InvalidDecision("say who is reviewing (a reviewer name)")


def _normal(output: Any, contract: Contract | None, key: str | None = None) -> dict[str, Any] | None:
    """An output as the contract would store it, or as given when it does not validate."""
    if output is None:
        return None
    if contract is not None:
        value, problems = contract.validate(output, key=key)
        if value is not None and not problems:
            return value.model_dump(mode="json")
    return output if isinstance(output, dict) else None


def _checked(output: Any, contract: Contract | None, what: str, key: str) -> dict[str, Any]:
    if contract is None:
        if not isinstance(output, dict):
            raise InvalidDecision(f"{what} must be a JSON object, got {type(output).__name__}")
        return output
    return _parsed(output, contract, what, key).model_dump(mode="json")


def _parsed(output: Any, contract: Contract, what: str, key: str | None = None) -> BaseModel:
    """``output`` checked against ``contract`` (its fields, types and checks; no field it does
    not declare, unless its model allows extra): a violation names each field and rule."""
    if not isinstance(output, dict):
        raise InvalidDecision(f"{what} must be a JSON object, got {type(output).__name__}")
    token = mask_left(output)
    if token is not None:  # the reviewer's page shows personal data masked
        raise InvalidDecision(
            f"{what} still holds {token}, a value masked on the reviewer's page; type the "
            "real value (the document or the input shows it)")
    model = contract.model
    unknown = sorted(set(output) - set(model.model_fields))
    if unknown and model.model_config.get("extra") != "allow":
        raise InvalidDecision(
            f"{what} breaks the output contract: it has fields {unknown} that "
            f"{model.__name__} does not; its fields are {sorted(model.model_fields)}",
            problems=[{"field": f, "rule": "extra_forbidden",
                       "message": f"{model.__name__} has no field {f!r}"} for f in unknown])
    value, problems = contract.validate(output, key=key)
    if value is None:
        listed = "; ".join(str(p) for p in problems)
        raise InvalidDecision(f"{what} breaks the output contract: {listed}",
                              problems=[p.as_dict() for p in problems])
    return value


def _record_update(root: str, task: dict[str, Any], reviewer: str, decision: str,
                   final: dict[str, Any] | None, reason: str | None, model_correct: bool,
                   now: float) -> dict[str, Any] | None:
    why = f"{decision} by {reviewer}" + (f": {reason}" if reason else "")
    if root == "audit_sample":
        if model_correct:
            return None  # the audit confirmed the automatic decision; it stands as it was
        return {"output": _json.dumps(final) if final is not None else None,
                "decided_by": reviewer, "reason": f"audit override: {why}", "decided_at": now}
    return {"disposition": "reviewed", "output": _json.dumps(final) if final is not None else None,
            "decided_by": reviewer, "reason": f"review: {why}", "decided_at": now}


def _policy_now(store: Store, workflow: str) -> dict[str, Any]:
    """The routing policy in force now (the task may have been routed under an earlier one)."""
    active = sql.active_routing_policy(store, workflow)
    if active is None:
        return {"version": "declared", "threshold": None}
    return {"version": active["version"], "threshold": active["params"].get("threshold")}


def _why(task: dict[str, Any]) -> str:
    reason, detail = task["reason"], task.get("detail") or ""
    text = {
        "low_confidence": "the model was not confident enough to decide alone",
        "output_invalid": "the model's output broke the output contract",
        "out_of_distribution": "the input looks unlike the traffic the model knows",
        "model_failed": "the model (and any fallback) gave no answer",
        "audit_sample": "a random audit of an automatic decision",
        "second_review": "a reviewer disagreed with a confident model; confirm or overrule",
        "manual": "a person asked to review this decision again",
        "guarantee_void": "the audits contradict the calibrated guarantee; people decide "
                          "until `keel calibrate` stores one that holds",
    }.get(reason, reason)
    return f"{text} ({detail})" if detail else text
