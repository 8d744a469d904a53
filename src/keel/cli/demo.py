"""keel demo: the support_triage example on 1,580 messages of Banking77's test split."""

from __future__ import annotations

import csv
from pathlib import Path

import keel
from keel.cli._common import DbOption, JsonOption, console, print_json
from keel.cli.run import progress_bar, render_summary
from keel.errors import NotFoundError


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


def demo_cmd(db: DbOption = None, as_json: JsonOption = False) -> None:
    """Run the support_triage demo: train the model if needed, decide 1,580 real messages."""
    from keel.store import realized_accuracy  # start-up: see keel.cli

    ex = example_dir()
    traffic = ex / "data" / "traffic.csv"  # no labels: the model and reviewers never see them
    if not as_json:
        console.print(f"[bold]keel demo[/]: {ex / 'workflow.py'} on {traffic.name} "
                      "(Banking77, CC BY 4.0). The first run trains the model (about 5 s).")
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
