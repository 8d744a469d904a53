"""keel deliveries: what the sinks received, the dead letters, and retrying them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Column, Table

import keel
from keel.cli._common import (
    DbOption,
    HeaderOption,
    JsonOption,
    console,
    fmt_time,
    parse_headers,
    print_json,
)

group = typer.Typer(help="Deliveries to sinks (--out file, --webhook): list, send what is owed.",
                    no_args_is_help=False, invoke_without_command=True)


@group.callback()
def list_cmd(
    ctx: typer.Context,
    failed: Annotated[bool, typer.Option(
        "--failed", help="Only what is owed: dead letters, and decisions changed by review "
                         "since the sink received them (pending).")] = False,
    sink: Annotated[str | None, typer.Option("--sink", help="Only this sink.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List deliveries, newest first (`keel deliveries retry` sends what is owed)."""
    if ctx.invoked_subcommand is not None:
        return
    rows = keel.deliveries(db=db, failed=failed, sink=sink)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("no failed deliveries" if failed else "no deliveries yet")
        return
    # One sink (the usual case) is named once above the table; several get a column.
    sinks = {r["sink"] for r in rows}
    one = next(iter(sinks)) if len(sinks) == 1 else None
    table = Table(*([] if one else [Column("sink", overflow="fold")]),
                  Column("key", overflow="fold"), "status", Column("tries", justify="right"),
                  Column("last error", overflow="fold"), Column("when", no_wrap=True),
                  title=one, title_justify="left")
    for r in rows:
        table.add_row(*([] if one else [r["sink"]]), r["key"] or r["record_id"], r["status"],
                      str(r["attempts"]), (r["last_error"] or "")[:80],
                      fmt_time(r["updated_at"])[5:])
    console.print(table)
    dead = sum(1 for r in rows if r["status"] == "dead")
    if dead:
        console.print(f"{dead} dead letter(s); fix the receiver, then `keel deliveries retry`")
    pending = sum(1 for r in rows if r["status"] == "pending")
    if pending:
        console.print(f"{pending} decision(s) changed by review since the sink received them; "
                      "`keel deliveries retry` (or the next run with the sink) sends them")


@group.command("retry")
def retry_cmd(
    sink: Annotated[str | None, typer.Option("--sink", help="Only this sink.")] = None,
    webhook_header: HeaderOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send each sink what it is owed: dead-lettered webhook deliveries (with the headers the
    receiver needs), and decisions a reviewer changed after the sink received them (a file
    sink gets the new line appended)."""
    done = keel.retry_deliveries(db=db, sink=sink, headers=parse_headers(webhook_header))
    if as_json:
        print_json(done)
    else:
        if not done["sinks"]:
            console.print("no sinks in this store")
        for s in done["sinks"]:
            console.print(f"{s['sink']}: {s['retried']} sent, {s['delivered']} delivered, "
                          f"{s['dead']} still dead")
    if any(s["dead"] for s in done["sinks"]):
        raise typer.Exit(2)


def register(app: typer.Typer) -> None:
    app.add_typer(group, name="deliveries")
