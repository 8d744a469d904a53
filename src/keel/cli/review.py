"""keel review (interactive), keel review list / show / decide / escalate."""

from __future__ import annotations

import getpass
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

import keel
from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json
from keel.errors import InvalidDecision

if TYPE_CHECKING:
    from keel.review import ReviewQueue

review_app = typer.Typer(help="Review what the model could not decide alone.",
                         no_args_is_help=False)

WorkflowOption = Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")]
ReasonOption = Annotated[str | None, typer.Option(help="Only tasks with this reason.")]
RawOption = Annotated[bool, typer.Option(
    "--raw", help="Show personal data unmasked (admins only: the output is not redacted).")]
ReviewerOption = Annotated[
    str | None,
    typer.Option("--reviewer", envvar="KEEL_REVIEWER",
                 help="Who is deciding (default: $KEEL_REVIEWER, else your login name)."),
]


def reviewer_name(given: str | None) -> str:
    if given and given.strip():
        return given.strip()
    try:
        return getpass.getuser()
    except Exception:  # no login name in some containers
        return os.environ.get("USER") or "reviewer"


@contextmanager
def open_queue(db: str | None) -> Iterator[ReviewQueue]:
    from keel.review import ReviewQueue  # start-up: see keel.cli

    store = keel.Store.open(db)
    try:
        yield ReviewQueue(store)
    finally:
        store.close()


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def list_cmd(
    workflow: WorkflowOption = None,
    reason: ReasonOption = None,
    status: Annotated[str, typer.Option(help="open, decided, cancelled or all.")] = "open",
    limit: Annotated[int, typer.Option("--limit", min=1)] = 100,
    db: DbOption = None,
    as_json: JsonOption = False,
    raw: RawOption = False,
) -> None:
    """Review tasks, highest priority first, then earliest due (personal data masked)."""
    with open_queue(db) as q:
        rows = q.list(status=None if status == "all" else status, reason=reason, limit=limit,
                      workflow=workflow, raw=raw)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"no {status} review tasks")
        return
    # Fits an 80-column terminal: the task id (to copy into `decide`) never wraps; the
    # workflow shows once when every task shares it; priority, queue and holder show when
    # they tell tasks apart, the model output (also in `keel review show`) when there is room.
    workflows = {r["workflow"] for r in rows}
    one = next(iter(workflows)) if len(workflows) == 1 else None
    cols: list[tuple[Column, Callable[[dict[str, Any]], str]]] = [
        (Column("task", no_wrap=True), lambda r: r["id"]),
        (Column("key", overflow="fold", min_width=9), lambda r: r["key"]) if one else
        (Column("workflow / key", overflow="fold", min_width=9),
         lambda r: f"{r['workflow']} / {r['key']}"),
        (Column("reason", no_wrap=True), lambda r: r["reason"]),
    ]
    if len({r["priority"] for r in rows}) > 1:
        cols.append((Column("prio", justify="right", no_wrap=True), lambda r: str(r["priority"])))
    cols += [
        (Column("conf", justify="right", no_wrap=True),
         lambda r: "-" if r["confidence"] is None else f"{r['confidence']:.3f}"),
        (Column("due", no_wrap=True),
         lambda r: fmt_time(r["due_at"])[5:-3] + ("\n[red]overdue[/]" if r["overdue"] else "")),
    ]
    if console.width >= 110:
        cols.append((Column("model output", overflow="ellipsis", no_wrap=True, max_width=30),
                     lambda r: _short(r["model_output"])))
    if any(r["queue"] != "default" for r in rows):
        cols.append((Column("queue", overflow="fold"), lambda r: r["queue"]))
    if any(r["leased"] for r in rows):
        cols.append((Column("held by", overflow="fold"),
                     lambda r: r["claimed_by"] if r["leased"] else ""))
    table = Table(*(c for c, _ in cols), box=None, padding=(0, 1, 0, 0), pad_edge=False,
                  header_style="bold underline",
                  title=f"{one}: {status} review tasks" if one else None, title_justify="left")
    for r in rows:
        table.add_row(*(cell(r) for _, cell in cols))
    console.print(table)
    console.print(f"{len(rows)} task(s); decide one with "
                  "`keel review decide TASK (--accept | --correct JSON | --reject REASON)`, "
                  "or run `keel review` to work through the queue")


def show_cmd(
    task_id: Annotated[str, typer.Argument(help="The task id (from `keel review list`).")],
    db: DbOption = None,
    as_json: JsonOption = False,
    raw: RawOption = False,
) -> None:
    """One task: the input, the model's output and confidence, and why it is here (personal
    data masked)."""
    with open_queue(db) as q:
        task = q.get(task_id, raw=raw)
    if as_json:
        print_json(task)
        return
    from keel.cli._terminal import render_task

    render_task(task)


def decide_cmd(
    task_id: Annotated[str, typer.Argument(help="The task id (from `keel review list`).")],
    accept: Annotated[bool, typer.Option("--accept", help="The model's output is right.")] = False,
    correct: Annotated[str | None, typer.Option(
        "--correct", metavar="JSON", help="The right output, as a JSON object.")] = None,
    reject: Annotated[str | None, typer.Option(
        "--reject", metavar="REASON", help="No output is right; say why.")] = None,
    step: Annotated[str | None, typer.Option(
        "--step", metavar="NAME", help="A multi-step workflow: the step the task is about "
        "(checked; the correction is that step's output).")] = None,
    reviewer: ReviewerOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Decide one task: accept the model's output, correct it, or reject the record. On a
    multi-step workflow the task is about one step (`keel review show` says which): correct
    that step's output; a correction of an earlier step runs the steps after it again."""
    chosen = [name for name, on in (("accept", accept), ("correct", correct is not None),
                                    ("reject", reject is not None)) if on]
    if len(chosen) != 1:
        raise InvalidDecision("give exactly one of --accept, --correct JSON, --reject REASON")
    output = None
    if correct is not None:
        try:
            output = json.loads(correct)
        except json.JSONDecodeError as exc:
            raise InvalidDecision(f"--correct takes a JSON object, e.g. '{{\"intent\": "
                                  f"\"card_arrival\"}}'; {exc.msg} at column {exc.colno}") from exc
    who = reviewer_name(reviewer)
    with open_queue(db) as q:
        done = q.decide(task_id, who, chosen[0], output=output, reason=reject, step=step)
    if as_json:
        print_json(done)
        return
    if done.get("second_review_id"):
        console.print(f"recorded {chosen[0]} by {who}; the model was confident, so a second "
                      f"reviewer must confirm (task {done['second_review_id']})")
    else:
        console.print(f"task {task_id} ({done['key']}): {chosen[0]} by {who}; "
                      f"output {json.dumps(done['output'], ensure_ascii=False)}")


def escalate_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Escalate overdue open tasks to each workflow's escalation owner (run it from cron)."""
    with open_queue(db) as q:
        done = q.escalate_overdue()
    if as_json:
        print_json(done)
        return
    for task in done:
        console.print(f"escalated {task['id']} ({task['reason']}) to {task['escalated_to']}")
    console.print(f"{len(done)} overdue task(s) escalated")


def review_main(
    ctx: typer.Context,
    workflow: WorkflowOption = None,
    reason: ReasonOption = None,
    reviewer: ReviewerOption = None,
    lease_s: Annotated[float, typer.Option(min=1, help="How long a claim lasts (s).")] = 600.0,
    db: DbOption = None,
) -> None:
    """Work through the queue in the terminal: a accept, c correct, r reject, s skip, q quit."""
    if ctx.invoked_subcommand is not None:
        return
    from keel.cli._terminal import TerminalReviewer

    with open_queue(db) as q:
        TerminalReviewer(q, reviewer_name(reviewer), workflow=workflow, reason=reason,
                         lease_s=lease_s).run()


def register(app: typer.Typer) -> None:
    review_app.callback(invoke_without_command=True)(review_main)
    review_app.command("list")(list_cmd)
    review_app.command("show")(show_cmd)
    review_app.command("decide")(decide_cmd)
    review_app.command("escalate")(escalate_cmd)
    app.add_typer(review_app, name="review")
