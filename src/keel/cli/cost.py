"""keel cost: where the money went, what production will cost, what a threshold costs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

import keel
from keel.cli._common import DbOption, JsonOption, console, print_json

WorkflowPy = Annotated[Path, typer.Argument(help="Path to the workflow.py.")]


def cost_cmd(
    workflow_py: WorkflowPy,
    window: Annotated[str | None, typer.Option(
        "--window", help="all (default), a duration like 24h or 30d, or since:2026-01-31.")] = None,
    project: Annotated[str | None, typer.Option(
        "--project", help="Project to a volume, e.g. 50000/day, 1500000/month, 2000/hour.")] = None,
    thresholds: Annotated[bool, typer.Option(
        "--thresholds", help="Price each candidate threshold on labelled data; mark the "
        "cheapest that keeps the accuracy guarantee.")] = False,
    labels: Annotated[Path | None, typer.Option(
        "--labels", help="Labelled file for --thresholds and the error rate (default: the "
        "workflow's Cost(labels=...), else the store's audit labels).")] = None,
    label_column: Annotated[str | None, typer.Option(
        help="Column of --labels holding the right output, e.g. category.")] = None,
    target_accuracy: Annotated[float | None, typer.Option(
        help="Accuracy the threshold must guarantee (default: the gates' target, else 0.95).")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the report as HTML.")]
    = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Cost per component, disposition and release; --project: a month at a volume;
    --thresholds: the cost of each confidence threshold."""
    from keel import cost  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    if project is not None:
        cost.parse_volume(project)  # a bad volume is said before the store is opened
    store = keel.Store.open(db, must_exist=True)
    try:
        out: dict[str, Any] = {"report": cost.report(wf, store, window=window)}
        if project is not None:
            out["projection"] = cost.project(wf, store, project, window=window,
                                             labels_file=labels, label_column=label_column)
        if thresholds:
            out["thresholds"] = cost.thresholds(
                wf, store, volume=project or "1000/day", target_accuracy=target_accuracy,
                labels_file=labels, window=window, label_column=label_column)
    finally:
        store.close()
    if html is not None:
        html.write_text(cost.render_html(wf.name, out["report"], out.get("projection"),
                                         out.get("thresholds")), encoding="utf-8")
    if as_json:
        print_json(out)
        return
    _render_report(out["report"])
    if "projection" in out:
        _render_projection(out["projection"])
    if "thresholds" in out:
        _render_thresholds(out["thresholds"])
    if html is not None:
        console.print(f"HTML report: {html}")


def _usd(value: float | None, digits: int = 4) -> str:
    return "unknown" if value is None else f"${value:,.{digits}f}"


def _render_report(r: dict[str, Any]) -> None:
    c = r["components"]
    table = Table(title=f"{r['workflow']}: cost over {r['window']} ({r['decisions']:,} decisions)")
    table.add_column("component")
    table.add_column("USD", justify="right")
    table.add_row("model", _usd(c["model_usd"]))
    table.add_row("fallback", _usd(c["fallback_usd"]))
    review = r["review"]
    table.add_row(f"review ({review['tasks_decided']} tasks, {review['hours']:.2f} h, "
                  f"handling {review['handling_source'] or 'unknown'})", _usd(c["review_usd"]))
    table.add_row("total", _usd(c["total_usd"]))
    console.print(table)
    if r["unknown_cost_decisions"]:
        console.print(f"[yellow]{r['unknown_cost_decisions']:,} decisions used a model with no "
                      "price: their cost is unknown, not $0 (add a keel.ModelPrice)[/]")
    per = r["per_decision_usd"]
    console.print(f"per decision: p50 {_usd(per['p50'], 6)}, p95 {_usd(per['p95'], 6)}; "
                  f"per correct automatic decision: {_usd(r['cost_per_correct_automatic_usd'], 6)}"
                  + ("" if r["audited_accuracy"]["n"] else " (no audits yet)"))
    by = Table(title="by disposition")
    for col in ("disposition", "decisions", "model USD", "review USD", "per decision"):
        by.add_column(col, justify="left" if col == "disposition" else "right")
    for name, g in sorted(r["by_disposition"].items()):
        by.add_row(name, f"{g['decisions']:,}", _usd(g["model_usd"]), _usd(g["review_usd"]),
                   _usd(g["per_decision_usd"], 6))
    console.print(by)
    if len(r["by_release"]) > 1:
        for rel, g in r["by_release"].items():
            console.print(f"release {rel[:12]}: {g['decisions']:,} decisions, {_usd(g['total_usd'])}")
    v = r["value"]
    if v:
        console.print(f"value: {v['automatic_decisions']:,} automatic decisions, "
                      f"{(v['manual_hours_saved'] or 0):,.1f} h of manual work saved, net "
                      f"{_usd(v['net_usd'], 2)} ({_usd(v['net_usd_per_day'], 2)}/day)")
    for b in r["budgets"]:
        console.print(f"budget {b['period']} {b['window']}: spent {_usd(b['spent_usd'])} of "
                      f"{_usd(b['limit_usd'], 2)}, remaining {_usd(b['remaining_usd'])}, "
                      f"{b['refused']:,} records turned away")


def _fig(f: dict[str, float] | None, fmt: str = "{:,.2f}") -> tuple[str, str]:
    if f is None:
        return "unknown", ""
    return fmt.format(f["estimate"]), f"{fmt.format(f['low'])} - {fmt.format(f['high'])}"


def _render_projection(p: dict[str, Any]) -> None:
    table = Table(title=f"at {p['volume_per_day']:,.0f} records/day (measured on "
                        f"{p['measured_on']:,} decisions)")
    table.add_column("figure")
    table.add_column("estimate", justify="right")
    table.add_column("95% interval", justify="right")
    rows = [("model spend, USD/day", "model_usd_per_day", "{:,.2f}"),
            ("review hours/day", "review_hours_per_day", "{:,.1f}"),
            ("reviewers needed", "reviewers_needed", "{:,.0f}"),
            ("review cost, USD/day", "review_usd_per_day", "{:,.2f}"),
            ("wrong automatic decisions/day", "wrong_decisions_per_day", "{:,.0f}"),
            ("cost of errors, USD/day", "errors_usd_per_day", "{:,.2f}"),
            ("total, USD/month", "total_usd_per_month", "{:,.0f}")]
    for label, key, fmt in rows:
        table.add_row(label, *_fig(p[key], fmt))
    console.print(table)
    fixed = p["fixed_usd_per_month"]
    console.print(f"in the total: infrastructure ${fixed['infra']:,.0f}/month, retraining "
                  f"${fixed['retraining']:,.0f}/month; errors from {p['accuracy_source'] or '-'}"
                  f"; review time {p['handling_source'] or 'unknown'}")
    v = p["value"]
    if v and v["net_usd_per_month"] is not None:
        console.print(f"value: {(v['manual_hours_saved_per_day'] or 0):,.0f} h of manual work "
                      f"saved a day; net {_usd(v['net_usd_per_month'], 0)}/month")
    for m in p["missing"]:
        console.print(f"[yellow]missing: {m}[/]")


def _render_thresholds(t: dict[str, Any]) -> None:
    table = Table(title=f"thresholds at {t['volume_per_day']:,.0f} records/day, target accuracy "
                        f"{t['target_accuracy']:g} ({t['n']:,} labels); cert.: the guarantee "
                        "holds there")
    for col in ("thr.", "cover", "guar. acc", "model $/d", "review h/d", "wrong/d",
                "total $/d", "cert."):
        table.add_column(col, justify="right", no_wrap=True)
    for r in t["rows"]:
        mark = "best" if r["cheapest"] else ("yes" if r["certified"] else "no")
        style = "bold green" if r["cheapest"] else (None if r["certified"] else "dim")
        table.add_row(f"{r['threshold']:.2f}", f"{r['coverage']:.1%}",
                      "-" if r["guaranteed_accuracy"] is None else f"{r['guaranteed_accuracy']:.3f}",
                      f"{r['model_usd_per_day']:,.2f}",
                      "-" if r["review_hours_per_day"] is None else f"{r['review_hours_per_day']:,.1f}",
                      f"{r['wrong_per_day']:,.0f}",
                      "-" if r["total_usd_per_day"] is None else f"{r['total_usd_per_day']:,.0f}",
                      mark, style=style)
    console.print(table)
    if t["cheapest"] is not None:
        console.print(f"[bold green]cheapest threshold that keeps accuracy >= "
                      f"{t['target_accuracy']:g}: {t['cheapest']:.2f}[/] (in force: "
                      f"{t['current_threshold']})")
    else:
        console.print(f"[yellow]no threshold keeps the guarantee: {t['refusal']}[/]")
    for m in t["missing"]:
        console.print(f"[yellow]missing: {m}[/]")


def register(app: typer.Typer) -> None:
    app.command("cost")(cost_cmd)
