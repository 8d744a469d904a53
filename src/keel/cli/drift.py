"""keel drift: build a reference profile, then compare windows of production with it."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from typer.core import TyperGroup

import keel
from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json

if TYPE_CHECKING:
    from keel.store import Store  # start-up: see keel.cli


class _DriftGroup(TyperGroup):
    """``keel drift WORKFLOW_PY`` runs the report; ``keel drift reference ...`` builds one."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0].endswith(".py"):
            args = ["report", *args]
        return super().parse_args(ctx, args)


drift_app = typer.Typer(
    cls=_DriftGroup,
    no_args_is_help=True,
    add_completion=False,
    help="Drift and out-of-distribution monitoring against a reference profile. "
         "`keel drift WORKFLOW_PY [OPTIONS]` is short for `keel drift report WORKFLOW_PY`.",
)

WorkflowArg = Annotated[
    Path, typer.Argument(help="Path to the workflow.py (or a monitor-only keel.Watch file).")
]
NameOption = Annotated[str, typer.Option("--name", help="Reference profile name.")]


@drift_app.command("reference")
def reference_cmd(
    workflow_py: WorkflowArg,
    source: Annotated[
        Path | None,
        typer.Option(
            "--from", help="Profile this file (CSV, JSONL, Parquet), e.g. the training data."
        ),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            "--window",
            help="Profile decided records instead: all, last:N, run:ID, since:DATE, 24h, 7d.",
        ),
    ] = None,
    name: NameOption = "reference",
    embedder: Annotated[
        str,
        typer.Option(
            "--embedder",
            envvar="KEEL_EMBEDDER",
            help="Text embeddings: auto (MiniLM when installed, else WordLlama), wordllama, minilm, tfidf.",
        ),
    ] = "auto",
    sample_size: Annotated[
        int,
        typer.Option("--sample-size", min=100, help="Rows kept in the profile's uniform sample."),
    ] = 4096,
    ood_fpr: Annotated[
        float,
        typer.Option(
            "--ood-fpr",
            min=0.0001,
            max=0.5,
            help="Share of in-distribution records the out-of-distribution threshold may flag.",
        ),
    ] = 0.01,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Build and save a reference profile from a file or a window of decided records."""
    from keel.monitor import build_reference  # start-up: see keel.cli

    with _store(db) as store:
        profile = build_reference(
            workflow_py,
            store=store,
            source=source,
            window=window,
            name=name,
            embedder=embedder,
            sample_size=sample_size,
            ood_fpr=ood_fpr,
        )
    summary = profile.summary()
    if as_json:
        print_json(summary)
        return
    console.print(
        f"[bold]reference profile {summary['id']}[/] for "
        f"{profile.meta.get('workflow')}: {summary['rows']:,} rows from {summary['source']}"
    )
    table = Table("field", "kind")
    for field, kind in summary["fields"].items():
        table.add_row(field, kind)
    console.print(table)
    for field, info in summary["text"].items():
        th = info["ood_threshold"]
        console.print(
            f"{field}: {info['embedder']} embeddings, vocabulary {info['vocabulary']:,}, "
            + (
                f"out-of-distribution above {th:.3f} (calibrated at {info['ood_fpr']:.0%} "
                f"on {info['calibration_texts']} held-out texts)"
                if th is not None
                else "too few texts to calibrate an out-of-distribution threshold"
            )
        )
    console.print(
        "Next: [bold]keel drift report WATCH_PY --from FILE[/] compares a later file with it."
        if profile.meta.get("watch")
        else "Next: [bold]keel drift WORKFLOW_PY --window 24h[/] compares recent records "
        "with it; declare [bold]monitor=keel.DriftMonitor()[/] on the workflow to send "
        "out-of-distribution records to review."
    )


@drift_app.command("report")
def report_cmd(
    workflow_py: WorkflowArg,
    window: Annotated[
        str,
        typer.Option(
            "--window", help="all, last:N, run:ID, since:DATE, or a duration: 90m, 24h, 7d."
        ),
    ] = "24h",
    source: Annotated[
        Path | None, typer.Option("--from", help="Compare a file instead of decided records.")
    ] = None,
    html_out: Annotated[
        Path | None, typer.Option("--html", help="Write the report as an HTML page.")
    ] = None,
    name: NameOption = "reference",
    profile_id: Annotated[
        str | None, typer.Option("--profile", help="A reference profile id (default: the newest).")
    ] = None,
    alpha: Annotated[
        float,
        typer.Option(
            "--alpha", min=0.0001, max=0.5, help="False-alarm rate across the report's checks."
        ),
    ] = 0.01,
    fail_on_drift: Annotated[
        bool, typer.Option("--fail-on-drift", help="Exit with code 3 when there is drift.")
    ] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Compare a window of production with the reference: verdicts, effect sizes, examples."""
    from keel.monitor import DriftSettings, drift_report, render_html  # start-up: see keel.cli

    with _store(db) as store:
        report = drift_report(
            store,
            workflow_py,
            window,
            source=source,
            name=name,
            profile_id=profile_id,
            settings=DriftSettings(alpha=alpha),
        )
    if html_out is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(render_html(report), encoding="utf-8")
    if as_json:
        print_json(report.as_dict())
    else:
        _render(report.as_dict(), html_out)
    if fail_on_drift and report.drifted:
        raise typer.Exit(3)


@drift_app.command("list")
def list_cmd(workflow_py: WorkflowArg, db: DbOption = None, as_json: JsonOption = False) -> None:
    """The reference profiles saved for a workflow, newest first."""
    from keel.monitor import list_references  # start-up: see keel.cli
    from keel.watch import load_watched  # start-up: see keel.cli

    wf = load_watched(workflow_py)
    with _store(db) as store:
        found = list_references(store, wf.name)
    if as_json:
        print_json(found)
        return
    table = Table("id", "name", "source", "created")
    for p in found:
        table.add_row(p["id"], p["name"], p["source"], fmt_time(p["created_at"]))
    console.print(
        table
        if found
        else "no reference profiles yet; build one with "
        "`keel drift reference WORKFLOW_PY --from FILE`"
    )


class _store:
    def __init__(self, db: str | None) -> None:
        self.store = keel.Store.open(db)

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        self.store.close()


def _render(d: dict[str, Any], html_out: Path | None) -> None:
    verdict = (
        f"[bold red]DRIFT[/]: {len(d['alerts'])} alert(s)"
        if d["drift"]
        else "[bold green]no drift[/]"
    )
    if d["minor"]:
        verdict += f", {len(d['minor'])} minor shift(s) (significant, below materiality)"
    p, w = d["profile"], d["window"]
    console.print(
        f"[bold]{d['workflow']}[/]: {verdict} — reference {p['id']} "
        f"({p['rows']:,} rows, {p['source']}) vs {w.get('source')} ({w['rows']:,} rows)"
    )
    table = Table("", "field", "test", "adj. p", "effect")
    shown = {"alert": "[red]ALERT[/]", "minor": "[yellow]minor[/]", "none": "ok"}
    for c in d["checks"]:
        if c["level"] != "none" or c["test"] in ("ood_rate", "embedding_classifier"):
            table.add_row(
                shown[c["level"]],
                c["field"],
                c["test"],
                f"{c['q_value']:.2g}",
                c["summary"],
            )
    quiet = sum(1 for c in d["checks"] if c["level"] == "none")
    console.print(table)
    console.print(f"{quiet} of {len(d['checks'])} checks within limits.")
    for name, r in d["rates"].items():
        console.print(
            f"{name.replace('_', ' ')}: {r['reference']:.1%} -> {r['current']:.1%} "
            f"({r['pp']:+.1f} pp)"
        )
    for c in d["checks"]:
        if c["drift"] and c["examples"]:
            ex = ", ".join(str(e.get("key")) for e in c["examples"][:3])
            console.print(f"  examples for {c['field']} ({c['test']}): {ex}")
    if html_out is not None:
        console.print(f"HTML report with histograms: {html_out}")


def register(app: typer.Typer) -> None:
    app.add_typer(drift_app, name="drift")
