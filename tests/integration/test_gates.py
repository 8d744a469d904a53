"""Gates: construction stages (prototype -> mvp -> production), the readiness report computed
from evidence in the store, promotion with overrides on the audit trail, approvers'
signatures, recovery drills, what each stage lets a workflow do, and the gate over HTTP; on
SQLite and PostgreSQL.

The workflows are small files written per test: a function model (a text longer than 10
characters is "long"; 0.99 sure, or 0.3 when the text says "unsure"); reviewers are
simulated and decide as the truth says (or, where a test says so, against the model).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import text
from tests._cli import Result, keel_cli
from tests._collectors import recording_server
from tests._workflows import make, write_csv
from tests.server._live import app_for, bearer

import keel
from keel import gates
from keel.review import ReviewQueue
from keel.server import create_key
from keel.stages.route import audit_draw
from keel.store import Store, monitoring
from keel.store import gates as gate_sql
from keel.store.queries import expand_segments
from keel.store.releases import trail_id
from keel.workflow import STAGES

DAY = 86400.0
HOOK = "https://hooks.example.com/services/T0/B0?token=s3cret"

TEMPLATE = '''
from pydantic import BaseModel, Field
import keel

class Msg(BaseModel):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)

class Label(BaseModel):
    label: str

def answer(msg):
    label = "long" if len(msg.text) > 10 else "short"
    if WRONG:
        label = "short" if label == "long" else "long"
    return {"label": label}, (0.3 if "unsure" in msg.text else 0.99)

EXTRA

workflow = keel.Workflow(
    name="tickets", input=Msg, output=Label, key="id", model=keel.FunctionModel(answer),
    policy=POLICY,
    owners=OWNERS,
    input_checks=INPUT_CHECKS,
    fallback=FALLBACK,
    monitor=MONITOR,
    alerts=ALERTS,
    rollout=keel.Rollout(min_decisions=20, min_reviewed=10, tolerance=0.2, check_every_s=0),
    gates=GATES,
)
'''

#: A workflow that declares everything the criteria read from its file.
PARTS = {
    "WRONG": "False",
    "EXTRA": "",
    "POLICY": "keel.Policy(threshold=0.8, audit_rate=0.0)",
    "OWNERS": ('keel.Owners(business="ops@example.com", support="ml@example.com", '
               'escalation="oncall@example.com")'),
    "INPUT_CHECKS": '[keel.check("text is not blank", lambda m: m.text.strip() != "")]',
    "FALLBACK": 'lambda m: {"label": "short"}',
    "MONITOR": "keel.DriftMonitor(ood=False, check_every_s=0)",
    "ALERTS": "None",
    "GATES": f"keel.Gates(min_eval_records=20, min_audits=10, alerts_to={HOOK!r})",
}


def write_workflow(path: Path, **parts: str) -> Path:
    """The workflow file with some of its declarations replaced (see PARTS)."""
    unknown = set(parts) - set(PARTS)
    assert not unknown, unknown
    body = TEMPLATE
    for name, value in {**PARTS, **parts}.items():
        body = body.replace(name, value)
    path.write_text(body)
    return path


def _text(i: int, unsure_every: int = 5) -> str:
    return "x" * (3 + i % 15) + (" unsure" if unsure_every and i % unsure_every == 0 else "")


def _truth(text_: str) -> str:
    return "long" if len(text_) > 10 else "short"


def _csv(path: Path, start: int, n: int, *, labels: bool = False, unsure_every: int = 5) -> Path:
    texts = [(f"k{i}", _text(i, unsure_every)) for i in range(start, start + n)]
    if labels:
        return write_csv(path, [(k, t, _truth(t)) for k, t in texts], header="id,text,label")
    return write_csv(path, texts)


def _err(res: Result) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(res.stderr.split())


class Bench:
    """One workflow file and its store, driven through the CLI as a user would."""

    def __init__(self, folder: Path, db: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.folder, self.db, self.capsys = folder, db, capsys
        self.wf = folder / "workflow.py"

    def write(self, **parts: str) -> Path:
        return write_workflow(self.wf, **parts)

    def cli(self, *args: str, code: int | None = 0) -> Result:
        res = keel_cli(self.capsys, *args, "--db", self.db)
        if code is not None:
            assert res.returncode == code, (args, res.stdout[-2000:], res.stderr[-2000:])
        return res

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self.cli(*args, "--json", code=code).stdout)

    def gate(self, *args: str) -> dict[str, Any]:
        """``keel gate WORKFLOW_PY --json``: exit 0 when ready, 3 when not."""
        res = self.cli("gate", str(self.wf), *args, "--json", code=None)
        out = json.loads(res.stdout)
        assert res.returncode == (0 if out["ready"] else 3), res.stderr
        return dict(out)

    def verdict(self, cid: str) -> dict[str, Any]:
        """One criterion's verdict, from the Python API behind ``keel gate`` (no CLI start-up)."""
        with self.store() as st:
            rep = gates.report(keel.load_workflow(self.wf), st, wf_arg=str(self.wf))
        (found,) = [v.as_dict() for v in rep.verdicts if v.id == cid]
        return json.loads(json.dumps(found))  # as `keel gate --json` prints it

    def run(self, start: int, n: int, *, unsure_every: int = 5, name: str = "in") -> dict[str, Any]:
        src = _csv(self.folder / f"{name}{start}.csv", start, n, unsure_every=unsure_every)
        out = self.json("run", str(self.wf), str(src))
        assert out["read"] == sum(out["dispositions"].values()) + out["already_decided"]
        return dict(out)

    def promote(self, to: str, *args: str, code: int = 0) -> Result:
        return self.cli("promote", str(self.wf), "--to", to, *args, code=code)

    def force(self, to: str) -> None:
        """Move the workflow to ``to`` over whatever the gate says (an admin's override)."""
        with self.store() as st:
            wf = keel.load_workflow(self.wf)
            while gates.current(st, "tickets") != to:
                here = STAGES.index(gates.current(st, "tickets"))
                gates.promote(wf, st, STAGES[here + 1], override=True, by="test",
                              reason="set up the test")

    @contextmanager
    def store(self) -> Iterator[Store]:
        st = Store.open(self.db)
        try:
            yield st
        finally:
            st.close()

    def sql(self, statement: str, **params: Any) -> None:
        with self.store() as st, st.engine.begin() as conn:
            conn.execute(text(statement), params)

    def key(self, role: str, name: str) -> str:
        return self.cli("keys", "create", "--role", role, "--name", name).stdout.strip()


@pytest.fixture
def bench(tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> Bench:
    b = Bench(tmp_path, db_url, capsys)
    b.write()
    return b


@pytest.fixture
def sqlite_bench(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Bench:
    """For what does not depend on the database (the expected failures at the end)."""
    b = Bench(tmp_path, f"sqlite:///{tmp_path / 'keel.db'}", capsys)
    b.write()
    return b


def _review_all(store: Store, *, agree: bool = True) -> dict[str, int]:
    """Decide every open task as the truth says (or, with ``agree=False``, always against the
    model); returns how many of each reason."""
    queue = ReviewQueue(store)
    seen: dict[str, int] = {}
    while (task := queue.claim(None, "rita")) is not None:
        right = {"label": _truth(task["input"]["text"])}
        if not agree:
            said = task["model_output"]["label"]
            right = {"label": "short" if said == "long" else "long"}
        if task["model_output"] == right:
            queue.decide(task["id"], "rita", "accept")
        else:
            queue.decide(task["id"], "rita", "correct", right)
        seen[task["reason"]] = seen.get(task["reason"], 0) + 1
    return seen


# -- 1. each default criterion, failing then passing on evidence -------------------------------
DECLARED = [
    # criterion, what fails it (the rest of the file as in PARTS passes it), what the report
    # says, what it says to do
    ("owners", {"OWNERS": 'keel.Owners(business="", support="ml@example.com")'},
     "business -", "keel.Owners(business=..."),
    ("escalation", {"OWNERS": 'keel.Owners(business="ops@example.com", support="ml@example.com")'},
     "escalation not set", "escalation="),
    ("contracts", {"INPUT_CHECKS": "()"}, "checks: none", "keel.check("),
    ("fallback", {"FALLBACK": "None"}, "fallback: none", "fallback=keel.Rules"),
    ("alerts", {"GATES": "keel.Gates()"}, "sent nowhere but the log", "alerts_to="),
    ("alerts", {"ALERTS": "[]"}, "no alert rules", "keel.AlertRule"),
    ("drift_monitor", {"MONITOR": "None"}, "no drift monitoring", "keel.DriftMonitor()"),
]


@pytest.mark.parametrize(("cid", "failing", "says", "fix"), DECLARED,
                         ids=[f"{d[0]}-{d[2].split()[0]}" for d in DECLARED])
def test_a_criterion_read_from_the_workflow_file_fails_until_it_is_declared(
        bench: Bench, cid: str, failing: dict[str, str], says: str, fix: str) -> None:
    Store.open(bench.db).close()
    bench.write(**failing)
    v = bench.verdict(cid)
    assert v["status"] == "fail" and says in v["detail"] and fix in v["fix"], v
    bench.write()
    v = bench.verdict(cid)
    assert v["status"] == "pass" and v["fix"] == "", v
    if cid == "alerts":  # where alerts go is named, without the webhook's secret
        assert "https://hooks.example.com/services/T0/B0" in v["detail"]
        assert "s3cret" not in json.dumps(bench.gate())


def test_reference_profile_fails_until_keel_drift_reference_and_again_once_stale(
        bench: Bench) -> None:
    bench.run(0, 20)
    v = bench.verdict("reference_profile")
    assert v["status"] == "fail" and v["detail"] == "no reference profile"
    assert v["fix"] == f"keel drift reference {bench.wf} --from TRAINING_DATA.csv"
    train = _csv(bench.folder / "train.csv", 1000, 200)
    made = bench.json("drift", "reference", str(bench.wf), "--from", str(train),
                      "--embedder", "tfidf")
    v = bench.verdict("reference_profile")
    assert v["status"] == "pass" and v["evidence"]["profile"] == made["id"], (v, made)
    # 31 days later it is older than Gates.profile_max_age_s (30 days by default)
    bench.sql("update profiles set created_at = created_at - :s", s=31 * DAY)
    v = bench.verdict("reference_profile")
    assert v["status"] == "fail" and "older than 30 days" in v["detail"], v
    assert "keel drift reference" in v["fix"]
    bench.json("drift", "reference", str(bench.wf), "--from", str(train), "--embedder", "tfidf")
    assert bench.verdict("reference_profile")["status"] == "pass"


def test_eval_run_needs_enough_labelled_rows_for_the_live_release(bench: Bench) -> None:
    Store.open(bench.db).close()
    v = bench.verdict("eval_run")
    assert v["status"] == "unknown" and "no live release yet" in v["detail"], v
    bench.run(0, 20)
    v = bench.verdict("eval_run")
    assert v["status"] == "fail" and "no evaluation yet" in v["detail"] and "20" in v["fix"], v
    few = _csv(bench.folder / "few.csv", 500, 19, labels=True)
    bench.json("eval", str(bench.wf), "--labels", str(few))
    v = bench.verdict("eval_run")
    assert v["status"] == "fail" and "needs 20 rows" in v["detail"], v
    enough = _csv(bench.folder / "enough.csv", 600, 20, labels=True)
    ran = bench.json("eval", str(bench.wf), "--labels", str(enough))
    v = bench.verdict("eval_run")
    assert v["status"] == "pass" and v["evidence"]["eval_run"] == ran["eval_run"], (v, ran)
    assert "20 labelled rows" in v["detail"] and "accuracy 100.0%" in v["detail"]

    # another release goes live: the evaluation of r1 no longer speaks for it
    two = write_workflow(bench.folder / "two.py", WRONG='"tricky" in msg.text')  # another model
    bench.cli("release", "register", str(two), "--name", "two")
    bench.cli("release", "promote", "two", "-w", str(bench.wf), "--reason", "test")
    v = bench.verdict("eval_run")
    assert v["status"] == "fail" and "evaluations exist only for other releases" in v["detail"], v
    assert "live release two" in v["detail"]
    bench.json("eval", str(bench.wf), "--labels", str(enough))  # evaluates the champion
    assert bench.verdict("eval_run")["status"] == "pass"
    # 91 days later it is older than Gates.eval_max_age_s (90 days by default)
    bench.sql("update eval_runs set created_at = created_at - :s", s=91 * DAY)
    v = bench.verdict("eval_run")
    assert v["status"] == "fail" and "91.0 days ago" in v["detail"] and "keel eval" in v["fix"], v


def test_calibrated_policy_needs_a_calibration_that_meets_the_gates_target(bench: Bench) -> None:
    bench.run(0, 20)
    v = bench.verdict("calibrated_policy")
    assert v["status"] == "fail" and "thresholds as declared" in v["detail"], v
    assert "keel calibrate" in v["fix"] and "--target-accuracy 0.98" in v["fix"]
    labels = _csv(bench.folder / "labels.csv", 1000, 300, labels=True)
    low = bench.json("calibrate", str(bench.wf), "--labels", str(labels), "--label-column",
                     "label", "--target-accuracy", "0.9")
    v = bench.verdict("calibrated_policy")
    assert v["status"] == "fail" and "below the target 0.98" in v["detail"], (v, low)
    good = bench.json("calibrate", str(bench.wf), "--labels", str(labels), "--label-column",
                      "label", "--target-accuracy", "0.98")
    v = bench.verdict("calibrated_policy")
    assert v["status"] == "pass" and v["evidence"]["policy"] == good["version"], (v, good)
    assert "accuracy >= 98.0%" in v["detail"]


@pytest.mark.parametrize("agree", [True, False], ids=["reviewers-agree", "reviewers-disagree"])
def test_realized_accuracy_is_read_from_decided_audits(bench: Bench, agree: bool) -> None:
    bench.write(GATES="keel.Gates(min_audits=10, mvp=keel.MvpLimits(audit_rate=1.0))")
    bench.force("mvp")
    ran = bench.run(0, 15, unsure_every=0)
    assert ran["dispositions"]["accepted"] == 15 and ran["audit_samples"] == 15
    v = bench.verdict("realized_accuracy")
    assert v["status"] == "unknown" and v["detail"] == "0 of 10 audits decided", v
    assert "keel review" in v["fix"]
    with bench.store() as st:
        assert _review_all(st, agree=agree) == {"audit_sample": 15}
    v = bench.verdict("realized_accuracy")
    if agree:
        assert v["status"] == "pass" and v["detail"].startswith("100.0% of 15 audits"), v
        assert v["evidence"] == {"audits": 15, "kept": 15}
    else:
        assert v["status"] == "fail" and "surely below 98.0%" in v["detail"], v
        assert "keel calibrate" in v["fix"]


@pytest.mark.slow
def test_rollout_criterion_asks_each_later_release_to_pass_a_shadow_or_canary(
        bench: Bench) -> None:
    bench.run(0, 20)
    v = bench.verdict("rollout")
    assert v["status"] == "not applicable" and "first release" in v["detail"], v

    # a release made champion by hand, untried on live traffic
    two = write_workflow(bench.folder / "two.py", POLICY="keel.Policy(threshold=0.7, audit_rate=0.0)")
    bench.cli("release", "register", str(two), "--name", "two")
    bench.cli("release", "promote", "two", "-w", str(bench.wf))
    v = bench.verdict("rollout")
    assert v["status"] == "fail" and "two went live without a shadow or canary" in v["detail"], v
    assert "keel rollout start" in v["fix"]

    # a rollout started, then cut short by a promotion by hand: nothing was tried
    three = write_workflow(bench.folder / "three.py",
                           POLICY="keel.Policy(threshold=0.75, audit_rate=0.0)")
    bench.cli("release", "register", str(three), "--name", "three")
    bench.cli("rollout", "start", str(bench.wf), "--challenger", "three", "--canary", "50,100")
    bench.cli("release", "promote", "three", "-w", str(bench.wf), "--reason", "in a hurry")
    v = bench.verdict("rollout")
    assert v["status"] == "fail" and "three was promoted by hand during rollout" in v["detail"], v

    # a shadow that passes on evidence, then the promotion
    four = write_workflow(bench.folder / "four.py",
                          POLICY="keel.Policy(threshold=0.85, audit_rate=0.0)")
    bench.cli("release", "register", str(four), "--name", "four")
    bench.cli("rollout", "start", str(bench.wf), "--challenger", "four", "--shadow")
    wf = keel.load_workflow(bench.wf)
    with bench.store() as st:
        for start in range(100, 400, 20):  # reviewers see every record: a prototype
            keel.run(wf, [{"id": f"k{i}", "text": _text(i)} for i in range(start, start + 20)],
                     store=st)
            _review_all(st)
            keel.releases.tend(wf, st)
            if keel.releases.status(wf, st)["rollout"]["status"] != "running":
                break
        assert keel.releases.status(wf, st)["rollout"]["status"] == "passed"
    assert bench.verdict("rollout")["status"] == "fail"  # four passed; three is still live
    bench.cli("release", "promote", "four", "-w", str(bench.wf))
    v = bench.verdict("rollout")
    assert v["status"] == "pass" and "of four: passed" in v["detail"], v


@pytest.mark.slow
def test_drill_passes_and_its_evidence_is_kept_for_the_workflow_version(bench: Bench) -> None:
    Store.open(bench.db).close()
    v = bench.verdict("drill")
    assert v["status"] == "fail" and v["detail"] == "no recovery drill yet"
    assert v["fix"] == f"keel drill {bench.wf}"
    res = bench.cli("drill", str(bench.wf), "--sample", "10", code=1)
    assert "no records in this store to drill with" in _err(res) and "keel run" in _err(res)

    bench.run(0, 150)
    with bench.store() as st:
        before = keel.status(store=st)[0]
    out = bench.json("drill", str(bench.wf), "--sample", "120")  # the 120 most recent
    assert out["ok"] and out["problem"] is None, out
    assert out["records"] == out["expected"] == out["sample"] == 120
    assert sum(out["dispositions"].values()) == 120 and out["decided_twice"] == 0
    assert 0 < out["killed_at"] < 120 and out["faults"] > 0 and out["trail_ok"]
    with bench.store() as st:
        assert keel.status(store=st)[0]["dispositions"] == before["dispositions"]  # a scratch copy
        kept = gate_sql.last_drill(st, "tickets")
    assert kept is not None and kept["id"] == out["id"] and kept["ok"]
    assert kept["workflow_version"] == keel.load_workflow(bench.wf).version
    v = bench.verdict("drill")
    assert v["status"] == "pass" and v["evidence"] == {"drill": out["id"]}, v
    assert "120 records" in v["detail"]

    # 31 days later it is older than Gates.drill_max_age_s (30 days by default)
    bench.sql("update drills set at = at - :s", s=31 * DAY)
    v = bench.verdict("drill")
    assert v["status"] == "fail" and "too long ago" in v["detail"], v
    bench.sql("update drills set at = at + :s", s=31 * DAY)
    bench.write(POLICY="keel.Policy(threshold=0.9, audit_rate=0.0)")  # another version
    v = bench.verdict("drill")
    assert v["status"] == "fail" and "ran workflow version" in v["detail"], v


def test_api_keys_must_exist_and_no_admin_key_may_be_too_old(bench: Bench) -> None:
    Store.open(bench.db).close()
    v = bench.verdict("api_keys")
    assert v["status"] == "fail" and "no API keys" in v["detail"] and "keel keys create" in v["fix"]
    bench.key("admin", "ops-admin")
    bench.key("reviewer", "alice")
    v = bench.verdict("api_keys")
    assert v["status"] == "pass" and v["evidence"] == {"keys": 2}, v
    # the admin key was made 91 days ago (Gates.admin_key_max_age_s is 90 days)
    bench.sql("update api_keys set created_at = created_at - :s where role = 'admin'", s=91 * DAY)
    v = bench.verdict("api_keys")
    assert v["status"] == "fail" and "older than 90 days: ops-admin" in v["detail"], v
    assert "keel keys revoke" in v["fix"]
    (admin,) = [k for k in bench.json("keys", "list") if k["role"] == "admin"]
    bench.cli("keys", "revoke", admin["id"])
    v = bench.verdict("api_keys")
    assert v["status"] == "pass" and v["evidence"] == {"keys": 1}, v


def test_drift_monitor_fails_while_a_drift_alert_is_open(bench: Bench) -> None:
    bench.run(0, 10)
    assert bench.verdict("drift_monitor")["status"] == "pass"
    rule = keel.AlertRule("drift_score", above=0.0).rule_name  # the default drift rule
    with bench.store() as st:
        alert = monitoring.save_alert(st, {"workflow": "tickets", "rule": rule, "state": "firing",
                                           "value": 0.5, "detail": {}, "fired_at": time.time()})
        monitoring.save_alert(st, {"workflow": "tickets", "rule": "error_rate_above_0.2",
                                   "state": "firing", "value": 0.5, "detail": {},
                                   "fired_at": time.time()})
    v = bench.verdict("drift_monitor")
    assert v["status"] == "fail" and f"drift alert {rule} firing" in v["detail"], v
    assert v["evidence"] == {"alerts": [rule]} and "keel drift check" in v["fix"]
    with bench.store() as st:
        monitoring.save_alert(st, {"id": alert, "workflow": "tickets", "rule": rule,
                                   "state": "resolved", "value": 0.0, "detail": {},
                                   "fired_at": time.time(), "resolved_at": time.time()})
    assert bench.verdict("drift_monitor")["status"] == "pass"  # another rule's alert is not drift


@pytest.mark.parametrize("kind", ["security_review", "operational_signoff"])
def test_a_signature_counts_when_an_approver_signs_this_workflow_version(
        bench: Bench, kind: str) -> None:
    Store.open(bench.db).close()
    v = bench.verdict(kind)
    assert v["status"] == "fail" and v["detail"].startswith("no ")
    assert f"keel gate sign {bench.wf} --kind {kind} --key APPROVER_KEY" in v["fix"]
    submitter = bench.key("submitter", "billing-system")
    approver = bench.key("approver", "Ana Ruiz")
    sign = ("gate", "sign", str(bench.wf), "--kind", kind)

    refused = bench.cli(*sign, "--key", submitter, code=1)
    assert "has role submitter" in _err(refused) and "approver" in _err(refused)
    refused = bench.cli(*sign, "--key", "keel_not-a-key", code=1)
    assert "unknown or revoked" in _err(refused)
    refused = bench.cli(*sign, "--kind", "vibe_check", "--key", approver, code=1)
    assert "unknown signature 'vibe_check'" in _err(refused)
    assert bench.verdict(kind)["status"] == "fail"

    signed = bench.json(*sign, "--key", approver, "--note", "threat model reviewed")
    assert signed["signer"] == "Ana Ruiz" and signed["kind"] == kind
    v = bench.verdict(kind)
    assert v["status"] == "pass" and v["detail"].startswith("signed by Ana Ruiz"), v
    assert v["evidence"] == {"signature": signed["id"], "signer": "Ana Ruiz"}

    old = keel.load_workflow(bench.wf).version
    bench.write(POLICY="keel.Policy(threshold=0.5, audit_rate=0.0)")
    new = keel.load_workflow(bench.wf).version
    v = bench.verdict(kind)
    assert v["status"] == "fail" and f"for workflow version {old}" in v["detail"], v
    assert f"the workflow is now {new}" in v["detail"]
    bench.json(*sign, "--key", approver)
    assert bench.verdict(kind)["status"] == "pass"
    with bench.store() as st:  # both signatures are kept
        assert [s["workflow_version"] for s in gate_sql.signatures(st, "tickets")] == [new, old]


def test_a_ready_workflow_is_promoted_without_an_override(bench: Bench) -> None:
    """The whole MVP gate, from evidence: the file declares owners, checks, a fallback and
    where alerts go; an evaluation and a calibration make the rest."""
    bench.run(0, 20)
    assert sorted(bench.gate()["blocking"]) == ["calibrated_policy", "eval_run"]
    bench.promote("mvp", code=1)
    labels = _csv(bench.folder / "labels.csv", 1000, 300, labels=True)
    bench.json("eval", str(bench.wf), "--labels", str(labels))
    bench.json("calibrate", str(bench.wf), "--labels", str(labels), "--label-column", "label")
    rep = bench.gate()
    assert rep["ready"] and rep["to"] == "mvp" and rep["summary"] == "ready for mvp", rep
    assert rep["blocking"] == []
    # what production still lacks keeps the score low: Operations and Monitoring pass one each
    assert rep["sections"]["Operations"] == {"passed": 1, "of": 3}
    assert (rep["score"], rep["band"]) == (1, "first steps: serious gaps remain")
    done = bench.json("promote", str(bench.wf), "--to", "mvp")
    assert done["stage"] == "mvp" and done["override"] is False
    assert done["evidence"]["ready"] is True and done["evidence"]["hash"] == rep["hash"]
    after = bench.gate()
    assert (after["stage"], after["to"], after["ready"]) == ("mvp", "production", False)


# -- 2. what each stage lets a workflow do -------------------------------------------------------
def test_a_prototype_automates_nothing_even_at_high_confidence(bench: Bench) -> None:
    ran = bench.run(0, 20, unsure_every=0)  # every answer 0.99 sure
    assert ran["dispositions"]["in_review"] == 20 and ran["dispositions"]["accepted"] == 0
    assert ran["review_reasons"] == {"prototype": 20}
    with bench.store() as st:
        tasks = ReviewQueue(st).list(limit=100)
    assert len(tasks) == 20 and {t["reason"] for t in tasks} == {"prototype"}
    # the same workflow without gates decides them itself
    ungated = write_workflow(bench.folder / "ungated.py", GATES="None")
    src = _csv(bench.folder / "more.csv", 100, 20, unsure_every=0)
    out = bench.json("run", str(ungated), str(src))
    assert out["dispositions"]["accepted"] == 20


def test_an_mvp_automates_within_the_policy_and_audits_at_least_its_rate(bench: Bench) -> None:
    bench.write(GATES="keel.Gates(mvp=keel.MvpLimits(audit_rate=0.3))")  # policy audits 0%
    bench.force("mvp")
    ran = bench.run(0, 200)
    keys = [f"k{i}" for i in range(200)]
    sure = [k for k in keys if "unsure" not in _text(int(k[1:]))]
    assert ran["dispositions"]["accepted"] == len(sure) == 160
    assert ran["review_reasons"] == {"low_confidence": 40}
    audited = [k for k in sure if audit_draw(k) < 0.3]
    assert ran["audit_samples"] == len(audited) and 0.2 < len(audited) / len(sure) < 0.4
    with bench.store() as st:
        audits = ReviewQueue(st).list(reason="audit_sample", limit=200)
    assert sorted(t["key"] for t in audits) == sorted(audited)

    # back to prototype: at once, no gate asked, and a person decides everything again
    bench.promote("prototype")
    again = bench.run(1000, 10, unsure_every=0)
    assert again["review_reasons"] == {"prototype": 10}


def test_the_mvp_daily_volume_quarantines_records_past_it_and_they_replay(bench: Bench) -> None:
    bench.write(GATES="keel.Gates(mvp=keel.MvpLimits(daily_volume=10, audit_rate=0.0))")
    bench.force("mvp")
    first = bench.run(0, 6, unsure_every=0)
    assert first["dispositions"]["accepted"] == 6
    ran = bench.run(100, 20, unsure_every=0)
    assert ran["dispositions"]["accepted"] == 4 and ran["dispositions"]["quarantined"] == 16
    assert ran["quarantine_reasons"] == {"*: mvp_daily_volume": 16}
    with bench.store() as st:
        held = keel.quarantined(store=st)
    assert sorted(r["key"] for r in held) == sorted(f"k{i}" for i in range(104, 120))
    ((v,),) = {tuple((x["field"], x["rule"], x["message"]) for x in r["violations"]) for r in held}
    assert v[:2] == ("*", "mvp_daily_volume")
    assert "daily volume (10 records) is used up" in v[2] and "keel replay --quarantined" in v[2]
    again = bench.run(100, 20, unsure_every=0)  # the same file: nothing decided twice
    assert again["already_decided"] == 20

    # replayed the same day, they stay quarantined: nothing is lost
    replay = bench.json("replay", str(bench.wf), "--quarantined")
    assert replay["read"] == 16 and replay["dispositions"]["quarantined"] == 16
    # in production there is no cap: the replay decides them
    bench.force("production")
    replay = bench.json("replay", str(bench.wf), "--quarantined")
    assert replay["read"] == 16 and replay["dispositions"]["accepted"] == 16
    with bench.store() as st:
        st_ = keel.status(store=st)[0]
    assert st_["records"] == 26 == sum(st_["dispositions"].values())
    assert st_["dispositions"]["accepted"] == 26


def test_an_mvp_reads_only_the_sources_its_gates_allow(bench: Bench) -> None:
    bench.write(GATES='keel.Gates(mvp=keel.MvpLimits(sources=("*orders/*.csv",)))')
    bench.run(0, 5)  # a prototype reads anything
    bench.force("mvp")
    other = _csv(bench.folder / "other.csv", 100, 5)
    res = bench.cli("run", str(bench.wf), str(other), code=1)
    err = _err(res)
    assert "tickets is an MVP and reads only *orders/*.csv" in err and "other.csv" in err, err
    assert "MvpLimits(sources=" in err and "Traceback" not in err
    with bench.store() as st:
        assert keel.status(store=st)[0]["records"] == 5
    (bench.folder / "orders").mkdir()
    ok = _csv(bench.folder / "orders" / "monday.csv", 200, 5)
    out = bench.json("run", str(bench.wf), str(ok))
    assert out["read"] == 5 and out["already_decided"] == 0


def test_production_refuses_an_edited_workflow_file_until_it_is_registered(bench: Bench) -> None:
    bench.run(0, 5)
    bench.force("production")
    ran = bench.run(10, 10, unsure_every=0)  # the registered file runs, as declared
    assert ran["dispositions"]["accepted"] == 10 and ran["audit_samples"] == 0

    bench.write(POLICY="keel.Policy(threshold=0.5, audit_rate=0.0)")
    src = _csv(bench.folder / "edited.csv", 100, 10)
    res = bench.cli("run", str(bench.wf), str(src), code=1)
    err = _err(res)
    assert "tickets is in production" in err and "declares a release nobody registered" in err
    assert "`keel release register WORKFLOW_PY`" in err and "--to mvp" in err
    assert "keel.gate.change_control" in err and "Traceback" not in err
    with bench.store() as st:
        assert keel.status(store=st)[0]["records"] == 15  # nothing was decided

    bench.cli("release", "register", str(bench.wf), "--name", "r2")
    out = bench.json("run", str(bench.wf), str(src))
    assert out["read"] == 10 and sum(out["dispositions"].values()) == 10


# -- 3. promotion ----------------------------------------------------------------------------------
def test_promotion_mistakes_are_refused_clearly_and_change_nothing(bench: Bench) -> None:
    bench.run(0, 5)
    wf = str(bench.wf)

    def refused(*args: str, says: tuple[str, ...]) -> None:
        res = bench.cli(*args, code=1)
        err = _err(res)
        for part in says:
            assert part in err, (part, err)
        assert "Traceback" not in err

    refused("promote", wf, "--to", "production",
            says=("tickets is a prototype: promote it to mvp first", "prototype -> mvp -> production"))
    refused("promote", wf, "--to", "mvp",
            says=("tickets is not yet ready for mvp", "an evaluation of the live release",
                  "keel eval", "keel calibrate", "--override --reason"))
    refused("promote", wf, "--to", "mvp", "--override",
            says=("an override needs a written reason: --reason",))
    refused("promote", wf, "--to", "mvp", "--override", "--reason", "   ",
            says=("an override needs a written reason",))
    refused("promote", wf, "--to", "staging",
            says=("unknown stage 'staging'", "prototype, mvp, production"))
    refused("promote", wf, "--to", "prototype", says=("tickets is already in prototype",))
    refused("gate", wf, "--to", "staging", says=("unknown stage 'staging'",))

    assert bench.json("gate", wf, "--history") == []
    assert "never changed stage" in bench.cli("gate", wf, "--history").stdout
    with bench.store() as st:
        assert gates.current(st, "tickets") == "prototype"
        trail = [e["kind"] for e in keel.releases.history(st, "tickets")]
    assert not [k for k in trail if k.startswith("stage_")]


def test_an_override_is_kept_with_its_reason_actor_and_evidence(
        bench: Bench, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEEL_ACTOR", "olga")
    bench.run(0, 5)
    rep = bench.gate("--to", "mvp")
    assert not rep["ready"]
    out = bench.json("promote", str(bench.wf), "--to", "mvp", "--override",
                     "--reason", "pilot with three agents")
    assert out["stage"] == "mvp" and out["override"] is True
    shown = bench.cli("promote", str(bench.wf), "--to", "production", "--override", "--reason",
                      "go live").stdout
    assert "tickets is now in production (override: the gate did not pass)" in " ".join(shown.split())
    back = bench.json("promote", str(bench.wf), "--to", "mvp")  # back: at once, no gate
    assert back["override"] is False and back["reason"] == "moved back"

    hist = bench.json("gate", str(bench.wf), "--history")
    assert [(h["stage"], h["override"], h["actor"]) for h in hist] == [
        ("mvp", True, "olga"), ("production", True, "olga"), ("mvp", False, "olga")]
    first = hist[0]
    assert first["reason"] == "pilot with three agents"
    assert first["evidence"]["hash"] == rep["hash"] and first["evidence"]["ready"] is False
    assert sorted(first["evidence"]["blocking"]) == sorted(rep["blocking"])
    assert first["evidence"]["criteria"]["eval_run"]["status"] == "fail"
    assert hist[2]["evidence"] is None
    table = " ".join(bench.cli("gate", str(bench.wf), "--history").stdout.split())
    assert "pilot" in table and rep["hash"][:12] in table

    # each stage change is on the tamper-evident audit trail, with what it rested on
    with bench.store() as st, st.engine.connect() as conn:
        rows = conn.execute(text("select * from events where record_id = :r order by seq"),
                            {"r": trail_id("tickets")}).mappings().all()
    stages = [(e["kind"], e["actor"], e["detail"]["override"], e["detail"]["evidence_hash"])
              for e in expand_segments(rows) if e["kind"].startswith("stage_")]
    assert stages == [("stage_mvp", "olga", True, rep["hash"]),
                      ("stage_production", "olga", True, hist[1]["evidence"]["hash"]),
                      ("stage_mvp", "olga", False, None)]
    verified = bench.json("audit", "verify")
    assert verified["ok"], verified


def test_gate_and_promote_on_a_store_that_is_not_there_create_nothing(
        bench: Bench, db_url: str) -> None:
    for args in (("gate", str(bench.wf)), ("promote", str(bench.wf), "--to", "mvp"),
                 ("drill", str(bench.wf)),
                 ("gate", "sign", str(bench.wf), "--kind", "security_review", "--key", "k")):
        res = bench.cli(*args, code=1)
        assert ("there is no store" in _err(res) or "holds no keel store" in _err(res)), res.stderr
        assert "Traceback" not in res.stderr
    if db_url.startswith("sqlite"):
        assert not (bench.folder / "keel.db").exists()
        assert not (bench.folder / ".keel").exists()
    else:
        st = Store.open(db_url, migrate=False)
        try:
            assert sa_inspect(st.engine).get_table_names() == []
        finally:
            st.close()


# -- 5. a team's own criteria ------------------------------------------------------------------------
CUSTOM = '''
def enough_traffic(store, wf):
    n = keel.status(store=store)[0]["records"] if keel.status(store=store) else 0
    return n >= 10, f"{n} records decided"

def on_call_rota(store, wf):
    return False

def cmdb_entry(store, wf):
    raise RuntimeError("the CMDB is unreachable")

def maybe(store, wf):
    return None, "nobody knows yet"

CRITERIA = [
    keel.Criterion("traffic", "at least 10 records decided", enough_traffic, section="Data",
                   needed_for="mvp"),
    keel.Criterion("rota", "the team is on the on-call rota", on_call_rota, section="People",
                   needed_for="mvp", fix="add the team in PagerDuty"),
    keel.Criterion("cmdb", "registered in the CMDB", cmdb_entry, fix="file the CMDB form"),
    keel.Criterion("maybe", "an undecided check", maybe, section="Monitoring"),
]
'''


def test_a_teams_own_criteria_pass_fail_or_say_unknown_and_the_report_still_renders(
        bench: Bench) -> None:
    bench.write(EXTRA=CUSTOM, GATES=(
        f"keel.Gates(criteria=CRITERIA, alerts_to={HOOK!r}, not_applicable="
        "{'eval_run': 'a pilot without labels', 'calibrated_policy': 'people decide all'})"))
    Store.open(bench.db).close()
    rep = bench.gate()
    got = {c["id"]: c for c in rep["criteria"]}
    assert list(got)[-4:] == ["traffic", "rota", "cmdb", "maybe"]  # after the defaults
    assert (got["traffic"]["status"], got["traffic"]["detail"]) == ("fail", "0 records decided")
    assert (got["rota"]["status"], got["rota"]["fix"]) == ("fail", "add the team in PagerDuty")
    assert got["cmdb"]["status"] == "unknown"
    assert got["cmdb"]["detail"] == "the check raised RuntimeError: the CMDB is unreachable"
    assert got["cmdb"]["fix"] == "file the CMDB form"
    assert (got["maybe"]["status"], got["maybe"]["detail"]) == ("unknown", "nobody knows yet")
    assert rep["blocking"] == ["traffic", "rota"]  # cmdb and maybe: for production
    assert (got["eval_run"]["status"], got["eval_run"]["detail"]) == (
        "not applicable", "set aside: a pilot without labels")
    assert "cmdb" in bench.gate("--to", "production")["blocking"]

    bench.run(0, 10)
    got = {c["id"]: c for c in bench.gate()["criteria"]}
    assert (got["traffic"]["status"], got["traffic"]["detail"]) == ("pass", "10 records decided")
    assert got["traffic"]["fix"] == ""

    # the human report and the HTML page render the failure too
    res = bench.cli("gate", str(bench.wf), "--html", str(bench.folder / "gate.html"), code=3)
    shown = " ".join(res.stdout.split())
    assert "not yet ready for mvp, because the team is on the on-call rota (fail: )" in shown
    page = (bench.folder / "gate.html").read_text()
    assert "the check raised RuntimeError: the CMDB is unreachable" in page


# -- 6. the report as a page, and over HTTP -----------------------------------------------------------
def test_gate_html_names_every_criterion_and_the_stage_history(bench: Bench) -> None:
    bench.run(0, 5)
    bench.force("mvp")
    out = bench.folder / "report.html"
    res = bench.cli("gate", str(bench.wf), "--html", str(out), code=3)
    assert "(report: " in res.stdout
    page = out.read_text()
    rep = bench.gate()
    assert [c["id"] for c in rep["criteria"]] == [d[0] for d in gates.DEFAULTS]
    rows = page.split("<tr>")
    for c in rep["criteria"]:  # one row each: its title, its verdict, its evidence
        (row,) = [r for r in rows if f"&middot; {c['id']}<" in r]
        assert c["title"] in row and f">{c['status']}</td>" in row, row
        assert str(escape(c["detail"])) in row
    assert "Is tickets ready for production?" in page and "Stage history" in page
    assert "set up the test" in page  # the override's reason
    assert "s3cret" not in page


@pytest.fixture
def api(bench: Bench) -> Iterator[tuple[TestClient, dict[str, str], Store]]:
    wf = make(name="tickets", gates=keel.Gates(mvp=keel.MvpLimits(api_keys=("billing-system",))),
              policy=keel.Policy(threshold=0.8, audit_rate=0.0))
    st = Store.open(bench.db)
    k = {name: create_key(st, role, name)[1]
         for role, name in (("submitter", "billing-system"), ("submitter", "intranet"),
                            ("reviewer", "alice"), ("approver", "Ana Ruiz"),
                            ("admin", "ops-admin"))}
    try:
        with TestClient(app_for(st, workflow=wf)) as client:
            yield client, k, st
    finally:
        st.close()


def test_the_gate_over_http(api: tuple[TestClient, dict[str, str], Store]) -> None:
    client, k, st = api
    sure = {"id": "a1", "text": "a long enough text"}
    first = client.post("/v1/decisions", json=sure, headers=bearer(k["intranet"]))
    assert first.status_code == 202 and first.json()["reason"] == "prototype", first.text

    rep = client.get("/v1/gate", headers=bearer(k["alice"]))
    assert rep.status_code == 200, rep.text
    body = rep.json()
    assert (body["stage"], body["to"], body["ready"]) == ("prototype", "mvp", False)
    assert [c["id"] for c in body["criteria"]] == [d[0] for d in gates.DEFAULTS]
    assert client.get("/v1/gate?to=production", headers=bearer(k["alice"])).json()["to"] == \
        "production"
    assert client.get("/v1/gate?to=staging", headers=bearer(k["alice"])).status_code == 422
    assert client.get("/v1/gate").status_code == 401

    promote = {"to": "mvp", "override": True, "reason": "pilot"}
    denied = client.post("/v1/gate/promote", json=promote, headers=bearer(k["alice"]))
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "keel.auth.forbidden"
    not_ready = client.post("/v1/gate/promote", json={"to": "mvp"}, headers=bearer(k["ops-admin"]))
    assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "keel.gate.not_ready"
    no_reason = client.post("/v1/gate/promote", json={"to": "mvp", "override": True},
                            headers=bearer(k["ops-admin"]))
    assert no_reason.status_code == 409 and "written reason" in no_reason.text
    assert gates.current(st, "tickets") == "prototype"
    done = client.post("/v1/gate/promote", json=promote, headers=bearer(k["ops-admin"]))
    assert done.status_code == 200 and done.json()["stage"] == "mvp", done.text
    hist = client.get("/v1/gate/history", headers=bearer(k["alice"])).json()
    assert [(h["stage"], h["actor"], h["override"], h["reason"]) for h in hist] == [
        ("mvp", "ops-admin", True, "pilot")]

    # the running server follows the stage: an MVP decides, and only from the keys it names
    second = client.post("/v1/decisions", json={"id": "a2", "text": "another long text"},
                         headers=bearer(k["billing-system"]))
    assert second.status_code == 200 and second.json()["disposition"] == "accepted", second.text
    other = client.post("/v1/decisions", json={"id": "a3", "text": "one more long text"},
                        headers=bearer(k["intranet"]))
    assert other.status_code == 403 and "intranet is not one of them" in other.text

    sign = {"kind": "security_review", "note": "pen test passed"}
    for who in ("alice", "billing-system"):
        assert client.post("/v1/gate/sign", json=sign, headers=bearer(k[who])).status_code == 403
    signed = client.post("/v1/gate/sign", json=sign, headers=bearer(k["Ana Ruiz"]))
    assert signed.status_code == 201 and signed.json()["signer"] == "Ana Ruiz", signed.text
    (kept,) = gate_sql.signatures(st, "tickets")
    assert (kept["signer"], kept["kind"], kept["note"]) == ("Ana Ruiz", "security_review",
                                                             "pen test passed")
    assert kept["workflow_version"] == client.app.state.workflow.version
    (v,) = [c for c in client.get("/v1/gate", headers=bearer(k["alice"])).json()["criteria"]
            if c["id"] == "security_review"]
    assert v["status"] == "pass" and "Ana Ruiz" in v["detail"]

    login = client.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', login.text)
    assert csrf
    client.post("/login", data={"key": k["alice"], "csrf": csrf.group(1)}, follow_redirects=False)
    page = client.get("/ui/gate")
    assert page.status_code == 200 and "Is tickets ready for production?" in page.text
    assert "security review signed by an approver" in page.text and "pilot" in page.text


def test_the_score_is_the_weakest_section_and_a_section_set_aside_is_not_scored(
        bench: Bench) -> None:
    Store.open(bench.db).close()
    rep = bench.gate()
    assert rep["sections"]["Monitoring"] == {"passed": 1, "of": 2}  # drift monitor declared
    assert (rep["score"], rep["band"]) == (1, "first steps: serious gaps remain")
    bench.write(GATES=f"keel.Gates(alerts_to={HOOK!r}, not_applicable={{"
                "'realized_accuracy': 'people decide every record', "
                "'drift_monitor': 'the inputs are generated by us'})")
    rep = bench.gate()
    assert rep["sections"]["Monitoring"] == {"passed": 0, "of": 0}
    assert rep["score"] == 1, rep["sections"]  # the sections that have criteria decide


# -- where the gates meet the rest of keel ----------------------------------------------------------
def test_alerts_go_where_the_gates_send_them(sqlite_bench: Bench) -> None:
    bench = sqlite_bench
    with recording_server() as hook:
        bench.write(ALERTS="[keel.AlertRule('review_backlog_age_s', above=0.0, min_count=1)]",
                    GATES=f"keel.Gates(alerts_to={hook.url!r})")
        bench.run(0, 5)  # a prototype: five records wait for a person
        assert bench.verdict("alerts")["status"] == "pass"
        checked = bench.json("alerts", "check", str(bench.wf))  # the file says where alerts go
        assert [s["state"] for s in checked["statuses"]] == ["firing"]
        assert len(hook.requests) == 1


def test_mvp_sources_match_the_file_however_its_path_is_spelled(sqlite_bench: Bench) -> None:
    bench = sqlite_bench
    bench.write(GATES='keel.Gates(mvp=keel.MvpLimits(sources=("orders/*.csv",)))')
    bench.force("mvp")
    (bench.folder / "orders").mkdir()
    ok = _csv(bench.folder / "orders" / "monday.csv", 0, 5)
    _csv(bench.folder / "secret.csv", 100, 5)
    sneaky = bench.cli("run", str(bench.wf), "orders/../secret.csv", code=None)  # cwd: folder
    plain = bench.cli("run", str(bench.wf), str(ok.resolve()), code=None)
    assert (sneaky.returncode, plain.returncode) == (1, 0), (sneaky.stderr, plain.stderr)


def test_a_server_promoted_to_production_stops_the_mvp_audits(sqlite_bench: Bench) -> None:
    bench = sqlite_bench
    wf = make(name="tickets", gates=keel.Gates(mvp=keel.MvpLimits(audit_rate=1.0)),
              policy=keel.Policy(threshold=0.8, audit_rate=0.0))
    with bench.store() as st:
        admin, sub = create_key(st, "admin", "ops-admin")[1], create_key(st, "submitter", "app")[1]
        with TestClient(app_for(st, workflow=wf)) as client:
            for n, to in enumerate(("mvp", "production")):
                done = client.post("/v1/gate/promote", headers=bearer(admin),
                                   json={"to": to, "override": True, "reason": "test"})
                assert done.status_code == 200, done.text
                answer = client.post("/v1/decisions", headers=bearer(sub),
                                     json={"id": f"a{n}", "text": "a long enough text"})
                assert answer.json()["disposition"] == "accepted", answer.text
        audited = [t["key"] for t in ReviewQueue(st).list(reason="audit_sample")]
    assert audited == ["a0"]  # the MVP audits all; production as declared, none


def test_in_production_a_registered_edit_waits_for_a_rollout(sqlite_bench: Bench) -> None:
    bench = sqlite_bench
    bench.run(0, 5)
    bench.force("production")
    bench.write(POLICY="keel.Policy(threshold=0.5, audit_rate=0.0)")
    bench.cli("release", "register", str(bench.wf), "--name", "r2")
    out = bench.run(100, 10)
    assert out["releases"] == {"r1": 10}  # the champion decides until r2 is rolled out
