"""keel releases, keel release, keel rollback, keel eval, keel rollout: what decides records,
how a new release is evaluated and tried on live traffic, promoted or taken back."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

import keel
from keel.cli._common import DbOption, JsonOption, console, fmt_time, print_json
from keel.errors import NotFoundError, UserError

if TYPE_CHECKING:
    from keel.store import Store
    from keel.workflow import Workflow

releases_app = typer.Typer(help="Releases: what exists, what was live when.",
                           no_args_is_help=True)
release_app = typer.Typer(help="Register a release, promote one to champion.",
                          no_args_is_help=True)
rollout_app = typer.Typer(help="Try a challenger on live traffic: shadow, canary, "
                               "promote or roll back on the evidence.", no_args_is_help=True)

WorkflowPy = Annotated[Path, typer.Argument(help="Path to the workflow.py.")]
WorkflowOpt = Annotated[str | None, typer.Option(
    "--workflow", "-w", help="Workflow name or workflow.py (default: the store's only one).")]
ReasonOpt = Annotated[str | None, typer.Option("--reason", help="Why: kept on the audit trail.")]


def _open(db: str | None) -> Store:
    return keel.Store.open(db)


def _workflow(store: Store, which: str | Path | None) -> Workflow:
    """A workflow by path, or by name from the store (loaded from where it last ran)."""
    from keel.store import queries  # start-up: see keel.cli

    if which is not None and (str(which).endswith(".py") or Path(which).is_file()):
        return keel.load_workflow(which)
    sources = queries.workflow_sources(store)
    if which is None:
        if len(sources) != 1:
            names = ", ".join(sorted(sources)) or "none yet"
            raise UserError(f"say which workflow with -w NAME (workflows in the store: {names})")
        which = next(iter(sources))
    path = sources.get(str(which))
    if str(which) not in sources:
        raise NotFoundError(f"no workflow {which!r} in the store; workflows: "
                            f"{', '.join(sorted(sources)) or 'none yet'}")
    if not path or not Path(path).is_file():
        raise UserError(f"{which}'s workflow file ({path}) is not here; pass its workflow.py")
    return keel.load_workflow(path)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


# -- keel releases --------------------------------------------------------------------------
@releases_app.command("list")
def list_cmd(workflow: WorkflowOpt = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Every release of a workflow: aliases, model version, records decided."""
    from keel import releases  # start-up: see keel.cli

    store = _open(db)
    try:
        wf = _workflow(store, workflow)
        rows = releases.listing(store, wf.name)
    finally:
        store.close()
    if as_json:
        print_json([{k: v for k, v in r.items() if k != "spec"} for r in rows])
        return
    table = Table("name", "aliases", Column("model version", overflow="fold"),
                  Column("decided", justify="right"), "threshold", "created", "by",
                  Column("note", overflow="fold"), title=f"releases of {wf.name}")
    for r in rows:
        table.add_row(r["name"], ", ".join(r["aliases"]) or "-", r["model_version"],
                      f"{r['decided']:,}", str(r["spec"]["policy"]["threshold"]),
                      fmt_time(r["created_at"]), r["created_by"] or "-", r["note"] or "")
    console.print(table)


@releases_app.command("show")
def show_cmd(name: Annotated[str, typer.Argument(help="Release name or id.")],
             workflow: WorkflowOpt = None, db: DbOption = None,
             as_json: JsonOption = False) -> None:
    """One release: its model, prompt, contract, policy, fallback chain and evaluations."""
    from keel import releases  # start-up: see keel.cli
    from keel.store import releases as sql  # start-up: see keel.cli

    store = _open(db)
    try:
        wf = _workflow(store, workflow)
        rel = releases.get(store, wf.name, name)
        aliases = [a for a, rid in sql.aliases(store, wf.name).items() if rid == rel.id]
        evals = sql.eval_runs(store, wf.name, rel.id)
        decided = sql.release_counts(store, wf.name, [rel.id]).get(rel.id, 0)
    finally:
        store.close()
    out = {**rel.as_dict(), "aliases": aliases, "decided": decided,
           "evaluations": [{"id": e["id"], "at": e["created_at"], "rows": e["rows"],
                            "data_hash": e["data_hash"], "against": e["against_id"],
                            "verdict": (e["metrics"].get("comparison") or {}).get("verdict")}
                           for e in evals]}
    if as_json:
        print_json(out)
        return
    spec = rel.spec
    console.print(f"[bold]{rel.name}[/] ({rel.id}) of {wf.name}"
                  f"{' - ' + ', '.join(aliases) if aliases else ''}")
    console.print(f"  model      {spec['model']['name']} {rel.model_version} "
                  f"(training data {spec['model'].get('training_data_hash') or '-'})")
    if spec.get("prompt"):
        console.print(f"  prompt     {spec['prompt']['text']}", markup=False)
    oc = spec["output_contract"]
    console.print(f"  contract   {oc['schema']} ({oc['schema_hash']}), checks: "
                  f"{', '.join(oc['checks']) or '-'}")
    p = spec["policy"]
    console.print(f"  policy     threshold {p['threshold']}, audit rate {p['audit_rate']}, "
                  f"on model failure {p['on_model_failure']}")
    console.print("  fallback   " + (", ".join(f"{f['name']} ({f['version']})"
                                            for f in spec["fallback"]) or "-"))
    console.print(f"  runnable   {'yes (model stored)' if rel.artifact else 'only as declared'}"
                  f"; decided {decided:,} records; made {fmt_time(rel.created_at)} by "
                  f"{rel.created_by or '-'}: {rel.note or ''}")
    for e in out["evaluations"]:
        console.print(f"  eval {e['id']}  {fmt_time(e['at'])}  {e['rows']:,} rows  "
                      f"verdict {e['verdict'] or '-'}")


@releases_app.command("history")
def history_cmd(
    workflow: WorkflowOpt = None,
    at: Annotated[str | None, typer.Option(
        "--at", help="A past moment (ISO 8601, e.g. 2026-12-06T14:30:00Z): what was live then.")] = None,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Every registration, promotion, rollout step and rollback, with who, why and evidence."""
    from keel import releases  # start-up: see keel.cli
    from keel.store import releases as sql  # start-up: see keel.cli

    store = _open(db)
    try:
        wf = _workflow(store, workflow)
        until = releases.parse_when(at) if at else None
        events = releases.history(store, wf.name, until=until)
        names = {r["id"]: r["name"] for r in sql.releases(store, wf.name)}
        live = sql.aliases_at(store, wf.name, until) if until is not None else sql.aliases(store, wf.name)
    finally:
        store.close()
    live_named = {alias: names.get(rid, rid) for alias, rid in live.items()}
    if as_json:
        print_json({"workflow": wf.name, "at": until, "live": live_named, "events": events})
        return
    table = Table(Column("when", no_wrap=True), "event", "release", "by",
                  Column("why", overflow="fold"), title=f"release history of {wf.name}")
    for ev in events:
        table.add_row(fmt_time(ev["at"]), ev["kind"], ev["release"] or "-", ev["actor"] or "-",
                      ev["reason"] or "")
    console.print(table)
    when = f"at {fmt_time(until)}" if until is not None else "now"
    console.print(f"live {when}: " + (", ".join(f"{a} = [bold]{n}[/]"
                                               for a, n in sorted(live_named.items()))
                                      or "nothing yet"))


# -- keel release ---------------------------------------------------------------------------
@release_app.command("register")
def register_cmd(workflow_py: WorkflowPy,
                 name: Annotated[str | None, typer.Option(
                     "--name", help="A name (default r1, r2, ...).")] = None,
                 note: Annotated[str | None, typer.Option("--note", help="Why it was made.")] = None,
                 db: DbOption = None, as_json: JsonOption = False) -> None:
    """Register what the workflow file declares as a release (nothing goes live)."""
    from keel import releases  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _open(db)
    try:
        rel, new = releases.register(wf, store, name=name, note=note)
    finally:
        store.close()
    if as_json:
        print_json({**rel.as_dict(), "new": new})
        return
    verb = "registered" if new else "already registered as"
    console.print(f"{verb} [bold]{rel.name}[/] ({rel.short}): model {rel.model_version}. "
                  f"Next: `keel eval {workflow_py} --labels FILE --release {rel.name} "
                  f"--against champion`, then `keel rollout start {workflow_py} "
                  f"--challenger {rel.name} --canary 5,25,50,100`")


@release_app.command("promote")
def promote_cmd(name: Annotated[str, typer.Argument(help="Release name or id.")],
                workflow: WorkflowOpt = None, reason: ReasonOpt = None,
                db: DbOption = None, as_json: JsonOption = False) -> None:
    """Make a release the champion now (records in flight finish on the release that
    started them)."""
    from keel import releases  # start-up: see keel.cli

    store = _open(db)
    try:
        wf = _workflow(store, workflow)
        rel = releases.promote(wf, store, name, reason=reason)
    finally:
        store.close()
    if as_json:
        print_json({"champion": rel.name, "release_id": rel.id})
        return
    console.print(f"[bold]{rel.name}[/] is the champion of {wf.name}")


def rollback_cmd(workflow_py: WorkflowPy, reason: ReasonOpt = None, db: DbOption = None,
                 as_json: JsonOption = False) -> None:
    """Take back the last change: end a rollout under way, else move the champion back."""
    from keel import releases  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _open(db)
    try:
        out = releases.rollback(wf, store, reason=reason)
        champion = releases.champion_now(store, wf.name)
        assert champion is not None
    finally:
        store.close()
    if as_json:
        print_json({**out, "champion_name": champion.name})
        return
    if out["rolled_back"] == "rollout":
        console.print(f"rollout {out['rollout']} rolled back; {champion.name} decides everything")
    else:
        console.print(f"champion is [bold]{champion.name}[/] again")


# -- keel eval ------------------------------------------------------------------------------
def eval_cmd(
    workflow_py: WorkflowPy,
    labels: Annotated[Path, typer.Option("--labels", help="Labelled CSV, JSONL or Parquet file.")],
    label_column: Annotated[str | None, typer.Option(
        "--label-column", help="The column holding the right answer (default: the output's field).")] = None,
    release: Annotated[str | None, typer.Option(
        "--release", help="Release to evaluate (default: champion).")] = None,
    against: Annotated[str | None, typer.Option(
        "--against", help="Compare with this release, record by record.")] = None,
    slice_column: Annotated[str | None, typer.Option(
        "--slice", help="Report per value of this column too.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write an HTML report with plots.")] = None,
    confidence: Annotated[float, typer.Option(help="Confidence of the comparison's verdict.")] = 0.95,
    db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Evaluate releases on a labelled file through the production stages, without touching
    production records; stored as an eval run."""
    from keel import releases  # start-up: see keel.cli

    if not 0.5 < confidence < 1:
        raise UserError("--confidence is in (0.5, 1), e.g. 0.95")
    wf = keel.load_workflow(workflow_py)
    store = _open(db)
    try:
        with console.status("evaluating"):
            report = releases.evaluate(wf, store, labels, release=release, against=against,
                                       label_column=label_column, slice_column=slice_column,
                                       confidence=confidence)
    finally:
        store.close()
    out = report.as_dict()
    if html is not None:
        releases.write_html(out, html)
    if as_json:
        print_json(out)
        return
    _render_eval(out, html)


def _render_eval(out: dict[str, Any], html: Path | None) -> None:
    data = out["data"]
    table = Table("release", Column("accuracy", justify="right"), Column("coverage", justify="right"),
                  Column("auto-accepted accuracy", justify="right"), Column("ECE", justify="right"),
                  Column("model p50", justify="right"), Column("cost/record", justify="right"),
                  title=f"{out['workflow']}: {data['labelled']:,} labelled rows of {data['path']}")
    for name, m in out["releases"].items():
        table.add_row(name, _pct(m["accuracy"]), _pct(m["coverage"]),
                      f"{_pct(m['auto_accuracy'])} ({m['auto_accepted']:,})",
                      "-" if m["ece"] is None else f"{m['ece']:.3f}",
                      "-" if m["model_ms"]["p50"] is None else f"{m['model_ms']['p50']:.2f} ms",
                      f"${m['cost_per_record'] or 0:.6f}")
    console.print(table)
    c = out["comparison"]
    if c:
        mc = c["mcnemar"]
        auto, cover = c["auto_accuracy_difference"], c["coverage_difference"]
        console.print(f"[bold]{c['release']} vs {c['against']}: {c['verdict']}[/] at "
                      f"{c['confidence']:.0%} confidence")
        console.print(f"  accuracy {c['accuracy_difference']:+.1%} (only {c['release']} right "
                      f"{mc['release_only_right']}, only {c['against']} right "
                      f"{mc['against_only_right']}; McNemar exact p = {mc['p_value']:.4f})")
        console.print(f"  auto-accepted accuracy {_signed(auto['estimate'])} "
                      f"({_signed(auto['low'])} to {_signed(auto['high'])}); coverage "
                      f"{_signed(cover['estimate'])} ({_signed(cover['low'])} to "
                      f"{_signed(cover['high'])})")
    console.print(f"stored as eval run {out['eval_run']} ({out['elapsed_s']:.1f} s)"
                  + (f"; report: {html}" if html else ""))


def _signed(value: float | None) -> str:
    return "-" if value is None or value != value else f"{value:+.1%}"


# -- keel rollout ---------------------------------------------------------------------------
def _steps(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--canary {text!r}: give shares of traffic in percent, e.g. 5,25,50,100") from None


@rollout_app.command("start")
def start_cmd(
    workflow_py: WorkflowPy,
    challenger: Annotated[str, typer.Option("--challenger", help="The release to try.")],
    shadow: Annotated[bool, typer.Option(
        "--shadow", help="First answer all traffic in the shadow, acting on nothing.")] = False,
    canary: Annotated[str | None, typer.Option(
        "--canary", help="Shares of traffic in percent, step by step, e.g. 5,25,50,100.")] = None,
    reason: ReasonOpt = None, db: DbOption = None, as_json: JsonOption = False,
) -> None:
    """Start trying a challenger on live traffic (`keel run`, `keel serve` and workers)."""
    from keel import releases  # start-up: see keel.cli

    wf = keel.load_workflow(workflow_py)
    store = _open(db)
    try:
        releases.start(wf, store, challenger, shadow=shadow, canary=_steps(canary), reason=reason)
        out = releases.status(wf, store)
    finally:
        store.close()
    _render_status(out, as_json)


def _rollout_cmd(action: str, workflow: str | None, reason: str | None, db: str | None,
                 as_json: bool) -> None:
    from keel import releases  # start-up: see keel.cli

    store = _open(db)
    try:
        wf = _workflow(store, workflow)
        if action == "status":
            out = releases.status(wf, store)
        else:
            out = getattr(releases, action)(wf, store, reason=reason)
    finally:
        store.close()
    _render_status(out, as_json)


WorkflowArg = Annotated[str | None, typer.Argument(
    help="Workflow name or workflow.py (default: the store's only one).")]


@rollout_app.command("status")
def status_cmd(workflow: WorkflowArg = None, db: DbOption = None, as_json: JsonOption = False) -> None:
    """The champion, and the rollout: its step, its evidence, what it will do next."""
    _rollout_cmd("status", workflow, None, db, as_json)


@rollout_app.command("pause")
def pause_cmd(workflow: WorkflowArg = None, reason: ReasonOpt = None, db: DbOption = None,
              as_json: JsonOption = False) -> None:
    """Hold the rollout at its step (a rollback on the evidence still happens)."""
    _rollout_cmd("pause", workflow, reason, db, as_json)


@rollout_app.command("resume")
def resume_cmd(workflow: WorkflowArg = None, reason: ReasonOpt = None, db: DbOption = None,
               as_json: JsonOption = False) -> None:
    """Continue a paused rollout, or approve the canary after a passed shadow step."""
    _rollout_cmd("resume", workflow, reason, db, as_json)


@rollout_app.command("abort")
def abort_cmd(workflow: WorkflowArg = None, reason: ReasonOpt = None, db: DbOption = None,
              as_json: JsonOption = False) -> None:
    """End the rollout; the champion decides everything from the next batch."""
    _rollout_cmd("abort", workflow, reason, db, as_json)


def _render_status(out: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(out)
        return
    champ = out["champion"]
    if champ is None:
        console.print(f"{out['workflow']}: no champion yet (the first `keel run` makes one)")
        return
    console.print(f"{out['workflow']}: champion [bold]{champ['name']}[/] ({champ['model_version']})")
    ro = out["rollout"]
    if ro is None:
        console.print("no rollout yet")
        return
    steps = " -> ".join("shadow" if s == 0 else f"{s:g}%" for s in ro["steps"])
    where = "shadow" if ro["share"] == 0 else f"{ro['share']:g}% of traffic"
    console.print(f"rollout {ro['id']} of [bold]{ro['challenger']}[/]: {ro['status']}, "
                  f"step {ro['step'] + 1} of {len(ro['steps'])} ({where}); steps {steps}")
    ev = ro["evidence"]
    if not ev:
        return
    chal, champ, pairs = ev["challenger"], ev["champion"], ev["paired"]
    console.print(f"  {'next' if ro['active'] else 'last'}: [bold]{ev['verdict']}[/]: {ev['why']}")
    console.print(f"  answered by both: {pairs['records']:,}, differently: {pairs['differ']:,}; "
                  f"people labelled {pairs['labelled_differences']} disagreements (champion "
                  f"right {pairs['champion_right']}, challenger right "
                  f"{pairs['challenger_right']}); reviewed with both answers: {pairs['reviewed']}")
    console.print(f"  this step: challenger {chal['n']:,} (errors {_pct(chal['error_rate'])}, "
                  f"fallback {_pct(chal['fallback_rate'])}), champion {champ['n']:,} "
                  f"(errors {_pct(champ['error_rate'])}, fallback {_pct(champ['fallback_rate'])})")


def register(app: typer.Typer) -> None:
    app.add_typer(releases_app, name="releases")
    app.add_typer(release_app, name="release")
    app.add_typer(rollout_app, name="rollout")
    app.command("rollback")(rollback_cmd)
    app.command("eval")(eval_cmd)
