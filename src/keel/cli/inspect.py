"""keel status, keel trace, keel quarantine."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

import keel
from keel.cli._common import (
    DbOption,
    JsonOption,
    console,
    fmt_cost,
    fmt_ms,
    fmt_num,
    fmt_time,
    print_json,
)

RawOption = Annotated[bool, typer.Option(
    "--raw", help="Show personal data unmasked (admins only: the output is not redacted).")]


def status_cmd(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w", help="Only this workflow.")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Per workflow: dispositions, review backlog, latency, cost."""
    found = keel.status(db=db, workflow=workflow)
    if as_json:
        print_json(found)
        return
    if not found:
        console.print("no workflows in this store yet; start with `keel run` or `keel demo`")
        return
    for st in found:
        render_status(st)


def render_status(st: dict[str, Any]) -> None:
    table = Table(title=f"{st['workflow']} (version {st['version']})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("records", f"{st['records']:,}")
    for name, count in st["dispositions"].items():
        table.add_row(f"  {name.replace('_', ' ')}", f"{count:,}")
    queue = st.get("queue") or {}
    queued = int(queue.get("pending", 0)) + int(queue.get("leased", 0))
    if st["pending"] - queued > 0:
        table.add_row("  pending (interrupted run; run again to finish)",
                      f"{st['pending'] - queued:,}")
    if queued or queue.get("workers"):
        age = queue.get("oldest_pending_age_s")
        table.add_row("queued for workers (pending / leased)",
                      f"{queue['pending']:,} / {queue['leased']:,}")
        if age is not None:
            table.add_row("  oldest waiting", f"{age:,.0f} s")
        table.add_row("  live workers", f"{queue['workers']} ({queue['records_per_s']:,.1f} records/s)")
    backlog = st["review_backlog"]
    table.add_row("review backlog", f"{backlog['open']:,}")
    for reason, n in sorted(backlog["by_reason"].items()):
        table.add_row(f"  {reason}", f"{n:,}")
    if backlog["oldest_created_at"]:
        table.add_row("  oldest task", fmt_time(backlog["oldest_created_at"]))
    lat = st["latency_ms"]
    table.add_row("latency per record p50 / p95", f"{fmt_ms(lat['p50'])} / {fmt_ms(lat['p95'])}")
    unknown = st.get("cost_unknown") or {}
    table.add_row("cost", fmt_cost(st["cost_usd"], unknown.get("answers", 0), "answers"))
    if unknown.get("answers"):
        table.add_row("  tokens of unpriced answers (in / out)",
                      f"{unknown['input_tokens']:,} / {unknown['output_tokens']:,}")
    for cause, n in st["failures_by_cause"].items():
        table.add_row(f"failed: {cause}", f"{n:,}")
    for br in st.get("breakers") or []:
        since = f" since {fmt_time(br['opened_at'])}" if br["state"] != "closed" else ""
        table.add_row(f"breaker {br['name']} ({br['model_version']})",
                      f"{br['state'].replace('_', '-')}{since}")
    if st.get("releases"):
        _release_rows(table, st["releases"])
    if "guarantee" in st:
        _guarantee_rows(table, st)
    console.print(table)


def _release_rows(table: Table, rel: dict[str, Any]) -> None:
    table.add_row("live release", rel["champion"])
    ro = rel.get("rollout")
    if ro:
        where = "shadow" if ro["share"] == 0 else f"{ro['share']:g}% of traffic"
        table.add_row(f"  rollout of {ro['challenger']}",
                      f"{ro['status']}, step {ro['step']} of {ro['steps']} ({where})")
        if ro.get("verdict"):
            table.add_row("  last look", str(ro["verdict"]))
    for name, a in rel["agreement"].items():
        table.add_row(f"  reviewers kept {name}'s answers",
                      f"{a['agreed']:,} of {a['reviewed']:,} ({a['agreement']:.1%})")


def _guarantee_rows(table: Table, st: dict[str, Any]) -> None:
    g, real = st["guarantee"], st["realized_accuracy"]
    if g is None:
        table.add_row("guarantee", "none: thresholds as declared (`keel calibrate` certifies one)")
    else:
        thr = "never" if g["threshold"] is None else f"{g['threshold']:.3f}"
        extra = f" + {g['per_class']} per-class" if g["per_class"] else ""
        table.add_row("guarantee", f"accuracy >= {g['target_accuracy']:.1%} w.p. >= "
                      f"{1 - g['delta']:.0%} (policy {g['version']})")
        table.add_row("  threshold", f"{thr}{extra} ({g['method']}, {g['labels']:,} labels)")
        table.add_row("  expected coverage", f"{g['expected_coverage']:.1%}")
        if not g["in_force"]:
            table.add_row("  [yellow]not in force[/]", f"[yellow]calibrated for "
                          f"{g['model_version']}, live model is {g['live_model_version']}[/]")
    n = real["audited"]
    label = "realized accuracy (audits" + (f" under {real['policy_version']})" if
                                           real["policy_version"] else ")")
    if n:
        lo, hi = real["ci95"]
        table.add_row(label, f"{real['accuracy']:.1%} ({real['correct']}/{n}), "
                      f"95% CI {lo:.1%}-{hi:.1%}")
    else:
        table.add_row(label, "no audited decisions reviewed yet")


def _event_line(ev: dict[str, Any]) -> str:
    bits = []
    if ev.get("model_version"):
        bits.append(f"model {ev['model_version']}")
    if ev.get("latency_ms") is not None:
        bits.append(f"{ev['latency_ms']:.2f} ms")
    if ev.get("cost_usd"):
        bits.append(f"${ev['cost_usd']:.6f}")
    if ev.get("actor"):
        bits.append(f"by {ev['actor']}")
    detail = ev.get("detail") or {}
    for k, v in detail.items():
        bits.append(f"{k}={fmt_num(v)}")
    return ", ".join(str(b) for b in bits)


def _prompt_lines(pred: dict[str, Any]) -> None:
    """An LLM answer's prompt: its template, the variables it used, the text sent."""
    meta = pred.get("metadata") or {}
    if "prompt" not in meta:
        return
    console.print(f"[bold]prompt[/] of step {pred['step']} (model {pred['model_version']}):",
                  highlight=False)
    if meta.get("template"):
        console.print(f"  template: {meta['template']!r}", highlight=False, markup=False)
    if meta.get("variables"):
        shown = ", ".join(f"{k}={v!r}" for k, v in meta["variables"].items())
        console.print(f"  variables: {shown}", highlight=False, markup=False)
    if meta.get("system"):
        console.print(f"  system: {meta['system']!r}", highlight=False, markup=False)
    console.print(f"  sent: {meta['prompt']!r}", highlight=False, markup=False)
    conf = meta.get("confidence")
    if isinstance(conf, dict) and conf.get("strategy") == "SelfConsistency":
        console.print(f"  confidence: {conf['agree']} of {conf['samples']} samples agree "
                      f"(votes {fmt_num(conf['votes'])})", highlight=False, markup=False)
    elif isinstance(conf, dict) and conf.get("strategy") == "Judge" and "verdict" in conf:
        console.print(f"  confidence: judge {conf['model']} said "
                      f"{'correct' if conf['verdict'] else 'wrong'} "
                      f"({fmt_num(conf['judge_confidence'])})", highlight=False, markup=False)
    if meta.get("price") == "unknown":
        console.print("  cost: unknown (a model with no known price: pass price_per_mtok)",
                      highlight=False, markup=False)


def trace_cmd(
    key: Annotated[str, typer.Argument(help="The record's key (the workflow's key field).")],
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    raw: RawOption = False,
) -> None:
    """The full story of one record: every event in order (personal data masked)."""
    found = keel.trace(key, db=db, workflow=workflow, raw=raw)
    if as_json:
        print_json(found if len(found) > 1 else found[0])
        return
    for rec in found:
        dec = rec["decision"] or {}
        console.print(f"[bold]{rec['workflow']}[/] record [bold]{rec['key']}[/] "
                      f"(id {rec['record_id']}, from {rec['source']})")
        console.print(f"input: {rec['input']}")
        if dec:
            console.print(f"decision: [bold]{dec['disposition']}[/] output={dec['output']} "
                          f"confidence={fmt_num(dec['confidence'])} reason: {dec['reason']}"
                          + (f" (release {dec['release']})" if dec.get("release") else ""))
        table = Table("#", "when", "event", "detail")
        for ev in rec["events"]:
            table.add_row(str(ev["seq"]), fmt_time(ev["at"]), ev["kind"], _event_line(ev))
        console.print(table)
        for pred in rec["predictions"]:
            _prompt_lines(pred)
        for task in rec["review_tasks"]:
            console.print(f"review task {task['id']}: {task['reason']} ({task['status']})")


def quarantine_cmd(
    workflow: Annotated[str | None, typer.Option("--workflow", "-w")] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
    raw: RawOption = False,
) -> None:
    """Quarantined records with the reasons; fix, then `keel replay WORKFLOW_PY --quarantined`."""
    rows = keel.quarantined(db=db, workflow=workflow, raw=raw)
    if as_json:
        print_json(rows)
        return
    if not rows:
        console.print("nothing in quarantine")
        return
    table = Table("key", "source", "field", "rule", "message")
    for row in rows:
        for v in row["violations"]:
            table.add_row(row["key"], row["source"], v["field"], v["rule"], v["message"])
    console.print(table)
    console.print(f"{len(rows)} quarantined; after fixing the cause run "
                  "`keel replay WORKFLOW_PY --quarantined`")


def register(app: typer.Typer) -> None:
    app.command("status")(status_cmd)
    app.command("trace")(trace_cmd)
    app.command("quarantine")(quarantine_cmd)
