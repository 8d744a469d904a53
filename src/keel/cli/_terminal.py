"""The interactive terminal reviewer: one task at a time, single keys to decide."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import typer
from rich.panel import Panel
from rich.table import Table

from keel.cli._common import console, fmt_time
from keel.errors import InvalidDecision, LeaseConflict, UserError

if TYPE_CHECKING:
    from keel.review import ReviewQueue

KEYS = "[bold]a[/] accept  [bold]c[/] correct  [bold]r[/] reject  [bold]s[/] skip  [bold]q[/] quit"


def _value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def render_task(task: dict[str, Any]) -> None:
    """What a reviewer needs to see: input, model output, confidence, and why it is here."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in (task["input"] or {}).items():
        grid.add_row(f"input.{name}", _value(value))
    out = task["model_output"]
    if out is None:
        grid.add_row("model output", "[red](none: the model gave no answer)[/]")
    else:
        for name, value in (out.items() if isinstance(out, dict) else [("", out)]):
            grid.add_row(f"model.{name}", f"[cyan]{_value(value)}[/]")
    conf = task["confidence"]
    grid.add_row("confidence", "-" if conf is None else f"{conf:.3f}")
    grid.add_row("why here", task["why"])
    step = task.get("step")
    if step:
        grid.add_row("step", f"{step['name']} ({step['index'] + 1} of {step['of']}): the output "
                     "above is this step's; a correction is its output contract")
    now = task.get("policy_in_force") or {}
    if now.get("version") and f"policy {now['version']})" not in task["why"]:
        thr = f" (threshold {now['threshold']:.3f})" if now.get("threshold") is not None else ""
        grid.add_row("policy in force", f"[yellow]{now['version']}{thr}[/]: routed under an "
                     "earlier policy")
    if task.get("parent"):
        first = task["parent"]
        said = _value(first["output"]) if first["output"] is not None else first["note"]
        grid.add_row("first review", f"{first['decision']} by {first['decided_by']}: {said}")
    grid.add_row("model version", task["model_version"] or "-")
    due = fmt_time(task["due_at"]) + (" [red](overdue)[/]" if task.get("overdue") else "")
    grid.add_row("priority / due", f"{task['priority']} / {due} (queue {task['queue']})")
    title = f"{task['workflow']} · record {task['key']} · {task['reason']}"
    console.print(Panel(grid, title=title, subtitle=f"task {task['id']}", expand=False))


class TerminalReviewer:
    """Claims the next task, shows it, and reads one key: a, c, r, s or q."""

    def __init__(self, queue: ReviewQueue, reviewer: str, *, workflow: str | None = None,
                 reason: str | None = None, lease_s: float = 600.0) -> None:
        self.q = queue
        self.reviewer = reviewer
        self.workflow = workflow
        self.reason = reason
        self.lease_s = lease_s
        self.skipped: list[str] = []
        self.decided = 0

    def run(self) -> None:
        if not sys.stdin.isatty():
            raise UserError("keel review reads one key at a time from a terminal, and this "
                            "input is not one; from a script, decide each task with "
                            "`keel review decide TASK_ID --accept` (`keel review list` shows them)")
        console.print(f"reviewing as [bold]{self.reviewer}[/]; keys: {KEYS}")
        try:
            while (task := self._next()) is not None:
                if not self._review(task):
                    self.q.release(task["id"], self.reviewer)
                    break
        except (KeyboardInterrupt, EOFError, typer.Abort):
            console.print("\nstopped")
        console.print(f"decided {self.decided}, skipped {len(self.skipped)}; "
                      + ("the queue is empty" if not self._left() else "tasks remain open"))

    def _next(self) -> dict[str, Any] | None:
        return self.q.claim(None, self.reviewer, self.lease_s, skip=self.skipped,
                            workflow=self.workflow, reason=self.reason)

    def _left(self) -> bool:
        return bool(self.q.list(limit=1, workflow=self.workflow, reason=self.reason))

    def _review(self, task: dict[str, Any]) -> bool:
        """Handle one task; False when the reviewer quits."""
        render_task(task)
        while True:
            console.print(f"{KEYS} > ", end="")
            key = typer.getchar().lower()
            console.print(key)
            if key == "q":
                return False
            if key == "s":
                self.q.release(task["id"], self.reviewer)
                self.skipped.append(task["id"])
                return True
            if key and key in "acr":
                if self._decide(task, key):
                    return True
            else:
                console.print(f"[yellow]unknown key {key!r}[/]")

    def _decide(self, task: dict[str, Any], key: str) -> bool:
        try:
            if key == "a":
                done = self.q.decide(task["id"], self.reviewer, "accept")
            elif key == "c":
                done = self.q.decide(task["id"], self.reviewer, "correct", self._ask_output(task))
            else:
                reason = typer.prompt("reason for rejecting", default="", show_default=False)
                done = self.q.decide(task["id"], self.reviewer, "reject", reason=reason)
        except (InvalidDecision, LeaseConflict) as exc:
            console.print(f"[red]{exc.message}[/]")
            return isinstance(exc, LeaseConflict)  # someone else has it: move on
        self.decided += 1
        extra = (f"; a second reviewer must confirm (task {done['second_review_id']})"
                 if done.get("second_review_id") else "")
        console.print(f"[green]{done['decision']}ed[/] {done['key']}{extra}")
        return True

    def _ask_output(self, task: dict[str, Any]) -> Any:
        """The corrected output: a JSON object, as `keel review decide --correct` takes, or
        one field at a time (Enter keeps the model's value)."""
        base = task["model_output"] if isinstance(task["model_output"], dict) else {}
        fields = list(base) or self._fields(task)
        console.print("corrected output: a JSON object, or field by field (Enter keeps the "
                      "model's value)")
        if not fields:
            return _parse(typer.prompt("output (JSON object)"))
        out: dict[str, Any] = {}
        for n, name in enumerate(fields):
            current = base.get(name)
            text = typer.prompt(f"{name}", default=_value(current) if current is not None else None)
            if n == 0 and text.lstrip().startswith("{"):
                whole = _parse(text)
                if isinstance(whole, dict):
                    return whole
            out[name] = _parse_field(text, current)
        return out

    def _fields(self, task: dict[str, Any]) -> list[str]:
        contract = self.q.contract(task["workflow"])
        return list(contract.fields) if contract else []


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _parse_field(text: str, current: Any) -> Any:
    """A typed value stays typed (numbers, lists); a string field takes the text as it is."""
    if isinstance(current, str) or current is None:
        return text
    return _parse(text)
