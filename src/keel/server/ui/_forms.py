"""Turning an output contract's JSON schema into a correction form, and events into a story."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FormField:
    """One input of the correction form."""

    name: str
    label: str
    kind: str  # text | number | integer | decimal | boolean | select | json
    required: bool
    options: list[str] = field(default_factory=list)
    description: str = ""


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """(the property's effective schema, whether null is allowed)."""
    nullable = False
    if "$ref" in prop:
        prop = defs.get(prop["$ref"].rsplit("/", 1)[-1], {})
    if "anyOf" in prop:
        options = [p for p in prop["anyOf"] if p.get("type") != "null"]
        nullable = len(options) < len(prop["anyOf"])
        rest = {k: v for k, v in prop.items() if k != "anyOf"}
        if len(options) == 1:
            inner, _ = _resolve(options[0], defs)
            return {**inner, **rest}, nullable
        if sorted(str(o.get("type")) for o in options) == ["number", "string"]:
            return {**rest, "type": "decimal"}, nullable  # pydantic's Decimal: sent as typed
        return {"type": "json"}, nullable
    return prop, nullable


def form_fields(schema: dict[str, Any]) -> list[FormField]:
    defs = schema.get("$defs", {})
    required = set(schema.get("required", []))
    out = []
    for name, raw in schema.get("properties", {}).items():
        prop, nullable = _resolve(raw, defs)
        kind = {"string": "text", "number": "number", "integer": "integer",
                "boolean": "boolean", "decimal": "decimal"}.get(str(prop.get("type")), "json")
        options: list[str] = []
        if "enum" in prop:
            kind, options = "select", [str(v) for v in prop["enum"]]
        elif "const" in prop:
            kind, options = "select", [str(prop["const"])]
        out.append(FormField(name, str(prop.get("title") or name.replace("_", " ").capitalize()),
                             kind, name in required and not nullable, options,
                             str(prop.get("description", ""))))
    return out


REASONS = {
    "low_confidence": "The model was not sure enough to decide on its own.",
    "output_invalid": "The model's answer broke the output rules, so it was not used.",
    "out_of_distribution": "This message looks unlike what the model was trained on.",
    "model_failed": "The model could not answer (errors or timeouts).",
    "audit_sample": "A random check of a decision the model made on its own, to keep "
                    "measuring its real accuracy.",
    "second_review": "Another reviewer disagreed with a confident model; a second opinion "
                     "is needed.",
    "manual": "Someone asked for a person to look at this record.",
    "guarantee_void": "Audits showed the model is less accurate than its guarantee, so "
                      "people decide every record until it is calibrated again.",
}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def _pct(x: Any) -> str:
    return f"{float(x):.0%}" if isinstance(x, (int, float)) else "-"


def _sentence(ev: dict[str, Any]) -> str:
    d = ev.get("detail") or {}
    kind = ev["kind"]
    model = ev.get("model_version") or "the model"
    texts: dict[str, str] = {
        "received": f"Received from {d.get('source', 'a source')}.",
        "resumed": "Picked up again after an interrupted run.",
        "validated": "Checked against the input rules: valid.",
        "quarantined": "Held back: the input broke the rules ("
                       + "; ".join(f"{v.get('field')}: {v.get('message')}"
                                   for v in d.get("violations", [])) + ").",
        "screened": f"Flagged while screening: {d.get('flags')}.",
        "predicted": f"{model} answered with {_pct(d.get('confidence'))} confidence"
                     + (f" in {ev['latency_ms']:.1f} ms" if ev.get("latency_ms") else "") + ".",
        "attempt_failed": f"{model} failed (attempt {d.get('attempt')}): {d.get('error')}.",
        "fallback_used": f"The fallback {model} was used because {d.get('cause')}.",
        "checkpoint_used": "Reused the answer saved before an interruption.",
        "output_invalid": "The model's answer broke the output rules and was not used.",
        "failed": f"Failed after {d.get('attempts')} attempts: {d.get('error')}.",
        "duplicate_seen": f"The same key arrived again ({d.get('at')}); not decided twice.",
        "replayed": f"Sent through again after a fix (it had ended {d.get('was')}).",
    }
    if kind == "routed":
        disp = d.get("disposition")
        verdict = {"accepted": "Accepted automatically",
                   "fallback": "Decided by the fallback rules",
                   "in_review": "Sent to a person"}.get(str(disp), f"Routed: {disp}")
        extra = " It was also picked for a random audit." if d.get("audit_sample") else ""
        return f"{verdict}: {d.get('why', '')}.{extra}"
    if kind == "reviewed":
        return _reviewed(ev, d)
    if kind == "review_requested":
        return f"{ev.get('actor') or 'Someone'} asked for a person to look again" + (
            f": {d.get('note') or d.get('reason')}." if d.get("note") or d.get("reason") else ".")
    if kind == "escalated":
        return f"Overdue, so it was escalated to {d.get('queue', 'the escalation queue')}."
    if kind in texts:
        return texts[kind]
    actor = f" by {ev['actor']}" if ev.get("actor") else ""
    bits = ", ".join(f"{k}: {v}" for k, v in d.items() if v not in (None, "", [], {}))
    return f"{kind.replace('_', ' ').capitalize()}{actor}" + (f" ({bits})." if bits else ".")


def _fields(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _reviewed(ev: dict[str, Any], d: dict[str, Any]) -> str:
    who = ev.get("actor") or "a reviewer"
    decision = d.get("decision")
    if decision == "accept":
        text = f"{who} checked the answer and accepted it"
    elif decision == "correct" and d.get("ran_again"):
        names = ", ".join(str(r.get("step")) for r in d["ran_again"])
        text = (f"{who} corrected step {d.get('step')}'s answer; {names} ran again from it "
                f"and gave {_fields(d.get('output'))}")
    elif decision == "correct":
        text = f"{who} corrected the answer to {_fields(d.get('output'))}"
        if d.get("previous_output"):
            text += f" (the model had said {_fields(d['previous_output'])})"
    elif decision == "reject":
        text = f"{who} rejected it"
    else:
        text = f"{who} reviewed it ({decision})"
    note = d.get("note")
    text += f": “{note}”." if note else "."
    if d.get("second_review"):
        text += " The model was confident, so a second reviewer must confirm."
    elif d.get("override"):
        text += " This overrode the earlier decision."
    return text


def story(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's events as sentences a support lead can read."""
    return [{"when": _when(ev["at"]), "kind": ev["kind"], "actor": ev.get("actor"),
             "text": _sentence(ev)} for ev in record["events"]]


def headline(record: dict[str, Any]) -> str:
    dec = record.get("decision") or {}
    disp = dec.get("disposition")
    if disp is None:
        return "Not decided yet."
    words = {
        "accepted": "Decided automatically by the model.",
        "reviewed": "Decided by a person.",
        "fallback": "Decided by the fallback rules because the model could not be used.",
        "quarantined": "Held back because the input broke the rules; nothing was decided.",
        "failed": "Could not be decided: the model failed and no fallback answered. "
                  "It can be replayed once the cause is fixed.",
        "in_review": "Waiting for a person to decide.",
    }
    return words.get(str(disp), str(disp))
