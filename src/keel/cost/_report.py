"""Where the money went, what production will cost, and what a threshold costs.

:func:`report` reads the store: model cost per decision (every try, every step of the chain),
review cost (measured handling time, claim to decision, times the reviewer's rate), per
component, disposition and release; p50/p95 per decision; cost per correct automatic
decision from audited accuracy; the value of automation when declared.
:func:`project` scales what was measured to a volume per day, each figure with a 95%
interval from the measured variation. :func:`thresholds` prices each candidate threshold on
labelled data and marks the cheapest one that keeps the accuracy guarantee.
"""

from __future__ import annotations

import math
import re
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from keel._money import MONTH_DAYS as _MONTH_DAYS
from keel._money import Cost, parse_volume
from keel.errors import CostError, NotFoundError
from keel.review import learn_then_test, policy_in_force, scored_labels, threshold_curve
from keel.store import Store
from keel.store import cost as sql
from keel.store import reviews as review_sql
from keel.workflow import NEVER, Policy, Workflow

_DAY = 86400.0
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([mhd])$")


def parse_window(text: str | None, now: float) -> float | None:
    """``all`` (None), a duration (``90m``, ``24h``, ``30d``) or ``since:2026-01-31``: the
    earliest decision time to count."""
    if text is None or text.strip() == "all":
        return None
    text = text.strip()
    m = _DURATION.match(text)
    if m:
        return now - float(m.group(1)) * {"m": 60, "h": 3600, "d": _DAY}[m.group(2)]
    if text.startswith("since:"):
        try:
            return datetime.fromisoformat(text[6:]).timestamp()
        except ValueError:
            pass
    raise CostError(f"window {text!r}: use all, a duration like 24h or 30d, or since:2026-01-31")


@dataclass
class _Measured:
    """What the window's decisions say, per record."""

    decisions: list[dict[str, Any]]
    reviews: list[dict[str, Any]]
    review_usd: dict[str, float]
    handling_s: list[float]
    handling_source: str | None
    rate: float | None


def _measure(wf: Workflow, store: Store, since: float | None) -> _Measured:
    cost = wf.cost or Cost()
    rows = sql.decision_rows(store, wf.name, since)
    reviews = sql.review_rows(store, wf.name, since)
    measured = [r["handling_s"] for r in reviews if r["handling_s"] is not None]
    rate = cost.reviewer_usd_per_hour
    source = "measured" if measured else ("declared" if cost.review_s_per_task is not None
                                          else None)
    per_record: dict[str, float] = defaultdict(float)
    if rate is not None:
        for r in reviews:
            secs = r["handling_s"] if r["handling_s"] is not None else cost.review_s_per_task
            if secs is not None:
                per_record[r["record_id"]] += secs / 3600.0 * rate
    return _Measured(rows, reviews, dict(per_record), measured, source, rate)


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def report(wf: Workflow, store: Store, *, window: str | None = None,
           now: float | None = None) -> dict[str, Any]:
    """Where the money went over ``window`` (see :func:`parse_window`)."""
    now = time.time() if now is None else now
    since = parse_window(window, now)
    m = _measure(wf, store, since)
    cost = wf.cost or Cost()
    model = sum(r["cost_usd"] for r in m.decisions)
    fallback = sum(r["fallback_usd"] for r in m.decisions)
    review = sum(m.review_usd.values()) if m.rate is not None else None
    unknown = sum(1 for r in m.decisions if r["unknown"])
    per_decision = [r["cost_usd"] + m.review_usd.get(r["record_id"], 0.0) for r in m.decisions]
    with store.engine.connect() as conn:
        acc = review_sql.audit_accuracy(conn, wf.name, since=since)
    out: dict[str, Any] = {
        "workflow": wf.name, "window": window or "all", "currency": cost.currency,
        "prices": _prices_note(wf), "decisions": len(m.decisions),
        "components": {"model_usd": model - fallback, "fallback_usd": fallback,
                       "review_usd": review,
                       "total_usd": model + (review or 0.0)},
        "unknown_cost_decisions": unknown,
        "review": _review_summary(m, cost),
        "by_disposition": _grouped(m, "disposition"),
        "by_release": _grouped(m, "release_id"),
        "per_decision_usd": {"p50": _pct(per_decision, 50), "p95": _pct(per_decision, 95),
                             "mean": float(np.mean(per_decision)) if per_decision else None},
        "audited_accuracy": acc,
    }
    out["cost_per_correct_automatic_usd"] = _per_correct(m, acc)
    out["days"] = _span_days(m.decisions, since, now)
    out["value"] = _value(m, cost, acc, out["days"])
    out["budgets"] = budget_state(wf, store, now=now)
    return out


def _prices_note(wf: Workflow) -> dict[str, Any]:
    if wf.cost is None:
        return {"source": "model adapters (no keel.Cost declared)", "version": None}
    table = wf.cost.table(_base(wf))
    return {"source": "declared", "version": table.version, "entries": len(table)}


def _base(wf: Workflow) -> Path | None:
    return Path(wf.source_path).parent if wf.source_path else None


def _review_summary(m: _Measured, cost: Cost) -> dict[str, Any]:
    secs = m.handling_s
    return {"tasks_decided": len(m.reviews), "tasks_measured": len(secs),
            "handling_s_mean": float(np.mean(secs)) if secs else cost.review_s_per_task,
            "handling_s_p50": _pct(secs, 50), "handling_source": m.handling_source,
            "reviewer_usd_per_hour": m.rate,
            "hours": (sum(secs) + (len(m.reviews) - len(secs)) * (cost.review_s_per_task or 0.0))
            / 3600.0}


def _grouped(m: _Measured, key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for r in m.decisions:
        g = groups.setdefault(str(r[key]), {"decisions": 0, "model_usd": 0.0, "review_usd": 0.0})
        g["decisions"] += 1
        g["model_usd"] += r["cost_usd"]
        g["review_usd"] += m.review_usd.get(r["record_id"], 0.0)
    for g in groups.values():
        g["total_usd"] = g["model_usd"] + g["review_usd"]
        g["per_decision_usd"] = g["total_usd"] / g["decisions"]
    return groups


def _per_correct(m: _Measured, acc: dict[str, Any]) -> float | None:
    """Spend on automatic decisions (their model calls and their audits) per correct one."""
    auto = [r for r in m.decisions if r["disposition"] == "accepted"]
    if not auto or acc["accuracy"] is None or acc["accuracy"] == 0:
        return None
    spend = sum(r["cost_usd"] + m.review_usd.get(r["record_id"], 0.0) for r in auto)
    return float(spend / (len(auto) * acc["accuracy"]))


def _span_days(rows: list[dict[str, Any]], since: float | None, now: float) -> float:
    """Days the window's decisions span: from the window's start or the first decision,
    whichever is later (a workflow two days old has two days in a 30d window); at least one."""
    if not rows:
        return 1.0
    first = float(min(r["decided_at"] for r in rows))
    start = first if since is None else max(since, first)
    return max((now - start) / _DAY, 1.0)  # a window shorter than a day counts as one


def _value(m: _Measured, cost: Cost, acc: dict[str, Any], days: float) -> dict[str, Any] | None:
    """What automation was worth: manual work saved, value minus model, review, error costs;
    in the window and per day."""
    if cost.manual_handling_s is None and cost.value_per_record_usd is None:
        return None
    auto = sum(1 for r in m.decisions if r["disposition"] == "accepted")
    wrong = auto * (1 - acc["accuracy"]) if acc["accuracy"] is not None else None
    errors = (wrong * cost.wrong_decision_usd if wrong is not None and
              cost.wrong_decision_usd is not None else None)
    value = auto * cost.value_per_record_usd if cost.value_per_record_usd is not None else None
    model = sum(r["cost_usd"] for r in m.decisions)
    review = sum(m.review_usd.values())
    net = None if value is None else value - model - review - (errors or 0.0)
    hours = auto * cost.manual_handling_s / 3600.0 if cost.manual_handling_s else None
    parts = {"value_usd": value, "model_usd": model, "review_usd": review,
             "errors_usd": errors, "net_usd": net, "manual_hours_saved": hours}
    return {"automatic_decisions": auto, **parts, "days": days,
            "net_usd_per_day": None if net is None else net / days,
            "per_day": {k: None if v is None else v / days for k, v in parts.items()}}


def budget_state(wf: Workflow, store: Store, *, now: float | None = None) -> list[dict[str, Any]]:
    """Each declared budget in its current window: limit, spent, reserved, remaining."""
    now = time.time() if now is None else now
    stored = {(r["period"], r["window"]): r for r in sql.windows(store, wf.name)}
    out = []
    for b in (wf.cost.budgets if wf.cost else ()):
        win = b.window(now)
        r = stored.get((b.period, win), {})
        spent, reserved = r.get("spent_usd", 0.0), r.get("reserved_usd", 0.0)
        toks = r.get("spent_tokens", 0) + r.get("reserved_tokens", 0)
        out.append({"period": b.period, "window": win, "limit_usd": b.usd,
                    "limit_tokens": b.tokens, "spent_usd": spent, "reserved_usd": reserved,
                    "spent_tokens": r.get("spent_tokens", 0), "refused": r.get("refused", 0),
                    "remaining_usd": None if b.usd is None else max(b.usd - spent - reserved, 0.0),
                    "remaining_tokens": None if b.tokens is None else max(b.tokens - toks, 0)})
    return out


def outlook(wf: Workflow, store: Store, *, window: str = "7d", volume: str | float | None = None,
            now: float | None = None) -> dict[str, Any]:
    """What the dashboard shows: spend against each budget, spend and the net value of
    automation per day over ``window`` (:func:`report`), and the projection (:func:`project`)
    to ``volume``, by default the declared ``Cost(target_volume=...)``. Wrong decisions come
    from audits only: a refresh never asks the model again (``keel cost --project`` may)."""
    now = time.time() if now is None else now
    rep = report(wf, store, window=window, now=now)
    days = rep["days"]
    volume = volume if volume is not None else (wf.cost.target_volume if wf.cost else None)
    out: dict[str, Any] = {
        "workflow": wf.name, "window": window, "decisions": rep["decisions"],
        "budgets": [{**b, "spent_share": None if not b["limit_usd"] else
                     b["spent_usd"] / b["limit_usd"]} for b in rep["budgets"]],
        "spend": {"total_usd": rep["components"]["total_usd"], "days": days,
                  "total_usd_per_day": rep["components"]["total_usd"] / days,
                  "unknown_cost_decisions": rep["unknown_cost_decisions"]},
        "value": rep["value"], "volume": None if volume is None else str(volume),
        "projection": None, "projection_note": None,
    }
    if volume is None:
        out["projection_note"] = ("no target volume: declare keel.Cost(target_volume="
                                  "'50000/day') or ask with ?project=50000/day")
        return out
    try:
        out["projection"] = project(wf, store, volume, window=window, now=now,
                                    ask_model=False)
    except (NotFoundError, CostError) as exc:
        out["projection_note"] = exc.message
    return out


# -- projection --------------------------------------------------------------------------------
def _mean_ci(values: list[float]) -> tuple[float, float, float]:
    """Mean and a 95% interval for it (normal approximation; one value: no spread)."""
    arr = np.asarray(values, dtype=np.float64)
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, mean, mean
    half = 1.96 * float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return mean, max(mean - half, 0.0), mean + half


def _share_ci(hits: int, n: int) -> tuple[float, float, float]:
    ci = review_sql.exact_ci(hits, n) or [0.0, 1.0]
    return hits / n, ci[0], ci[1]


def _scale(k: float, *figs: tuple[float, float, float]) -> dict[str, float]:
    est, lo, hi = k, k, k
    for f in figs:
        est, lo, hi = est * f[0], lo * f[1], hi * f[2]
    return {"estimate": est, "low": lo, "high": hi}


def project(wf: Workflow, store: Store, volume: str | float, *, window: str | None = None,
            labels_file: str | Path | None = None, label_column: str | None = None,
            now: float | None = None, ask_model: bool = True) -> dict[str, Any]:
    """What ``volume`` records a day would cost, from what the store measured.
    ``ask_model=False``: the error rate comes from audits only, never from the model
    answering the labelled file again (the dashboard's refresh must not call a paid model)."""
    per_day = parse_volume(volume)
    now = time.time() if now is None else now
    cost = wf.cost or Cost()
    m = _measure(wf, store, parse_window(window, now))
    rows = [r for r in m.decisions if r["disposition"] != "quarantined"]
    if not rows:
        raise NotFoundError(f"no decisions of {wf.name} in the window to project from; run "
                            "the workflow first (keel run) or widen --window")
    n = len(rows)
    model = _mean_ci([r["cost_usd"] for r in rows])
    routed = sum(1 for r in rows if r["disposition"] in ("reviewed", "in_review") or r["audit"])
    share = _share_ci(routed, n)
    auto = _share_ci(sum(1 for r in rows if r["disposition"] == "accepted"), n)
    handling = (_mean_ci(m.handling_s) if m.handling_s else
                (cost.review_s_per_task,) * 3 if cost.review_s_per_task is not None else None)
    out: dict[str, Any] = {
        "workflow": wf.name, "volume_per_day": per_day, "measured_on": n,
        "window": window or "all", "model_usd_per_day": _scale(per_day, model),
        "review_share": {"estimate": share[0], "low": share[1], "high": share[2]},
        "automatic_share": {"estimate": auto[0], "low": auto[1], "high": auto[2]},
        "handling_source": m.handling_source, "unknown_cost_decisions":
            sum(1 for r in rows if r["unknown"]),
    }
    hours = _scale(per_day / 3600.0, share, handling) if handling else None
    out["review_hours_per_day"] = hours
    out["reviewers_needed"] = (None if hours is None else
                               {k: math.ceil(v / cost.reviewer_hours_per_day)
                                for k, v in hours.items()})
    out["review_usd_per_day"] = (None if hours is None or m.rate is None else
                                 {k: v * m.rate for k, v in hours.items()})
    err, acc_source = _error_rate(wf, store, labels_file, label_column, ask_model=ask_model)
    out["accuracy_source"] = acc_source
    wrong = _scale(per_day, auto, err) if err is not None else None
    out["wrong_decisions_per_day"] = wrong
    out["errors_usd_per_day"] = (None if wrong is None or cost.wrong_decision_usd is None else
                                 {k: v * cost.wrong_decision_usd for k, v in wrong.items()})
    fixed = cost.infra_usd_per_month + cost.retrain_usd_per_run * cost.retrains_per_month
    out["fixed_usd_per_month"] = {"infra": cost.infra_usd_per_month,
                                  "retraining": cost.retrain_usd_per_run * cost.retrains_per_month}
    out["total_usd_per_month"] = {
        k: _MONTH_DAYS * (out["model_usd_per_day"][k]
                          + (out["review_usd_per_day"] or {}).get(k, 0.0)
                          + (out["errors_usd_per_day"] or {}).get(k, 0.0)) + fixed
        for k in ("estimate", "low", "high")}
    out["missing"] = _missing(cost, handling, err, ask_model)
    out["value"] = _projected_value(cost, per_day, auto, out)
    return out


def _error_rate(wf: Workflow, store: Store, labels_file: str | Path | None,
                label_column: str | None = None, *, ask_model: bool = True,
                ) -> tuple[tuple[float, float, float] | None, str | None]:
    """The error rate of automatic decisions: from audits (30 or more), else from labelled
    data at the policy's threshold (the model answers them again), else unknown."""
    with store.engine.connect() as conn:
        acc = review_sql.audit_accuracy(conn, wf.name)
    if acc["n"] >= 30:
        return _share_ci(acc["wrong"], acc["n"]), f"audits ({acc['n']})"
    file = labels_file or _labels_of(wf)
    if file is None or not ask_model:
        return None, None
    conf, right, source = scored_labels(wf, store, file,
                                        _label_column(wf, labels_file, label_column))
    threshold = _policy(wf, store).threshold
    above = conf >= threshold if threshold != NEVER else np.zeros(conf.shape, dtype=bool)
    n = int(above.sum())
    if n == 0:
        return None, None
    return (_share_ci(int((~right[above]).sum()), n),
            f"{source} at threshold {threshold:g} ({n} labelled above it)")


def _policy(wf: Workflow, store: Store) -> Policy:
    """The routing policy in force (a calibrated one, else the declared one)."""
    return policy_in_force(store, wf.name, wf.model.version, wf.policy)[0]


def _labels_of(wf: Workflow) -> Path | None:
    if wf.cost is None or wf.cost.labels is None:
        return None
    path = Path(wf.cost.labels)
    base = _base(wf)
    return path if path.is_absolute() or base is None else base / path


def _label_column(wf: Workflow, labels_file: str | Path | None,
                  given: str | None = None) -> str | None:
    """The declared label column applies to the declared labels file only."""
    if given is not None:
        return given
    return wf.cost.label_column if wf.cost is not None and labels_file is None else None


def _missing(cost: Cost, handling: Any, err: Any, ask_model: bool = True) -> list[str]:
    notes = []
    if cost.reviewer_usd_per_hour is None:
        notes.append("review cost: declare Cost(reviewer_usd_per_hour=...)")
    if handling is None:
        notes.append("review hours: no measured reviews; declare Cost(review_s_per_task=...)")
    if err is None and not ask_model and cost.labels is not None:
        notes.append("wrong decisions: fewer than 30 audits (here the model is not asked to "
                     "answer the labels file again; keel cost --project does)")
    elif err is None:
        notes.append("wrong decisions: fewer than 30 audits; declare Cost(labels=FILE) or "
                     "pass --labels")
    elif cost.wrong_decision_usd is None:
        notes.append("cost of errors: declare Cost(wrong_decision_usd=...)")
    return notes


def _projected_value(cost: Cost, per_day: float, auto: tuple[float, float, float],
                     out: dict[str, Any]) -> dict[str, Any] | None:
    if cost.manual_handling_s is None and cost.value_per_record_usd is None:
        return None
    hours = (per_day * auto[0] * cost.manual_handling_s / 3600.0
             if cost.manual_handling_s is not None else None)
    value = (per_day * auto[0] * cost.value_per_record_usd
             if cost.value_per_record_usd is not None else None)
    spend = (out["model_usd_per_day"]["estimate"]
             + (out["review_usd_per_day"] or {}).get("estimate", 0.0)
             + (out["errors_usd_per_day"] or {}).get("estimate", 0.0))
    return {"manual_hours_saved_per_day": hours, "value_usd_per_day": value,
            "net_usd_per_day": None if value is None else value - spend,
            "net_usd_per_month": None if value is None else _MONTH_DAYS * (value - spend)}


# -- thresholds ---------------------------------------------------------------------------------
def thresholds(wf: Workflow, store: Store, *, volume: str | float = "1000/day",
               target_accuracy: float | None = None, delta: float = 0.05,
               labels_file: str | Path | None = None, label_column: str | None = None,
               step: float = 0.05, window: str | None = None) -> dict[str, Any]:
    """Coverage, guaranteed accuracy, model cost, review hours and total cost per day for each
    candidate threshold, from labelled data; the cheapest certified threshold is marked."""
    per_day = parse_volume(volume)
    target = target_accuracy if target_accuracy is not None else (
        wf.gates.target_accuracy if wf.gates is not None else 0.95)
    if not 0.5 <= target < 1.0:
        raise CostError(f"target accuracy must be in [0.5, 1), got {target}")
    file = labels_file or _labels_of(wf)
    conf, right, source = scored_labels(wf, store, file,
                                        _label_column(wf, labels_file, label_column))
    if conf.size == 0:
        raise NotFoundError(f"no labelled examples for {wf.name}: review some records, "
                            "declare Cost(labels=FILE), or pass --labels FILE")
    cost = wf.cost or Cost()
    m = _measure(wf, store, parse_window(window, time.time()))
    rows = [r["cost_usd"] for r in m.decisions if r["disposition"] != "quarantined"]
    model_each = float(np.mean(rows)) if rows else 0.0
    handling = float(np.mean(m.handling_s)) if m.handling_s else cost.review_s_per_task
    chosen = learn_then_test(conf, right, target_accuracy=target, delta=delta)
    curve = threshold_curve(conf, right, delta=delta, step=step)
    best = None
    policy = _policy(wf, store)
    for row in curve:
        _price_row(row, cost, per_day, model_each, handling, policy.audit_rate)
        row["certified"] = chosen.threshold is not None and row["threshold"] >= chosen.threshold
        if row["certified"] and row["total_usd_per_day"] is not None and (
                best is None or row["total_usd_per_day"] < best["total_usd_per_day"]):
            best = row
    for row in curve:
        row["cheapest"] = row is best
    return {"workflow": wf.name, "labels": source, "n": int(conf.size),
            "target_accuracy": target, "delta": delta, "volume_per_day": per_day,
            "certified_threshold": chosen.threshold, "refusal": chosen.refusal,
            "cheapest": None if best is None else best["threshold"],
            "model_usd_per_record": model_each, "handling_s": handling,
            "current_threshold": None if policy.threshold == NEVER else policy.threshold,
            "rows": curve, "missing": _missing(cost, handling, True)}


def _price_row(row: dict[str, Any], cost: Cost, per_day: float, model_each: float,
               handling: float | None, audit_rate: float) -> None:
    c = row["coverage"]
    row["model_usd_per_day"] = per_day * model_each
    routed = per_day * ((1 - c) + c * audit_rate)
    row["review_hours_per_day"] = None if handling is None else routed * handling / 3600.0
    wrong = per_day * c * (1 - row["accuracy"]) if row["accuracy"] is not None else 0.0
    row["wrong_per_day"] = wrong
    review_usd = (None if row["review_hours_per_day"] is None or
                  cost.reviewer_usd_per_hour is None else
                  row["review_hours_per_day"] * cost.reviewer_usd_per_hour)
    errors_usd = wrong * cost.wrong_decision_usd if cost.wrong_decision_usd is not None else 0.0
    row["total_usd_per_day"] = (None if review_usd is None else
                                row["model_usd_per_day"] + review_usd + errors_usd)


# -- HTML ---------------------------------------------------------------------------------------
_FIGURES = [("model USD/day", "model_usd_per_day"), ("review hours/day", "review_hours_per_day"),
            ("reviewers needed", "reviewers_needed"), ("review USD/day", "review_usd_per_day"),
            ("wrong automatic decisions/day", "wrong_decisions_per_day"),
            ("cost of errors USD/day", "errors_usd_per_day"),
            ("total USD/month", "total_usd_per_month")]


def render_html(workflow: str, report: dict[str, Any] | None = None,
                projection: dict[str, Any] | None = None,
                curve: dict[str, Any] | None = None) -> str:
    """A cost report as one page; the threshold trade-off is plotted (inline SVG)."""
    import jinja2  # start-up: only for --html

    page = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                              autoescape=True).get_template("cost_report.html.j2")
    plot: dict[str, Any] = {}
    if curve:
        pts = [r for r in curve["rows"] if r["total_usd_per_day"] is not None]
        ymax = max((r["total_usd_per_day"] for r in pts), default=1.0) or 1.0

        def xy(r: dict[str, Any]) -> tuple[float, float]:
            return (50 + 570 * (1 - r["threshold"]), 260 - 240 * r["total_usd_per_day"] / ymax)

        best = next((r for r in pts if r["cheapest"]), None)
        plot = {"points": " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, pts)), "ymax": ymax,
                "ticks": [{"x": 50 + 570 * (1 - t) - 8, "label": f"{t:.1f}"}
                          for t in (1.0, 0.8, 0.6, 0.4, 0.2, 0.0)],
                "best": None if best is None else
                {"x": xy(best)[0], "y": xy(best)[1], "label": f"{best['threshold']:.2f}"}}
    return page.render(workflow=workflow, report=report, projection=projection, curve=curve,
                       figures=_FIGURES, **plot)


# -- Prometheus ---------------------------------------------------------------------------------
def metrics_text(wf: Workflow, store: Store, *, window: str = "24h") -> bytes:
    """Gauges for ``/metrics``, read from the store at scrape time: spend by component over
    ``window``, the value of automation (when declared), and each budget's remaining room."""
    from prometheus_client import CollectorRegistry, Gauge, generate_latest  # start-up: serve

    reg = CollectorRegistry()
    name = wf.name
    spent = Gauge("keel_cost_window_usd", f"Spend over the last {window}, by component.",
                  ["workflow", "component"], registry=reg)
    rep = report(wf, store, window=window)
    comps = rep["components"]
    for comp in ("model", "fallback", "review"):
        value = comps[f"{comp}_usd"]
        if value is not None:
            spent.labels(name, comp).set(value)
    Gauge("keel_cost_unknown_decisions", f"Decisions over the last {window} whose model cost is "
          "unknown (no price)", ["workflow"], registry=reg).labels(name).set(
        rep["unknown_cost_decisions"])
    value = rep["value"]
    if value and value["net_usd"] is not None:
        Gauge("keel_value_net_usd", f"Value of automation minus model, review and error costs "
              f"over the last {window}", ["workflow"], registry=reg).labels(name).set(
            value["net_usd"])
    remaining = Gauge("keel_budget_remaining_usd", "USD left in the budget's current window",
                      ["workflow", "period"], registry=reg)
    remaining_t = Gauge("keel_budget_remaining_tokens", "Tokens left in the current window",
                        ["workflow", "period"], registry=reg)
    refused = Gauge("keel_budget_refused_records", "Records turned away in the current window",
                    ["workflow", "period"], registry=reg)
    for b in rep["budgets"]:
        if b["remaining_usd"] is not None:
            remaining.labels(name, b["period"]).set(b["remaining_usd"])
        if b["remaining_tokens"] is not None:
            remaining_t.labels(name, b["period"]).set(b["remaining_tokens"])
        refused.labels(name, b["period"]).set(b["refused"])
    return bytes(generate_latest(reg))
