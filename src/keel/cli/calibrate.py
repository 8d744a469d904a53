"""keel calibrate, keel retrain, keel labels export."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

import keel
from keel.cli._common import DbOption, JsonOption, console, fmt_cost, print_json
from keel.errors import UserError

if TYPE_CHECKING:
    from keel.review import CalibrationResult

labels_app = typer.Typer(help="Labelled examples from review and audit decisions.",
                         no_args_is_help=True)

WorkflowPy = Annotated[Path, typer.Argument(help="Path to the workflow.py.")]


def calibrate_cmd(
    workflow_py: WorkflowPy,
    target_accuracy: Annotated[float, typer.Option(
        help="Accuracy to guarantee among automated decisions.")] = 0.98,
    delta: Annotated[float, typer.Option(
        help="Allowed probability that the guarantee fails (0.05: holds w.p. 95%).")] = 0.05,
    labels: Annotated[Path | None, typer.Option(
        "--labels",
        help="Labelled file (CSV/JSONL/Parquet); default: the store's audit labels.")] = None,
    all_labels: Annotated[bool, typer.Option(
        "--all-labels", help="Also use every label the store holds (reviews as well as "
                             "audits), beside --labels FILE if given.")] = False,
    label_column: Annotated[str | None, typer.Option(
        help="Column holding the right output (one-field outputs), e.g. category.")] = None,
    per_class: Annotated[bool, typer.Option(
        "--per-class", help="A threshold per predicted class where labels allow.")] = False,
    class_field: Annotated[str | None, typer.Option(
        help="Output field naming the class (per-class; default: the only field).")] = None,
    method: Annotated[str, typer.Option(help="binomial (Clopper-Pearson) or hb "
                                        "(Hoeffding-Bentkus).")] = "binomial",
    html_out: Annotated[Path | None, typer.Option(
        "--html", help="Also write a report page: the coverage/accuracy curve, certified and "
                       "uncertified points, and the classes never automated and why.")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Report only; keep the routing policy in force.")] = False,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Certify a confidence threshold from labels; from then on runs route with it."""
    from keel import review  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = keel.Store.open(db)
    try:
        res = review.calibrate(wf, store, labels_file=labels, label_column=label_column,
                               all_labels=all_labels, evidence=html_out is not None,
                               target_accuracy=target_accuracy, delta=delta, method=method,
                               per_class=per_class, class_field=class_field,
                               activate=not dry_run)
    finally:
        store.close()
    if html_out is not None and res.evidence is not None:
        html_out.parent.mkdir(parents=True, exist_ok=True)
        html_out.write_text(review.calibration_html(res, res.evidence), encoding="utf-8")
    if as_json:
        print_json(res.as_dict())
        return
    _render(res)
    if html_out is not None:
        console.print(f"report page: {html_out}")


def _render(res: CalibrationResult) -> None:
    table = Table(title=f"{res.workflow}: calibrated threshold", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    thr = "never" if res.threshold in (None, float("inf")) else f"{res.threshold:.3f}"
    classes = f" (+{len(res.per_class)} per-class)" if res.per_class else ""
    table.add_row("threshold", thr + classes)
    table.add_row("guarantee", f"accuracy >= {res.target_accuracy:.1%} with probability "
                  f">= {1 - res.delta:.0%}")
    table.add_row("bound", f"accuracy above threshold >= {res.accuracy_bound:.2%} "
                  f"(error <= {res.error_bound:.2%}, {res.method})")
    table.add_row("expected coverage", f"{res.coverage:.1%} automated")
    if res.uncertified_threshold is not None:
        left = max(0.0, res.uncertified_coverage - res.coverage)
        table.add_row("left on the table", f"{left:.1%} (a threshold of "
                      f"{res.uncertified_threshold:.3f}, picked on these labels with no "
                      f"guarantee, would automate {res.uncertified_coverage:.1%})")
    if res.needed_accuracy is not None:
        table.add_row("bound's margin", f"{res.accepted:,} labels above the threshold must "
                      f"show >= {res.needed_accuracy:.2%} right to certify "
                      f"{res.target_accuracy:.0%} (+{res.needed_accuracy - res.target_accuracy:.2%}"
                      "; more labels shrink it)")
    table.add_row("sample size", f"{res.used:,} labels ({res.accepted:,} above threshold, "
                  f"{res.errors:,} wrong)")
    table.add_row("model", f"{res.model_version} (threshold on {res.score})")
    if res.cost_usd or res.cost_unknown:
        table.add_row("cost of the model's answers", fmt_cost(res.cost_usd, res.cost_unknown,
                                                              "answers"))
    table.add_row("labels from", res.source)
    for why, n in res.skipped.items():
        table.add_row(f"  skipped: {why}", f"{n:,}")
    console.print(table)
    for warning in res.warnings:
        console.print(f"[bold yellow]warning:[/] {warning}")
    if res.class_field and not res.per_class:
        console.print(f"no class has the {res.class_min_labels:,} labels a threshold of its own "
                      "needs at this guarantee; all classes share the pooled threshold")
    if res.version:
        console.print(f"routing policy [bold]{res.version}[/] is now in force for "
                      f"{res.workflow}; `keel status` shows it")
    else:
        console.print("dry run: the routing policy in force is unchanged")


def retrain_cmd(
    workflow_py: WorkflowPy,
    holdout: Annotated[float | None, typer.Option(
        help="Keep this share of the labels out of training and evaluate the candidate "
             "against the champion on them (e.g. 0.3).")] = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Train a new model version on the original data plus the labels; register it as a
    release (not live: evaluate it, then roll it out)."""
    from keel import releases  # start-up: see keel.cli

    if holdout is not None and not 0 < holdout < 1:
        raise UserError("--holdout is a share of the labels in (0, 1), e.g. 0.3")
    wf = keel.load_workflow(workflow_py)
    store = keel.Store.open(db)
    try:
        with console.status("training"):
            out = releases.retrain_release(wf, store, holdout=holdout)
    finally:
        store.close()
    if as_json:
        print_json(out)
        return
    console.print(f"trained [bold]{out['version']}[/] on the original data plus "
                  f"{out['label_examples']:,} labels in {out['train_s']:.1f} s")
    if not out["new_release"]:
        console.print(f"this is release {out['release']}, registered before; nothing new to try")
        return
    console.print(f"registered as release [bold]{out['release']}[/] (not live: "
                  f"{out['champion']} is the champion)")
    ev = out.get("eval")
    if ev and ev.get("comparison"):
        c = ev["comparison"]
        console.print(f"on {out['held_out']:,} held-out labels: {c['verdict']} "
                      f"(accuracy {c['accuracy_difference']:+.1%})")
    console.print(f"Next: `keel eval {workflow_py} --labels FILE --release {out['release']} "
                  f"--against champion`, then `keel rollout start {workflow_py} --challenger "
                  f"{out['release']} --canary 5,25,50,100`")


def export_cmd(
    file: Annotated[Path, typer.Argument(help="Where to write: .csv or .parquet.")],
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    raw: Annotated[bool, typer.Option(
        "--raw", help="Export personal data unmasked (admins, for training elsewhere).")] = False,
    db: DbOption = None,
) -> None:
    """Every review and audit decision as a labelled example, with lineage (personal data
    masked unless --raw)."""
    from keel import review  # start-up: see keel.cli

    store = keel.Store.open(db)
    try:
        n = review.export_labels(store, file, workflow, raw=raw)
    finally:
        store.close()
    console.print(f"wrote {n:,} labelled examples to {file}")


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)
    app.command("retrain")(retrain_cmd)
    labels_app.command("export")(export_cmd)
    app.add_typer(labels_app, name="labels")
