"""keel alerts check, keel alerts list."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

import keel
from keel import monitor
from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json

alerts_app = typer.Typer(help="Alert rules over the store: check them now, list the history.",
                         no_args_is_help=True)

WebhookOption = Annotated[str | None, typer.Option(
    "--webhook", envvar="KEEL_ALERT_WEBHOOK",
    help="Also send changes of state to this webhook (Slack-compatible JSON).")]


def _value(signal: str, value: float | None) -> str:
    return monitor.format_value(signal, value)


@alerts_app.command("check")
def check_cmd(
    workflow_py: Annotated[Path | None, typer.Argument(
        help="A workflow.py whose declared rules to use (default: as saved in the store).")] = None,
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    webhook: WebhookOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate the alert rules now; send what changed (firing, resolved) to the channels."""
    from keel.telemetry import configure_logging  # start-up: see keel.cli

    configure_logging("auto", "warning")
    channels: list[monitor.Channel] = [monitor.LogChannel()]
    target = keel.load_workflow(workflow_py) if workflow_py else workflow
    # --webhook (or KEEL_ALERT_WEBHOOK) first; else where the workflow's gates send alerts
    hook = webhook or (target.gates.alerts_to if isinstance(target, keel.Workflow)
                       and target.gates is not None else None)
    if hook:
        channels.append(monitor.WebhookChannel(hook))
    store = keel.Store.open(db)
    try:
        result = monitor.evaluate(store, target, channels=channels)
    finally:
        store.close()
    if as_json:
        print_json(result.as_dict())
        return
    table = Table("workflow", "rule", "value", "threshold", "observations", "state")
    for s in result.statuses:
        style = {"firing": "bold red", "pending": "yellow", "resolved": "green"}.get(s.state, "")
        table.add_row(s.workflow, s.rule, _value(s.signal, s.value), _value(s.signal, s.threshold),
                      str(s.count), f"[{style}]{s.state}[/]" if style else s.state)
    console.print(table)
    for note in result.notifications:
        console.print(note.message)
    if not result.statuses:
        console.print("no workflows in this store yet; run one first")


@alerts_app.command("list")
def list_cmd(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    firing: Annotated[bool, typer.Option("--firing", help="Only alerts firing now.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1)] = 50,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Alerts that fired, newest first, and when they resolved."""
    store = keel.Store.open(db)
    try:
        rows = monitor.history(store, workflow, state="firing" if firing else None, limit=limit)
    finally:
        store.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no alerts have fired")
        return
    table = Table("workflow", "rule", "state", "value", "fired", "resolved")
    for r in rows:
        table.add_row(r["workflow"], r["rule"], r["state"], _value(r["detail"].get("signal", ""), r["value"]),
                      fmt_time(r["fired_at"]), fmt_time(r["resolved_at"]))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.add_typer(alerts_app, name="alerts")
