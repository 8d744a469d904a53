"""Alerts: rules over what the store records, evaluated on demand or on a schedule.

A rule watches one signal over a window (``error_rate`` over the last 15 minutes, say) and
fires only on a sustained breach: the window must hold at least ``min_count`` observations,
the breach must last ``for_s`` seconds across evaluations, and once firing the alert resolves
only when the value crosses back past ``clear`` (hysteresis), so a single slow call pages
nobody and a value hovering at the threshold does not flap. Only changes of state are sent
(firing, resolved): an alert that stays firing is not sent again. History lives in the
store's ``alerts`` table (``keel alerts list``).

Declare rules on the workflow (``keel.Workflow(..., alerts=[keel.AlertRule(...)])``); a
workflow that declares none gets :data:`DEFAULT_RULES`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from keel._log import log_event
from keel.store import Store
from keel.store import monitoring as mon
from keel.telemetry import drift_signal
from keel.workflow import DEFAULT_RULES, AlertRule, Workflow

log = logging.getLogger("keel.alerts")

_UNITS = {"p95_latency_ms": "ms", "review_backlog_age_s": "s", "daily_cost_usd": "USD",
          "queue_age_s": "s"}
_ONE_DAY = 86400.0


@dataclass
class Notification:
    """A change of state sent to the channels."""

    workflow: str
    rule: str
    state: str  # firing | resolved
    signal: str
    value: float | None
    threshold: float
    message: str
    at: float
    severity: str = "warning"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RuleStatus:
    """Where one rule stands after an evaluation."""

    workflow: str
    rule: str
    signal: str
    value: float | None
    count: int
    threshold: float
    clear: float
    state: str  # ok | insufficient_data | pending | firing | resolved
    since: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CheckResult:
    statuses: list[RuleStatus] = field(default_factory=list)
    notifications: list[Notification] = field(default_factory=list)

    @property
    def firing(self) -> list[RuleStatus]:
        return [s for s in self.statuses if s.state == "firing"]

    def as_dict(self) -> dict[str, Any]:
        return {"firing": len(self.firing), "statuses": [s.as_dict() for s in self.statuses],
                "notifications": [n.as_dict() for n in self.notifications]}


class Channel(Protocol):
    name: str

    def send(self, note: Notification) -> None: ...


class LogChannel:
    """Alerts as log events: firing at WARNING, resolved at INFO."""

    name = "log"

    def send(self, note: Notification) -> None:
        level = logging.WARNING if note.state == "firing" else logging.INFO
        log_event(log, level, f"alert {note.state}", workflow=note.workflow, rule=note.rule,
                  signal=note.signal, value=note.value, threshold=note.threshold,
                  message=note.message)


class WebhookChannel:
    """POSTs ``{"text": ...}`` (Slack-compatible; the ``keel`` key carries the details)."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def send(self, note: Notification) -> None:
        import httpx

        payload = {"text": note.message, "keel": note.as_dict()}
        with httpx.Client(timeout=self.timeout_s) as client:
            client.post(self.url, json=payload).raise_for_status()


def format_value(signal: str, value: float | None) -> str:
    if value is None:
        return "no data"
    unit = _UNITS.get(signal)
    if signal.endswith("_rate") or signal == "realized_accuracy":
        return f"{value:.1%}"
    return f"{value:,.2f} {unit}" if unit else f"{value:.3g}"


def _message(wf: str, rule: AlertRule, state: str, value: float | None, count: int) -> str:
    side = ">" if rule.above is not None else "<"
    window = f"over the last {rule.window_s / 60:g} min" if rule.window_s < _ONE_DAY * 2 \
        else f"over the last {rule.window_s / _ONE_DAY:g} days"
    if state == "firing":
        return (f"[keel] FIRING {wf}: {rule.rule_name} - {rule.signal} is "
                f"{format_value(rule.signal, value)} ({side} {format_value(rule.signal, rule.threshold)}) "
                f"{window}, {count} observations")
    return (f"[keel] RESOLVED {wf}: {rule.rule_name} - {rule.signal} back to "
            f"{format_value(rule.signal, value)} (clears at {format_value(rule.signal, rule.clear)})")


def _measure(store: Store, wf: str, rule: AlertRule, now: float) -> tuple[float | None, int]:
    if rule.signal == "drift_score":
        value = drift_signal(store, wf)
        return value, (0 if value is None else 1)
    return mon.signal(store, wf, rule.signal, now - rule.window_s, now)


class _Evaluator:
    """One pass over one workflow's rules: state changes, persisted, then sent."""

    def __init__(self, store: Store, channels: Sequence[Channel], now: float) -> None:
        self.store = store
        self.channels = list(channels)
        self.now = now
        self.result = CheckResult()

    def rule(self, wf: str, rule: AlertRule) -> None:
        value, count = _measure(self.store, wf, rule, self.now)
        enough = value is not None and count >= rule.min_count
        row = mon.open_alert(self.store, wf, rule.rule_name)
        status = RuleStatus(wf, rule.rule_name, rule.signal, value, count, rule.threshold,
                            float(rule.clear or 0.0), "ok" if enough else "insufficient_data")
        if row is not None and row["state"] == "firing":
            self._firing(wf, rule, row, value, count, enough, status)
        elif enough and value is not None and rule.breached(value):
            self._breach(wf, rule, row, value, count, status)
        elif row is not None:  # a pending breach that did not last
            mon.drop_alert(self.store, int(row["id"]))
        self.result.statuses.append(status)

    def _breach(self, wf: str, rule: AlertRule, row: dict[str, Any] | None, value: float,
                count: int, status: RuleStatus) -> None:
        since = float(row["detail"].get("breach_since", row["fired_at"])) if row else self.now
        detail = {"breach_since": since, "signal": rule.signal, "count": count,
                  "threshold": rule.threshold, "clear": rule.clear}
        if self.now - since < rule.for_s:
            status.state, status.since = "pending", since
            mon.save_alert(self.store, {"id": row["id"] if row else None, "workflow": wf,
                                        "rule": rule.rule_name, "state": "pending", "value": value,
                                        "detail": detail, "fired_at": since})
            return
        note = self._note(wf, rule, "firing", value, count)
        detail["message"] = note.message
        detail["undelivered"] = self._send(note)
        mon.save_alert(self.store, {"id": row["id"] if row else None, "workflow": wf,
                                    "rule": rule.rule_name, "state": "firing", "value": value,
                                    "detail": detail, "fired_at": self.now})
        status.state, status.since = "firing", self.now

    def _firing(self, wf: str, rule: AlertRule, row: dict[str, Any], value: float | None,
                count: int, enough: bool, status: RuleStatus) -> None:
        detail = dict(row["detail"])
        if enough and value is not None and rule.cleared(value):
            note = self._note(wf, rule, "resolved", value, count)
            detail["resolved_message"] = note.message
            detail["undelivered"] = self._send(note)
            mon.save_alert(self.store, {"id": row["id"], "state": "resolved", "value": value,
                                        "detail": detail, "resolved_at": self.now})
            status.state, status.since = "resolved", self.now
            return
        missed = [c for c in self.channels if c.name in (detail.get("undelivered") or [])]
        if missed:  # a channel was down when it fired: try it again, once per evaluation
            note = self._note(wf, rule, "firing", row["value"], count)
            detail["undelivered"] = self._send(note, missed)
        mon.save_alert(self.store, {"id": row["id"], "value": value if enough else row["value"],
                                    "detail": detail})
        status.state, status.since = "firing", float(row["fired_at"])

    def _note(self, wf: str, rule: AlertRule, state: str, value: float | None, count: int) -> Notification:
        return Notification(wf, rule.rule_name, state, rule.signal, value, rule.threshold,
                            _message(wf, rule, state, value, count), self.now, rule.severity)

    def _send(self, note: Notification, channels: Sequence[Channel] | None = None) -> list[str]:
        """Send to every channel; the names of those that failed (retried next evaluation)."""
        self.result.notifications.append(note)
        failed = []
        for channel in self.channels if channels is None else channels:
            try:
                channel.send(note)
            except Exception as exc:  # an alert channel being down must not stop the others
                failed.append(channel.name)
                log_event(log, logging.ERROR, "alert channel failed", channel=channel.name,
                          rule=note.rule, error=f"{type(exc).__name__}: {exc}")
        return failed


def rules_for(workflow: Workflow | None, spec: Mapping[str, Any] | None = None) -> list[AlertRule]:
    """A workflow's declared rules (from the object, or as saved in the store), else defaults."""
    declared: Any = None
    if workflow is not None:
        declared = workflow.alerts
    elif spec is not None and spec.get("alerts") is not None:
        declared = [AlertRule.from_dict(r) for r in spec["alerts"]]
    return list(DEFAULT_RULES if declared is None else declared)


def evaluate(store: Store, workflow: Workflow | str | None = None, *,
             rules: Iterable[AlertRule] | None = None, channels: Sequence[Channel] = (),
             now: float | None = None) -> CheckResult:
    """Evaluate alert rules once; send changes of state to ``channels``; return where each stands.

    ``workflow`` is a Workflow (its declared rules), a workflow name, or None for every
    workflow in the store (rules as each workflow declared them when it last ran).
    """
    ev = _Evaluator(store, channels, time.time() if now is None else now)
    specs = mon.workflow_specs(store)
    if isinstance(workflow, Workflow):
        targets: list[tuple[str, list[AlertRule]]] = [
            (workflow.name, list(rules) if rules is not None else rules_for(workflow))]
    else:
        names = [workflow] if workflow else sorted(specs)
        targets = [(n, list(rules) if rules is not None else rules_for(None, specs.get(n)))
                   for n in names]
    for name, wf_rules in targets:
        for rule in wf_rules:
            ev.rule(name, rule)
    return ev.result


def history(store: Store, workflow: str | None = None, *, state: str | None = None,
            limit: int = 100) -> list[dict[str, Any]]:
    """Alerts that fired (newest first), with when they resolved."""
    return mon.alert_history(store, workflow, limit=limit, state=state)


class AlertScheduler:
    """Evaluates alerts every ``interval_s`` in a daemon thread (``keel serve`` runs one)."""

    def __init__(self, store: Store, workflow: Workflow | str | None = None, *,
                 channels: Sequence[Channel] = (), interval_s: float = 60.0) -> None:
        self.store = store
        self.workflow = workflow
        self.channels = list(channels) or [LogChannel()]
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: CheckResult | None = None

    def start(self) -> AlertScheduler:
        self._thread = threading.Thread(target=self._loop, name="keel-alerts", daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.last = evaluate(self.store, self.workflow, channels=self.channels)
            except Exception as exc:  # the next tick tries again; serving goes on
                log_event(log, logging.ERROR, "alert evaluation failed",
                          error=f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
