"""keel audit verify, keel audit export."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json
from keel.errors import UserError

#: Exit code of `keel audit verify` when a chain is broken (1 stays "you asked wrongly").
EXIT_BROKEN = 3

audit_app = typer.Typer(help="The tamper-evident audit trail: verify it, export it.",
                        no_args_is_help=True)


@audit_app.command("verify")
def verify_cmd(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    against: Annotated[Path | None, typer.Option(
        "--against", help="An anchor file from `keel audit anchor`: prove nothing before it "
                          "changed.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check every record's hash chain and rows, and the keyed ledger sealing them; name the
    first broken link (exit 3 if anything is wrong)."""
    from keel import store  # start-up: see keel.cli

    report = store.verify_trail(db=db, workflow=workflow, against=_read_anchor(against))
    data = store.trail_report(report)
    if as_json:
        print_json(data)
    elif report.ok:
        anchored = (f"; anchor at block {report.anchor['seq']} holds" if report.anchor else "")
        console.print(f"[bold green]audit trail intact[/]: {report.records:,} records, "
                      f"{report.events:,} events, {report.blocks:,} ledger blocks sealed with "
                      f"key {report.key_id}{anchored}; head {report.head_hash}")
    else:
        _render_broken(data)
    if not report.ok:
        raise typer.Exit(EXIT_BROKEN)


def _read_anchor(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        found = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise UserError(f"anchor file {str(path)!r} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise UserError(f"anchor file {str(path)!r} is not an anchor (JSON from `keel audit "
                        f"anchor`): {exc}") from exc
    if not isinstance(found, dict):
        raise UserError(f"anchor file {str(path)!r} is not an anchor (a JSON object)")
    return found


@audit_app.command("anchor")
def anchor_cmd(
    out: Annotated[Path | None, typer.Option(
        "--out", help="Write the anchor here (default: print it). Keep it outside the store.")] = None,
    db: DbOption = None,
) -> None:
    """Sign the ledger's head now; later, `keel audit verify --against FILE` proves that nothing
    before it changed."""
    from keel import store  # start-up: see keel.cli

    found = store.anchor_trail(db=db)
    text = json.dumps(found, indent=2) + "\n"
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text)
    console.print(f"anchor written to {out}: ledger block {found['seq']} of {found['records']:,} "
                  f"records, key {found['key_id']}; keep it where the store's writers cannot "
                  "change it")


def _render_broken(data: dict[str, Any]) -> None:
    console.print(f"[bold red]audit trail broken[/]: {data['broken_records']} of "
                  f"{data['records']:,} records")
    for p in data["ledger"]["problems"][:20]:
        console.print(f"  ledger block {p['block']}: {p['problem']}: {p['message']}")
    if data["ledger"]["unknown_keys"]:
        console.print(f"  ledger blocks sealed with key(s) {', '.join(data['ledger']['unknown_keys'])}"
                      " could not be checked: set KEEL_AUDIT_KEY (or KEEL_AUDIT_KEY_FILE) to "
                      "that key")
    anchored = data.get("anchor")
    if anchored and not anchored["ok"]:
        console.print(f"  anchor at block {anchored['seq']}: {anchored['problem']}")
    first = data["first_broken"]
    if not isinstance(first, dict):
        return
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
    from keel import store  # start-up: see keel.cli

    n = store.export_trail(out, db=db, workflow=workflow, raw=raw)
    console.print(f"{n:,} events written to {out}" + ("" if raw else " (personal data masked)"))


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
