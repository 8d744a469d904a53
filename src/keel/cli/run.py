"""keel run, keel replay, keel demo."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

import keel
from keel.cli import _telemetry as tel
from keel.cli._common import (
    DbOption,
    HeaderOption,
    JsonOption,
    console,
    fmt_cost,
    fmt_ms,
    parse_headers,
    print_json,
)

if TYPE_CHECKING:
    from keel.runtime import ProgressFn, RunSummary


@contextlib.contextmanager
def progress_bar(label: str, enabled: bool, total: int | None = None) -> Iterator[ProgressFn | None]:
    if not enabled or not console.is_terminal:
        yield None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                  MofNCompleteColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def render_summary(s: RunSummary) -> None:
    d = s.as_dict()
    table = Table(title=f"{s.workflow}: {s.read:,} records read from {s.source}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, count in d["dispositions"].items():
        if count or name in ("accepted", "in_review", "quarantined", "failed"):
            table.add_row(name.replace("_", " "), f"{count:,}")
    table.add_row("already decided (skipped)", f"{s.duplicates:,}")
    if s.conflicts:
        table.add_row("[yellow]key reused with other content[/]", f"{s.conflicts:,}")
    lat = d["latency_ms"]
    table.add_row("latency per record p50 / p95", f"{fmt_ms(lat['p50'])} / {fmt_ms(lat['p95'])}")
    table.add_row("cost", fmt_cost(d["cost_usd"], d["cost_unknown_records"]))
    table.add_row("throughput", f"{d['records_per_s'] or 0:,.0f} records/s")
    console.print(table)
    for title, counter in (("quarantined", s.quarantine_reasons), ("failed", s.failure_causes),
                           ("sent to review", s.review_reasons)):
        if counter:
            reasons = ", ".join(f"{k} ({v})" for k, v in counter.most_common(5))
            console.print(f"[bold]{title}:[/] {reasons}")
    if s.conflicts:
        console.print(f"[yellow]{s.conflicts} row(s) reused a key already decided from other "
                      "content:[/] each is quarantined as KEY~conflict-...; `keel quarantine` "
                      "lists them with both versions' records")
    if s.dead_letters:
        console.print(f"[yellow]{s.dead_letters} deliveries failed:[/] see `keel deliveries "
                      "--failed`, then `keel deliveries retry`")
    if s.updates_delivered:
        console.print(f"[bold]sinks:[/] {s.updates_delivered} decision(s) owed from an earlier "
                      "run (changed by review, or decided by a run that stopped before sending "
                      "them) were sent first")
    if s.audit_samples:
        console.print(f"[bold]audit:[/] {s.audit_samples} accepted decisions sampled for review")
    if s.releases:
        console.print("[bold]releases:[/] " + ", ".join(
            f"{name} decided {n:,}" for name, n in s.releases.items()))
    for note in s.notes:
        console.print(f"[yellow]note:[/] {note}", markup=True)
    if s.retraining:
        r = s.retraining
        console.print(f"[bold]retraining policy:[/] {r.get('trigger')}: release "
                      f"{r.get('release')}; {r.get('action')}")


def _finish(summary: RunSummary, as_json: bool) -> None:
    tel.log_summary(summary)
    if as_json:
        print_json(summary.as_dict())
    else:
        render_summary(summary)
    if summary.counts.get("failed"):
        if not as_json:
            console.print("[yellow]some records failed; fix the cause, then "
                          "`keel replay WORKFLOW_PY --failed`[/]")
        raise typer.Exit(2)


def run_cmd(
    workflow_py: Annotated[Path, typer.Argument(help="Path to the workflow.py to run.")],
    input_file: Annotated[Path, typer.Argument(metavar="INPUT", help="CSV, JSONL or Parquet file.")],
    out: Annotated[Path | None,
                   typer.Option("--out", help="Write one line per record (.jsonl or .csv).")] = None,
    db: DbOption = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Records per batch.")] = 500,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="POST each decision to this URL (Idempotency-Key, retried).")] = None,
    webhook_header: HeaderOption = None,
    encoding: Annotated[str | None, typer.Option(
        "--encoding", help="INPUT's text encoding, e.g. latin-1 (default: a byte-order mark, "
                           "else UTF-16 by its zero bytes, else UTF-8).")] = None,
    as_json: JsonOption = False,
    otel: tel.OtelOption = None,
    otel_endpoint: tel.OtelEndpointOption = None,
    metrics_file: tel.MetricsFileOption = None,
    pushgateway: tel.PushgatewayOption = None,
    log_format: tel.LogFormatOption = "auto",
    log_level: tel.LogLevelOption = None,
) -> None:
    """Decide every record in INPUT (CSV, JSONL or Parquet; gzip, bzip2 or xz compressed or
    not) with the workflow; skip keys already decided."""
    opts = tel.TelemetryOptions(otel, otel_endpoint, metrics_file, pushgateway, log_format, log_level)
    with tel.session(opts, db) as telemetry, progress_bar("deciding", not as_json) as tick:
        summary = keel.run(workflow_py, input_file, db=db, out=out, batch_size=batch_size,
                           progress=tick, webhook=_hook(webhook, webhook_header),
                           telemetry=telemetry, encoding=encoding)
    _finish(summary, as_json)


def replay_cmd(
    workflow_py: Annotated[Path | None, typer.Argument(
        help="The (fixed) workflow.py; default: the file the store last ran.")] = None,
    quarantined: Annotated[bool, typer.Option("--quarantined", help="Replay quarantined records.")] = False,
    failed: Annotated[bool, typer.Option("--failed", help="Replay failed records.")] = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write one line per replayed record.")] = None,
    webhook: Annotated[str | None, typer.Option(
        "--webhook", help="POST each new decision to this URL.")] = None,
    webhook_header: HeaderOption = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    otel: tel.OtelOption = None,
    otel_endpoint: tel.OtelEndpointOption = None,
    metrics_file: tel.MetricsFileOption = None,
    pushgateway: tel.PushgatewayOption = None,
    log_format: tel.LogFormatOption = "auto",
    log_level: tel.LogLevelOption = None,
) -> None:
    """Re-process quarantined or failed records after the cause is fixed."""
    if quarantined == failed:
        raise keel.UserError("say what to replay: --quarantined or --failed")
    which = "quarantined" if quarantined else "failed"
    opts = tel.TelemetryOptions(otel, otel_endpoint, metrics_file, pushgateway, log_format, log_level)
    with tel.session(opts, db) as telemetry, progress_bar(f"replaying {which}", not as_json) as tick:
        summary = keel.replay(workflow_py, which, db=db, out=out, progress=tick,
                              telemetry=telemetry, webhook=_hook(webhook, webhook_header))
    _finish(summary, as_json)


def _hook(url: str | None, headers: list[str] | None) -> keel.WebhookSink | None:
    found = parse_headers(headers)
    if url is None:
        if found:
            raise keel.UserError("--webhook-header needs --webhook URL")
        return None
    return keel.WebhookSink(url, headers=found)


def register(app: typer.Typer) -> None:
    app.command("run")(run_cmd)
    app.command("replay")(replay_cmd)
    from keel.cli.demo import group as demo_group

    app.add_typer(demo_group, name="demo")
