"""keel demo: the support_triage example on 1,580 messages of Banking77's test split."""

from __future__ import annotations

import csv
import importlib.util
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

import keel
from keel.cli._common import DbOption, JsonOption, console, print_json
from keel.cli.run import progress_bar, render_summary
from keel.errors import NotFoundError, UserError


def example_dir(name: str = "support_triage") -> Path:
    """The example's folder: shipped in the wheel, or the repository's examples/ folder."""
    here = Path(__file__).resolve().parents[1]  # the keel package
    for candidate in (here / "_examples" / name, here.parents[1] / "examples" / name):
        if (candidate / "workflow.py").is_file():
            return candidate
    raise NotFoundError(f"example {name!r} is not installed with this copy of keel")


def labels(path: Path, key: str = "id", label: str = "category") -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        return {row[key]: row[label] for row in csv.DictReader(fh)}


group = typer.Typer(help="The support_triage demo on real Banking77 messages (`keel demo`), "
                         "the release story (`keel demo releases`) and invoice intake from "
                         "scanned documents (`keel demo invoice_intake`).",
                    invoke_without_command=True, no_args_is_help=False)


@group.callback()
def demo_cmd(ctx: typer.Context, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Run the support_triage demo: train the model if needed, decide 1,580 real messages
    (`keel demo releases`: the release story)."""
    if ctx.invoked_subcommand is not None:
        return
    from keel.store import realized_accuracy  # start-up: see keel.cli

    ex = example_dir()
    traffic = ex / "data" / "traffic.csv"  # no labels: the model and reviewers never see them
    if not as_json:
        console.print(f"[bold]keel demo[/]: {ex / 'workflow.py'} on {traffic.name} "
                      "(Banking77, CC BY 4.0). The first run trains the model (about 15 s).")
    store = keel.Store.open(db)
    try:
        with progress_bar("deciding", not as_json) as tick:
            summary = keel.run(ex / "workflow.py", traffic, store=store, progress=tick)
        truth = labels(ex / "data" / "traffic_labels.csv")
        acc = realized_accuracy(store, "support_triage", truth)
    finally:
        store.close()
    if as_json:
        print_json({"summary": summary.as_dict(), "accuracy": acc})
        return
    render_summary(summary)
    if acc["accuracy_automated"] is not None:
        console.print(
            f"[bold green]automated {acc['automated']:,} of {acc['labelled_records']:,} "
            f"({acc['coverage']:.1%}); accuracy of automated decisions against the held-back "
            f"labels: {acc['accuracy_automated']:.1%}[/]")
    console.print("\nNext: [bold]keel trace b77-00001[/] (one message's whole story), "
                  "[bold]keel status[/] (the workflow at a glance), "
                  "[bold]keel quarantine[/] (bad input).")


#: The release story's own store (it starts from nothing each time it is told).
STORY_DB = Path(".keel") / "release-story.db"


@group.command("releases")
def releases_cmd(
    db: Annotated[str | None, typer.Option(
        "--db", help=f"Store for the story (default: {STORY_DB}, started afresh; a store "
                     "given here must not hold the demo's records yet).")] = None,
    as_json: JsonOption = False,
) -> None:
    """The release story: retrain from reviewers' labels, evaluate against the champion,
    shadow, canary to 100% and promote; then a broken candidate, rolled back on its own.
    Reviewers are simulated from the held-back labels. About a minute; trains three models."""
    if db is None:
        STORY_DB.parent.mkdir(parents=True, exist_ok=True)
        STORY_DB.unlink(missing_ok=True)
        db = str(STORY_DB)
    store = keel.Store.open(db)
    try:
        held = keel.status(store=store, workflow="support_triage")[0]["records"]
    finally:
        store.close()
    if held:
        raise UserError(f"the store at {db} already holds {held:,} support_triage records; "
                        "the release story needs a store of its own (leave out --db)")
    ex = example_dir()
    story = _load(ex / "release_story.py")
    lines: list[str] = []

    def say(line: str) -> None:
        lines.append(line)
        if not as_json:
            console.print(line, markup=False)

    out = story.tell(db, say=say)
    if as_json:
        print_json({**out, "lines": lines})
    else:
        console.print(f"The story's store: {db} (e.g. `keel releases history --db {db}`)",
                      markup=False)


def _load(path: Path, name: str = "keel_release_story") -> Any:
    """Import an example's module (its folder on the path: it imports its neighbours)."""
    folder = str(path.parent)
    sys.path.insert(0, folder)
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses and worker processes look it up there
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


#: Where `keel demo invoice_intake` keeps the documents it generates (made once per count and seed).
INVOICES = Path(".keel") / "invoice_intake"


@group.command("invoice_intake")
def invoice_cmd(
    db: DbOption = None,
    as_json: JsonOption = False,
    count: Annotated[int, typer.Option("--count", min=1, help="Documents to generate and read.")] = 500,
    seed: Annotated[int, typer.Option("--seed", help="The generator's seed.")] = 7,
    docs: Annotated[str | None, typer.Option(
        "--docs", help=f"Folder for the generated documents (default: {INVOICES}/COUNT-SEED; "
                       "generated when it holds none).")] = None,
) -> None:
    """Invoice intake: generate scanned-looking invoices (about 10% bad documents), OCR them
    with Tesseract, extract and check their fields, route them; then score the automatic
    decisions against the generator's ground truth (which keel never sees)."""
    import os

    from keel.store.queries import decisions_by_key  # start-up: see keel.cli

    ex = example_dir("invoice_intake")
    folder = Path(docs) if docs else INVOICES / f"{count}-{seed}"
    listing = folder / "documents.jsonl"
    gen = _load(ex / "generate.py", "keel_invoice_generate")
    if not listing.is_file() or not (folder / "truth.jsonl").is_file():
        if not as_json:
            console.print(f"generating {count:,} documents in {folder} (once; seed {seed}) ...")
        gen.generate(folder, count, seed)
    wf = keel.load_workflow(ex / "workflow.py")
    ocr = wf.planned_steps[0].model
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if not as_json:
        console.print(f"[bold]keel demo invoice_intake[/]: {ex / 'workflow.py'} on {listing} "
                      f"(OCR on {cores} cores)")
    store = keel.Store.open(db)
    try:
        with progress_bar("reading", not as_json) as tick:
            summary = keel.run(wf, listing, store=store, progress=tick, batch_size=2 * cores)
        scored = _load(ex / "score.py", "keel_invoice_score").score(
            decisions_by_key(store, "invoice_intake"), folder / "truth.jsonl")
    finally:
        store.close()
    decided = summary.decided or 1
    out = {"summary": summary.as_dict(), "documents_read": summary.read,
           "dispositions": summary.counts, "ocr_calls": getattr(ocr, "calls", None),
           "review_share": round(summary.counts["in_review"] / decided, 4),
           "quarantine_reasons": dict(summary.quarantine_reasons), **scored}
    if as_json:
        print_json(out)
        return
    render_summary(summary)
    _say_invoice_score(out)


def _say_invoice_score(out: dict[str, Any]) -> None:
    acc = out["field_accuracy_automatic"]
    share = out["automatic_share_of_good"]
    console.print(f"OCR calls this run: {out['ocr_calls']}; sent to review: "
                  f"{out['review_share']:.1%} of decided documents")
    if acc is not None and share is not None:
        console.print(f"[bold green]decided automatically: {out['good_decided_automatically']:,} "
                      f"of {out['good_documents']:,} good invoices ({share:.1%}); field accuracy "
                      f"against the ground truth: {acc:.2%} of {out['fields_checked']:,} fields[/]")
    for kind, ends in out["bad_documents"].items():
        console.print(f"bad document kind {kind}: " + ", ".join(f"{d} {n}" for d, n in ends.items()))
    console.print("\nNext: [bold]keel trace doc-00001[/] (one invoice step by step), "
                  "[bold]keel review[/] (the invoices waiting for a person), "
                  "[bold]keel quarantine[/] (files that could not be read).")
