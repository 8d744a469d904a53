"""keel audit verify, keel audit export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json

#: Exit code of `keel audit verify` when a chain is broken (1 stays "you asked wrongly").
EXIT_BROKEN = 3

audit_app = typer.Typer(help="The tamper-evident audit trail: verify it, export it.",
                        no_args_is_help=True)


@audit_app.command("verify")
def verify_cmd(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every record's event hash chain; name the first broken link (exit 3 if any)."""
    from keel import audit  # start-up: see keel.cli

    report = audit.verify(db=db, workflow=workflow)
    data = audit.report_dict(report)
    if as_json:
        print_json(data)
    elif report.ok:
        console.print(f"[bold green]audit trail intact[/]: {report.records:,} records, "
                      f"{report.events:,} events; root {report.root}")
    else:
        _render_broken(data)
    if not report.ok:
        raise typer.Exit(EXIT_BROKEN)


def _render_broken(data: dict[str, object]) -> None:
    first = data["first_broken"]
    assert isinstance(first, dict)
    console.print(f"[bold red]audit trail broken[/]: {data['broken_records']} of "
                  f"{data['records']:,} records")
    console.print(f"first broken link: record [bold]{first['key']}[/] ({first['workflow']}, "
                  f"id {first['record_id']}) at event seq [bold]{first['seq']}[/]: "
                  f"{first['problem']}: {first['message']}")
    ev = first.get("event") or {}
    if ev.get("kind"):
        console.print(f"  event now reads: kind={ev['kind']} at={fmt_time(ev.get('at'))} "
                      f"detail={ev.get('detail')}")
    broken = data["broken"]
    assert isinstance(broken, list)
    for b in broken[1:20]:
        console.print(f"  also: {b['key']} seq {b['seq']}: {b['problem']}")


@audit_app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL file to write (one event per line).")],
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Do not mask personal data (admins only).")] = False,
    db: DbOption = None,
) -> None:
    """Export every event, with its hashes, as JSON lines (personal data masked)."""
    from keel import audit  # start-up: see keel.cli

    n = audit.export(out, db=db, workflow=workflow, raw=raw)
    console.print(f"{n:,} events written to {out}" + ("" if raw else " (personal data masked)"))


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
