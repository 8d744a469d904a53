"""The readiness criteria: each reads its evidence from the store and says pass, fail or
unknown, with the evidence and the command that would make it pass."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from keel.releases import champion_now
from keel.review import policy_in_force
from keel.store import Store
from keel.store import drift as drift_sql
from keel.store import gates as sql
from keel.store import releases as rel_sql
from keel.workflow import DEFAULT_RULES, NEVER, Criterion, Gates, Workflow

PASS, FAIL, UNKNOWN, NA = "pass", "fail", "unknown", "not applicable"


@dataclass
class Verdict:
    """One criterion's answer."""

    id: str
    section: str
    title: str
    needed_for: str
    status: str
    detail: str
    fix: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "section": self.section, "title": self.title,
                "needed_for": self.needed_for, "status": self.status, "detail": self.detail,
                "fix": self.fix, "evidence": self.evidence}


@dataclass
class Context:
    """What every criterion may read: the workflow, its store, its gate settings, now."""

    wf: Workflow
    store: Store
    gates: Gates
    now: float
    wf_arg: str

    def ago(self, ts: float) -> str:
        days = (self.now - ts) / 86400.0
        return f"{days:.1f} days ago" if days >= 1 else f"{(self.now - ts) / 3600.0:.1f} hours ago"


Check = Callable[[Context], tuple[str, str, str, dict[str, Any]]]
#: (id, section, title, needed for, check)
DEFAULTS: list[tuple[str, str, str, str, Check]] = []


def criterion(cid: str, section: str, title: str, needed_for: str) -> Callable[[Check], Check]:
    def add(fn: Check) -> Check:
        DEFAULTS.append((cid, section, title, needed_for, fn))
        return fn
    return add


# -- People -----------------------------------------------------------------------------------
@criterion("owners", "People", "business and support owners named", "mvp")
def _owners(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    o = c.wf.owners
    named = bool(o.business.strip()) and bool(o.support.strip())
    return ((PASS if named else FAIL), f"business {o.business or '-'}, support {o.support or '-'}",
            "set keel.Owners(business=..., support=...) in the workflow",
            {"business": o.business, "support": o.support})


@criterion("escalation", "People", "escalation path and review SLA set", "production")
def _escalation(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    esc = c.wf.owners.escalation
    sla = c.wf.policy.review_sla_s
    ok = bool(esc) and bool(sla)
    return ((PASS if ok else FAIL),
            f"escalation {esc or 'not set'}; review SLA for {len(sla)} reasons",
            "set keel.Owners(..., escalation='on-call@...') in the workflow",
            {"escalation": esc, "review_sla_s": dict(sla)})


def _signed(kind: str, title: str) -> Check:
    def check(c: Context) -> tuple[str, str, str, dict[str, Any]]:
        found = [s for s in sql.signatures(c.store, c.wf.name) if s["kind"] == kind]
        fix = (f"an approver signs: keel gate sign {c.wf_arg} --kind {kind} "
               f"--key APPROVER_KEY --note '...'")
        if not found:
            return FAIL, f"no {title} recorded", fix, {}
        s = found[0]
        if s["workflow_version"] and s["workflow_version"] != c.wf.version:
            return (FAIL, f"signed by {s['signer']} {c.ago(s['at'])} for workflow version "
                          f"{s['workflow_version']}; the workflow is now {c.wf.version}", fix,
                    {"signature": s["id"]})
        return PASS, f"signed by {s['signer']} {c.ago(s['at'])}", "", {"signature": s["id"],
                                                                       "signer": s["signer"]}
    return check


criterion("security_review", "People", "security review signed by an approver",
          "production")(_signed("security_review", "security review"))
criterion("operational_signoff", "People", "operational sign-off by an approver",
          "production")(_signed("operational_signoff", "operational sign-off"))


# -- Data -------------------------------------------------------------------------------------
@criterion("contracts", "Data", "input and output contracts declared, with named checks", "mvp")
def _contracts(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    wf = c.wf
    checks = [ch.name for ch in (*wf.input_checks, *wf.output_checks)]
    ok = bool(checks)
    return ((PASS if ok else FAIL),
            f"input {wf.input.__name__}, output {wf.output.__name__}; checks: "
            f"{', '.join(checks) or 'none'}",
            "add input_checks / output_checks (keel.check(...)) for the rules a record must keep",
            {"checks": checks})


@criterion("reference_profile", "Data", "a fresh reference profile for drift", "production")
def _profile(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    name = c.wf.monitor.reference if c.wf.monitor else "reference"
    found = drift_sql.load_profile(c.store, c.wf.name, name)
    fix = f"keel drift reference {c.wf_arg} --from TRAINING_DATA.csv"
    if found is None:
        return FAIL, "no reference profile", fix, {}
    pid, _profile_json, at = found
    if c.now - at > c.gates.profile_max_age_s:
        return (FAIL, f"profile {pid} made {c.ago(at)}: older than "
                      f"{c.gates.profile_max_age_s / 86400:g} days", fix, {"profile": pid})
    return PASS, f"profile {pid} made {c.ago(at)}", "", {"profile": pid, "at": at}


@criterion("eval_run", "Data", "an evaluation of the live release on enough labelled records",
           "mvp")
def _eval(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    live = champion_now(c.store, c.wf.name)
    fix = (f"keel eval {c.wf_arg} --labels LABELLED.csv (at least "
           f"{c.gates.min_eval_records} labelled rows)")
    if live is None:
        return UNKNOWN, "no live release yet (run the workflow once)", fix, {}
    runs = rel_sql.eval_runs(c.store, c.wf.name, live.id)
    enough = [r for r in runs
              if (r["metrics"].get("data") or {}).get("labelled", 0) >= c.gates.min_eval_records]
    if not enough:
        older = rel_sql.eval_runs(c.store, c.wf.name)
        why = ("evaluations exist only for other releases" if older
               else "no evaluation yet")
        return FAIL, f"{why} (live release {live.name}, needs {c.gates.min_eval_records} rows)", \
            fix, {"release": live.id}
    run = enough[0]
    if c.now - run["created_at"] > c.gates.eval_max_age_s:
        return FAIL, f"eval run {run['id']} of {live.name} is {c.ago(run['created_at'])}", fix, \
            {"eval_run": run["id"]}
    acc = (run["metrics"]["releases"].get(live.name) or {}).get("accuracy")
    return (PASS, f"eval run {run['id']} of {live.name} on "
                  f"{run['metrics']['data']['labelled']:,} labelled rows, accuracy "
                  f"{acc:.1%}" if acc is not None else f"eval run {run['id']}", "",
            {"eval_run": run["id"], "data_hash": run["data_hash"], "release": live.id})


# -- Model ------------------------------------------------------------------------------------
@criterion("fallback", "Model", "a fallback declared", "mvp")
def _fallback(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    chain = [m.name for m in c.wf.fallback_chain]
    return ((PASS if chain else FAIL), f"fallback: {', '.join(chain) or 'none'}",
            "declare fallback=keel.Rules(...) (or a second model) in the workflow",
            {"fallback": chain})


@criterion("calibrated_policy", "Model", "a calibrated policy whose guarantee meets the target",
           "mvp")
def _calibrated(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    live = champion_now(c.store, c.wf.name)
    version = live.model_version if live else c.wf.model.version
    policy, note = policy_in_force(c.store, c.wf.name, version, c.wf.policy)
    fix = (f"keel calibrate {c.wf_arg} --target-accuracy {c.gates.target_accuracy} "
           "(from audits in the store, or --labels FILE)")
    if policy.version == "declared":
        return FAIL, note or "no calibrated policy: thresholds as declared", fix, {}
    from keel.store.reviews import active_routing_policy  # start-up: keel gate only

    row = active_routing_policy(c.store, c.wf.name) or {}
    params = row.get("params") or {}
    target = params.get("target_accuracy")
    if params.get("method") == "manual":
        return FAIL, f"policy {policy.version} was set by hand: it carries no guarantee", fix, \
            {"policy": policy.version}
    if target is None or float(target) < c.gates.target_accuracy:
        return (FAIL, f"policy {policy.version} guarantees {target}, below the target "
                      f"{c.gates.target_accuracy}", fix, {"policy": policy.version})
    automated = policy.threshold != NEVER
    return ((PASS if automated else FAIL),
            f"policy {policy.version}: threshold {policy.threshold:.3f} for accuracy >= "
            f"{float(target):.1%}", fix if not automated else "",
            {"policy": policy.version, "target_accuracy": target})


@criterion("realized_accuracy", "Monitoring",
           "audited accuracy of automatic decisions within the guarantee", "production")
def _realized(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    from keel.store.reviews import exact_ci  # start-up: keel gate only

    n, ok = sql.audit_counts(c.store, c.wf.name)
    fix = ("let reviewers work the audit sample: keel review (or the web queue); "
           f"{c.gates.min_audits} audits are needed")
    if n < c.gates.min_audits:
        return UNKNOWN, f"{n} of {c.gates.min_audits} audits decided", fix, {"audits": n}
    ci = exact_ci(ok, n) or [0.0, 1.0]
    acc = ok / n
    detail = f"{acc:.1%} of {n} audits ({ci[0]:.1%}-{ci[1]:.1%})"
    if ci[1] < c.gates.target_accuracy:
        return FAIL, detail + f": surely below {c.gates.target_accuracy:.1%}", \
            "recalibrate (keel calibrate) or retrain (keel retrain)", {"audits": n, "kept": ok}
    return PASS, detail, "", {"audits": n, "kept": ok}


@criterion("rollout", "Model", "a shadow or canary passed for the live release", "production")
def _rollout(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    live = champion_now(c.store, c.wf.name)
    if live is None:
        return UNKNOWN, "no live release yet", f"keel run {c.wf_arg} ...", {}
    ended = [r for r in rel_sql.rollouts(c.store, c.wf.name)
             if r["challenger"] == live.id and r["status"] in ("promoted", "passed")]
    # a promotion by hand ends a rollout as "promoted" too: only its evidence counts
    passed = [r for r in ended
              if sql.passed_on_evidence(c.store, c.wf.name, live.id, r["started_at"])]
    if passed:
        r = passed[0]
        return PASS, f"rollout {r['id']} of {live.name}: {r['status']}", "", {"rollout": r["id"]}
    if len(rel_sql.releases(c.store, c.wf.name)) <= 1:
        return (NA, "the first release of a workflow has no champion to be tried against",
                "", {})
    fix = f"keel rollout start {c.wf_arg} --challenger NAME --shadow --canary 5,25,50,100"
    if ended:
        return (FAIL, f"the live release {live.name} was promoted by hand during rollout "
                      f"{ended[0]['id']}, before its evidence said so", fix,
                {"release": live.id, "rollout": ended[0]["id"]})
    return (FAIL, f"the live release {live.name} went live without a shadow or canary", fix,
            {"release": live.id})


# -- Operations -------------------------------------------------------------------------------
@criterion("alerts", "Operations", "alert rules configured, with somewhere to send them", "mvp")
def _alerts(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    rules = list(c.wf.alerts) if c.wf.alerts is not None else list(DEFAULT_RULES)
    where = c.gates.alerts_to
    if not rules:
        return FAIL, "no alert rules", "declare alerts=[keel.AlertRule(...)]", {}
    if not where:
        return (FAIL, f"{len(rules)} rules, sent nowhere but the log",
                "set keel.Gates(alerts_to='https://hooks...') in the workflow", {})
    return PASS, f"{len(rules)} rules, sent to {where.split('?')[0]}", "", {"rules": len(rules)}


@criterion("drill", "Operations", "a recovery drill passed", "production")
def _drill(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    d = sql.last_drill(c.store, c.wf.name)
    fix = f"keel drill {c.wf_arg}"
    if d is None:
        return FAIL, "no recovery drill yet", fix, {}
    if not d["ok"]:
        return FAIL, f"the last drill ({c.ago(d['at'])}) failed: {d['result'].get('problem')}", \
            fix, {"drill": d["id"]}
    if c.now - d["at"] > c.gates.drill_max_age_s:
        return FAIL, f"the last drill passed {c.ago(d['at'])}: too long ago", fix, {"drill": d["id"]}
    if d["workflow_version"] != c.wf.version:
        return FAIL, f"the last drill ran workflow version {d['workflow_version']}, not " \
            f"{c.wf.version}", fix, {"drill": d["id"]}
    r = d["result"]
    return (PASS, f"drill {c.ago(d['at'])}: {r['records']} records, {r['faults']} faults and a "
                  "crash; each ended in one disposition, none decided twice", "",
            {"drill": d["id"]})


@criterion("api_keys", "Operations", "API keys in use; no admin key past its age limit",
           "production")
def _keys(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    keys = sql.key_ages(c.store)
    limit = c.gates.admin_key_max_age_s
    old = [k for k in keys if k["role"] == "admin" and k["age_s"] > limit]
    fix = "keel keys create --role ... (and keel keys revoke the old admin keys)"
    if not keys:
        return FAIL, "no API keys: keel serve cannot be reached", fix, {}
    if old:
        return (FAIL, f"{len(old)} admin key(s) older than {limit / 86400:g} days: "
                      f"{', '.join(k['name'] for k in old)}", fix,
                {"old_admin_keys": [k["id"] for k in old]})
    return PASS, f"{len(keys)} keys, no admin key older than {limit / 86400:g} days", "", \
        {"keys": len(keys)}


# -- Monitoring -------------------------------------------------------------------------------
@criterion("drift_monitor", "Monitoring", "drift monitoring declared, no drift alert open",
           "production")
def _drift(c: Context) -> tuple[str, str, str, dict[str, Any]]:
    if c.wf.monitor is None:
        return FAIL, "no drift monitoring", "declare monitor=keel.DriftMonitor() in the workflow", {}
    firing = [a for a in sql.open_alerts(c.store, c.wf.name) if a["rule"].startswith("drift")]
    if firing:
        return (FAIL, f"drift alert {firing[0]['rule']} firing since {c.ago(firing[0]['fired_at'])}",
                f"keel drift check {c.wf_arg}; then retrain or refresh the reference",
                {"alerts": [a["rule"] for a in firing]})
    return PASS, "drift monitoring declared; no drift alert open", "", {}


def custom(c: Context, spec: Criterion) -> Verdict:
    """A team's own criterion: its callable's answer, or 'unknown' with the error it raised."""
    try:
        out = spec.check(c.store, c.wf)
    except Exception as exc:
        return Verdict(spec.id, spec.section, spec.title, spec.needed_for, UNKNOWN,
                       f"the check raised {type(exc).__name__}: {exc}", spec.fix,
                       {"error": type(exc).__name__})
    value, detail = (out if isinstance(out, tuple) else (out, ""))
    status = PASS if value is True else FAIL if value is False else UNKNOWN
    return Verdict(spec.id, spec.section, spec.title, spec.needed_for, status, str(detail),
                   spec.fix if status != PASS else "", {})


def evaluate(wf: Workflow, store: Store, gates: Gates, wf_arg: str,
             now: float | None = None) -> list[Verdict]:
    """Every criterion's verdict, defaults then the team's own."""
    c = Context(wf, store, gates, time.time() if now is None else now, wf_arg)
    out = []
    for cid, section, title, needed, fn in DEFAULTS:
        if cid in gates.not_applicable:
            out.append(Verdict(cid, section, title, needed, NA,
                               f"set aside: {gates.not_applicable[cid]}"))
            continue
        status, detail, fix, evidence = fn(c)
        out.append(Verdict(cid, section, title, needed, status, detail,
                           fix if status in (FAIL, UNKNOWN) else "", evidence))
    out += [custom(c, spec) for spec in gates.criteria]
    return out
