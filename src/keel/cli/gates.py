"""keel gate, keel gate sign, keel promote, keel drill: is the workflow ready for its next
stage, and moving it there."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Column, Table
from typer.core import TyperGroup

import keel
from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json

WorkflowPy = Annotated[Path, typer.Argument(help="Path to the workflow.py.")]
#: `keel gate` exits 3 when the workflow is not ready (like a check that found a problem).
EXIT_NOT_READY = 3


class _DefaultReport(TyperGroup):
    """`keel gate WORKFLOW_PY` is `keel gate report WORKFLOW_PY`; `keel gate sign` signs."""

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        first = args[0] if args else ""
        if first not in self.commands and (first.endswith(".py") or Path(first).is_file()):
            args = ["report", *args]
        return super().resolve_command(ctx, args)


gate_app = typer.Typer(cls=_DefaultReport, no_args_is_help=True,
                       help="Is the workflow ready for its next stage? (`keel gate WORKFLOW_PY`)")


def _store(db: str | None) -> keel.Store:
    return keel.Store.open(db, must_exist=True)


@gate_app.command("report")
def report_cmd(
    workflow_py: WorkflowPy,
    to: Annotated[str | None, typer.Option(
        "--to", help="mvp | production (default: the next stage).")] = None,
    history: Annotated[bool, typer.Option(
        "--history", help="Every stage change and what it rested on.")] = False,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the report as HTML.")] = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """The readiness report: each criterion's verdict, evidence and fix; exit 0 ready, 3 not."""
    from keel import gates  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _store(db)
    try:
        if history:
            rows = gates.history(store, wf.name)
            _render_history(wf.name, rows, as_json)
            return
        rep = gates.report(wf, store, to=to, wf_arg=str(workflow_py))
        past = gates.history(store, wf.name) if html else []
    finally:
        store.close()
    out = rep.as_dict()
    if html is not None:
        gates.write_html(out, html, past)
    if as_json:
        print_json(out)
    else:
        _render(out, html)
    if not rep.ready:
        raise typer.Exit(EXIT_NOT_READY)


_STYLE = {"pass": "green", "fail": "bold red", "unknown": "yellow", "not applicable": "dim"}


def _render(out: dict[str, Any], html: Path | None) -> None:
    gated = "" if out["gated"] else " (no gates declared: the stage changes nothing keel does)"
    console.print(f"[bold]{out['workflow']}[/]: stage {out['stage']}{gated}; gate to "
                  f"[bold]{out['to']}[/]")
    table = Table("criterion", "for", "verdict", Column("evidence", overflow="fold"),
                  Column("to fix", overflow="fold"))
    for c in out["criteria"]:
        style = _STYLE.get(c["status"], "")
        table.add_row(f"{c['title']} [dim]({c['section']})[/]", c["needed_for"],
                      f"[{style}]{c['status']}[/]", c["detail"], c["fix"])
    console.print(table)
    sections = ", ".join(f"{k} {v['passed']}/{v['of']}" for k, v in out["sections"].items())
    console.print(f"score {out['score']} ({sections}): {out['band']}")
    colour = "green" if out["ready"] else "red"
    console.print(f"[bold {colour}]{out['summary']}[/]" + (f" (report: {html})" if html else ""))


def _render_history(workflow: str, rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print(f"{workflow} has never changed stage: it is a prototype")
        return
    table = Table("when", "stage", "by", Column("why", overflow="fold"), "override",
                  "evidence", title=f"stages of {workflow}")
    for r in rows:
        ev = r["evidence"] or {}
        table.add_row(fmt_time(r["at"]), r["stage"], r["actor"] or "-", r["reason"] or "",
                      "yes" if r["override"] else "", (ev.get("hash") or "-")[:12])
    console.print(table)


@gate_app.command("sign")
def sign_cmd(
    workflow_py: WorkflowPy,
    kind: Annotated[str, typer.Option("--kind", help="security_review | operational_signoff")],
    key: Annotated[str | None, typer.Option(
        "--key", envvar="KEEL_API_KEY", help="The approver's API key (or KEEL_API_KEY).")] = None,
    note: Annotated[str | None, typer.Option("--note", help="What was reviewed.")] = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """An approver signs a review of this workflow version (kept as evidence)."""
    from keel import gates  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _store(db)
    try:
        row = gates.sign(wf, store, kind, key=key, note=note)
    finally:
        store.close()
    if as_json:
        print_json(row)
        return
    console.print(f"{kind.replace('_', ' ')} of {wf.name} (version {wf.version}) signed by "
                  f"[bold]{row['signer']}[/]")


def promote_cmd(
    workflow_py: WorkflowPy,
    to: Annotated[str, typer.Option("--to", help="prototype | mvp | production")],
    override: Annotated[bool, typer.Option(
        "--override", help="Promote although the gate says not yet (needs --reason; recorded).")] = False,
    reason: Annotated[str | None, typer.Option("--reason", help="Why (kept on the audit trail).")] = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Move the workflow to a stage: forward only when its gate passes, back at any time."""
    from keel import gates  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _store(db)
    try:
        row = gates.promote(wf, store, to, reason=reason, override=override,
                            wf_arg=str(workflow_py))
    finally:
        store.close()
    if as_json:
        print_json(row)
        return
    how = " (override: the gate did not pass)" if row["override"] else ""
    console.print(f"{wf.name} is now in [bold]{row['stage']}[/]{how}")


def drill_cmd(
    workflow_py: WorkflowPy,
    sample: Annotated[int, typer.Option(min=10, help="Recent inputs to drill with.")] = 200,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """A recovery drill on a scratch copy of recent inputs: model errors, timeouts, malformed
    output and a crash mid-run; passes when every record ends in exactly one disposition,
    none twice, and the audit trail verifies."""
    from keel import gates  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _store(db)
    try:
        with console.status("drilling"):
            out = gates.drill(wf, store, sample=sample)
    finally:
        store.close()
    if as_json:
        print_json(out)
    elif out["ok"]:
        console.print(f"[bold green]drill passed[/]: {out['records']} records, {out['faults']} "
                      f"failed model calls, killed after {out['killed_at']} and resumed; every "
                      "record ended in one disposition, none twice, the audit trail verifies")
    else:
        console.print(f"[bold red]drill failed[/]: {out['problem']}")
    if not out["ok"]:
        raise typer.Exit(EXIT_NOT_READY)


def register(app: typer.Typer) -> None:
    app.add_typer(gate_app, name="gate")
    app.command("promote")(promote_cmd)
    app.command("drill")(drill_cmd)
