"""Releases: the champion, promotion and rollback on evidence, shadow and canary rollouts,
what was live when, keel eval, and release artifacts, on SQLite and PostgreSQL.

The models are plain functions with one answer per input; the truth is known (a text longer
than 10 characters is "long"), and reviewers are simulated: they decide every open task as
the truth says.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import pickle
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from tests._cli import Result, keel_cli
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel import releases
from keel.errors import ReleaseError
from keel.review import ReviewQueue
from keel.store import Store
from keel.store import releases as sql

#: Small steps and samples so that a rollout ends in a few hundred records.
QUICK = {"steps": (50, 100), "min_decisions": 20, "min_reviewed": 10, "tolerance": 0.1,
         "check_every_s": 0}


# -- the truth, the models, the traffic ----------------------------------------------------------
def _truth(text: str) -> str:
    return "long" if len(text) > 10 else "short"


def _flip(label: str) -> str:
    return "short" if label == "long" else "long"


def _confidence(text: str) -> float:
    return 0.3 if "unsure" in text else 0.95


def champion_answer(msg: Any) -> tuple[dict[str, str], float]:
    """Right, except on texts that say 'tricky'."""
    label = _truth(msg.text)
    return {"label": _flip(label) if "tricky" in msg.text else label}, _confidence(msg.text)


def good_answer(msg: Any) -> tuple[dict[str, str], float]:
    """Always right."""
    return {"label": _truth(msg.text)}, _confidence(msg.text)


def bad_answer(msg: Any) -> tuple[dict[str, str], float]:
    """Wrong on every text whose length is a multiple of 3, and sure of itself."""
    label = _truth(msg.text)
    return {"label": _flip(label) if len(msg.text) % 3 == 0 else label}, 0.95


def broken_answer(msg: Any) -> tuple[dict[str, str], float]:
    raise RuntimeError("the challenger's endpoint is gone")


def shouting_answer(msg: Any) -> tuple[dict[str, str], float]:
    """Another model altogether: answers in capitals."""
    return {"label": _truth(msg.text).upper()}, 0.95


def _text(i: int) -> str:
    return "x" * (3 + i % 15) + (" tricky" if i % 10 == 3 else "") + (" unsure" if i % 5 == 0 else "")


def _rows(start: int, n: int) -> list[dict[str, str]]:
    return [{"id": f"k{i}", "text": _text(i)} for i in range(start, start + n)]


def _right(key: str) -> dict[str, str]:
    return {"label": _truth(_text(int(key[1:])))}


def _wf(model: keel.Model, **rollout: Any) -> keel.Workflow:
    return make(model, rollout=keel.Rollout(**{**QUICK, **rollout}))


def _fn(answer: Any) -> keel.FunctionModel:
    return keel.FunctionModel(answer)


# -- people and the store ---------------------------------------------------------------------
def _review_all(store: Store) -> int:
    """Decide every open task as the truth says; returns how many."""
    queue = ReviewQueue(store)
    n = 0
    while (task := queue.claim(None, "rita")) is not None:
        right = _right(task["key"])
        if task["model_output"] == right:
            queue.decide(task["id"], "rita", "accept")
        else:
            queue.decide(task["id"], "rita", "correct", right)
        n += 1
    return n


def _live(wf: keel.Workflow, store: Store, start: int, n: int, chunk: int = 60) -> list[dict[str, Any]]:
    """Live traffic in chunks; reviewers keep up; keel looks at the evidence after each chunk.
    Stops when the rollout has ended. Returns what each look decided."""
    looks = []
    for at in range(start, start + n, chunk):
        keel.run(wf, _rows(at, chunk), store=store)
        _review_all(store)
        look = releases.tend(wf, store)
        if look is not None:
            looks.append(look)
        if sql.active_rollout(store, wf.name) is None:
            break
    return looks


def _decisions(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(
            "select r.key, d.release_id, d.decided_at, d.disposition, d.output from decisions d "
            "join records r on r.id = d.record_id order by d.decided_at")).mappings()]


def _kinds(store: Store) -> list[tuple[str, str | None]]:
    return [(ev["kind"], ev["release"]) for ev in releases.history(store, "tickets")]


def _err(res: Result) -> str:
    """stderr with Rich's line wrapping undone."""
    return " ".join(res.stderr.split())


def _json(res: Result) -> Any:
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


# -- workflow files, for the CLI -----------------------------------------------------------------
WORKFLOW_FILE = textwrap.dedent('''
    from pydantic import BaseModel, Field
    import keel

    class Msg(BaseModel):
        id: str = Field(min_length=1)
        text: str = Field(min_length=1)

    class Label(BaseModel):
        label: str
        EXTRA

    def answer(msg):
        label = "long" if len(msg.text) > 10 else "short"
        if WRONG_WHEN:
            label = "short" if label == "long" else "long"
        return {"label": label}, (0.3 if "unsure" in msg.text else 0.95)

    workflow = keel.Workflow(
        name="tickets", input=Msg, output=Label, key="id", model=keel.FunctionModel(answer),
        policy=keel.Policy(threshold=0.8, audit_rate=0.0),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
        rollout=keel.Rollout(steps=(50, 100), min_decisions=20, min_reviewed=10,
                             tolerance=0.1, check_every_s=0),
    )
''')


def _workflow_file(path: Path, wrong_when: str = '"tricky" in msg.text',
                   extra: str = "") -> Path:
    """The champion's file by default; ``wrong_when="False"`` is a challenger that is always
    right; ``extra`` adds a field to the output contract."""
    path.write_text(WORKFLOW_FILE.replace("WRONG_WHEN", wrong_when)
                    .replace("EXTRA", extra or "pass"))
    return path


def _csv(path: Path, start: int, n: int, labels: bool = False) -> Path:
    if labels:
        return write_csv(path, [(f"k{i}", _text(i), _truth(_text(i)))
                                for i in range(start, start + n)], header="id,text,label")
    return write_csv(path, [(f"k{i}", _text(i)) for i in range(start, start + n)])


# -- 1. the first run -----------------------------------------------------------------------------
def test_first_run_makes_the_declared_release_champion_and_every_decision_names_it(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    ran = keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 20)), "--db", db_url)
    assert ran.returncode == 0, ran.stderr
    assert "r1 decided 20" in " ".join(ran.stdout.split())

    (r1,) = _json(keel_cli(capsys, "releases", "list", "-w", str(wf_py), "--db", db_url, "--json"))
    assert (r1["name"], r1["aliases"], r1["decided"], r1["runnable"]) == ("r1", ["champion"], 20, True)
    assert r1["note"] == "declared by the workflow file"
    store = Store.open(db_url)
    try:
        assert {d["release_id"] for d in _decisions(store)} == {r1["id"]}
        assert len(_decisions(store)) == 20
    finally:
        store.close()

    trace = _json(keel_cli(capsys, "trace", "k3", "--json", "--db", db_url))
    assert trace["decision"]["release_id"] == r1["id"]
    assert trace["decision"]["release"] == "r1"
    assert "(release r1)" in keel_cli(capsys, "trace", "k3", "--db", db_url).stdout
    (st,) = _json(keel_cli(capsys, "status", "--db", db_url, "--json"))
    assert st["releases"]["champion"] == "r1" and st["releases"]["rollout"] is None

    hist = _json(keel_cli(capsys, "releases", "history", "-w", str(wf_py), "--db", db_url, "--json"))
    assert [(e["kind"], e["release"]) for e in hist["events"]] == [("registered", "r1"), ("declared", "r1")]
    assert hist["events"][1]["reason"] == "first run of the workflow"
    assert hist["live"] == {"champion": "r1"}

    # the same file again: the same release; a changed file (nothing promoted yet) is the
    # new champion, and what r1 decided stays r1's
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "more.csv", 20, 10)), "--db", db_url)
    _workflow_file(wf_py, wrong_when="False")
    ran = keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "last.csv", 30, 10)), "--db", db_url)
    assert "r2 decided 10" in " ".join(ran.stdout.split())
    listed = _json(keel_cli(capsys, "releases", "list", "-w", str(wf_py), "--db", db_url, "--json"))
    assert [(r["name"], r["aliases"], r["decided"]) for r in listed] == [
        ("r1", [], 30), ("r2", ["champion"], 10)]
    hist = _json(keel_cli(capsys, "releases", "history", "-w", str(wf_py), "--db", db_url, "--json"))
    assert hist["events"][-1]["kind"] == "declared"
    assert hist["events"][-1]["reason"] == "the workflow file declares a new release"


# -- 2. promotion on evidence -------------------------------------------------------------------
def test_a_challenger_as_good_goes_shadow_then_canary_then_champion_on_evidence(store: Store) -> None:
    wf = _wf(_fn(champion_answer))
    keel.run(wf, _rows(0, 40), store=store)
    r1 = releases.champion_now(store, "tickets")
    assert r1 is not None and r1.name == "r1"
    good, new = releases.register(wf, store, model=_fn(good_answer), name="good")
    assert new and releases.champion_now(store, "tickets") == r1  # registering changes nothing live

    releases.start(wf, store, "good", shadow=True, canary=[50, 100], by="olga")
    s = keel.run(wf, _rows(40, 60), store=store)
    assert dict(s.releases) == {"r1": 60}  # in the shadow it answers and decides nothing
    # where the two answer differently, a person is asked who is right
    with store.engine.connect() as conn:
        checks = set(conn.execute(text(
            "select r.key from review_tasks t join records r on r.id = t.record_id "
            "where t.reason = 'release_check'")).scalars())
    assert checks == {f"k{i}" for i in range(40, 100) if "tricky" in _text(i)} and len(checks) == 6
    _review_all(store)
    look = releases.tend(wf, store)
    assert look is not None and look["verdict"] == "promote" and look["shadow"]
    assert (look["paired"]["records"], look["paired"]["differ"]) == (60, 6)
    assert look["paired"]["labelled_differences"] == look["paired"]["challenger_right"] == 6
    st = releases.status(wf, store)["rollout"]
    assert (st["status"], st["share"]) == ("awaiting_approval", 0.0)
    assert releases.tend(wf, store) is None  # the canary waits for a person
    releases.resume(wf, store, by="olga", reason="the shadow looks right")

    # the canary's sample depends on the rollout's id: how many looks it takes varies, but
    # a challenger that is never wrong is never rolled back
    looks = _live(wf, store, 100, 900)
    assert {x["verdict"] for x in looks} <= {"hold", "promote"} and looks[-1]["verdict"] == "promote"
    champion = releases.champion_now(store, "tickets")
    assert champion is not None and champion.id == good.id
    assert sql.aliases(store, "tickets") == {"champion": good.id}  # the challenger alias is gone

    events = releases.history(store, "tickets")
    assert [(e["kind"], e["release"]) for e in events] == [
        ("registered", "r1"), ("declared", "r1"), ("registered", "good"),
        ("shadow_started", "good"), ("shadow_passed", "good"), ("canary_approved", "good"),
        ("step", "good"), ("promoted", "good")]
    for ev in events[4:]:
        if ev["kind"] != "canary_approved":
            assert ev["evidence"]["verdict"] == "promote" and ev["actor"] == "keel"
            assert ev["evidence"]["difference"]["low"] >= -0.1
            assert "not worse than the champion" in ev["reason"]
    assert events[5]["actor"] == "olga" and events[5]["reason"] == "the shadow looks right"
    assert events[6]["reason"].startswith("to 100%")
    assert events[-1]["alias"] == "champion"

    # the new champion decides everything; the workflow object still declares r1, and says so
    s = keel.run(wf, _rows(1000, 30), store=store)
    assert dict(s.releases) == {"good": 30}
    assert any("declares r1, but the champion is good" in n for n in s.notes)


# -- 3. automatic rollback ------------------------------------------------------------------------
def test_a_wrong_challenger_is_rolled_back_with_its_evidence_on_the_audit_trail(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    store = Store.open(db_url)
    try:
        wf = _wf(_fn(champion_answer))
        keel.run(wf, _rows(0, 60), store=store)
        _review_all(store)
        r1 = releases.champion_now(store, "tickets")
        releases.register(wf, store, model=_fn(bad_answer), name="bad")
        releases.start(wf, store, "bad", canary=[50, 100])
        looks = _live(wf, store, 60, 1200)
        assert [x["verdict"] for x in looks][-1] == "rollback"
        assert set(x["verdict"] for x in looks[:-1]) <= {"hold"}
        assert releases.champion_now(store, "tickets") == r1
        assert sql.aliases(store, "tickets") == {"champion": r1.id}  # no challenger any more
        last = releases.history(store, "tickets")[-1]
        assert (last["kind"], last["release"], last["actor"]) == ("rolled_back", "bad", "keel")
        assert "right less often than the champion" in last["reason"]
        ev = last["evidence"]
        assert ev["verdict"] == "rollback" and ev["difference"]["high"] < 0
        assert ev["paired"]["champion_right"] > ev["paired"]["challenger_right"]
        s = keel.run(wf, _rows(5000, 20), store=store)
        assert dict(s.releases) == {"r1": 20}
        status = releases.status(wf, store)["rollout"]
        assert status["status"] == "rolled_back" and not status["active"]
        assert status["evidence"]["verdict"] == "rollback"
    finally:
        store.close()

    verified = keel_cli(capsys, "audit", "verify", "--db", db_url, "--json")
    assert verified.returncode == 0
    assert json.loads(verified.stdout)["ok"] and json.loads(verified.stdout)["release_trails"] == 1
    out = tmp_path / "trail.jsonl"
    assert keel_cli(capsys, "audit", "export", "--out", str(out), "--db", db_url).returncode == 0
    trail = [json.loads(line) for line in out.read_text().splitlines()]
    kinds = [e["kind"] for e in trail if e["record_id"] == sql.trail_id("tickets")]
    assert kinds == ["release_registered", "release_declared", "release_registered",
                     "release_canary_started", "release_rolled_back"]
    (rolled,) = [e for e in trail if e["kind"] == "release_rolled_back"]
    assert rolled["detail"]["evidence"]["verdict"] == "rollback"
    assert rolled["detail"]["reason"] == last["reason"]


# -- 4. not enough evidence -----------------------------------------------------------------------
def test_before_enough_evidence_tend_holds_and_changes_nothing(store: Store) -> None:
    wf = _wf(_fn(champion_answer), min_decisions=100, min_reviewed=30)
    keel.run(wf, _rows(0, 40), store=store)
    releases.register(wf, store, model=_fn(good_answer), name="good")
    started = releases.start(wf, store, "good", canary=[50, 100])
    before = (_kinds(store), sql.aliases(store, "tickets"))
    for at in (40, 80):
        keel.run(wf, _rows(at, 40), store=store)
        _review_all(store)
        look = releases.tend(wf, store)
        assert look is not None and look["verdict"] == "hold"
        assert "not enough evidence yet" in look["why"] and "of 100 challenger decisions" in look["why"]
    assert (_kinds(store), sql.aliases(store, "tickets")) == before
    ro = sql.active_rollout(store, "tickets")
    assert ro is not None and (ro["id"], ro["status"], ro["step"]) == (started["id"], "running", 0)
    assert ro["evidence"]["verdict"] == "hold"  # the latest look is kept, as no event
    champion = releases.champion_now(store, "tickets")
    assert champion is not None and champion.name == "r1"


# -- 5. sticky assignment -------------------------------------------------------------------------
def test_canary_assignment_is_sticky_monotone_and_near_its_share() -> None:
    keys = [f"ticket-{i}" for i in range(20_000)]
    shares = (5.0, 25.0, 50.0, 100.0)
    inside = {s: {k for k in keys if releases.in_canary(k, "ro-1", s)} for s in shares}
    for small, big in itertools.pairwise(shares):
        assert inside[small] <= inside[big]  # a key in at 5% stays in at 25%
    for s in shares:
        assert abs(len(inside[s]) / len(keys) - s / 100) < 0.015
    assert not any(releases.in_canary(k, "ro-1", 0.0) for k in keys[:1000])
    # another rollout draws another sample
    other = {k for k in keys if releases.in_canary(k, "ro-2", 25.0)}
    assert other != inside[25.0] and abs(len(other & inside[25.0]) / len(keys) - 0.0625) < 0.015


def test_during_a_canary_each_key_goes_where_its_hash_says(store: Store) -> None:
    wf = _wf(_fn(champion_answer), min_decisions=10_000)  # never leaves its first step
    keel.run(wf, _rows(0, 10), store=store)
    r1 = releases.champion_now(store, "tickets")
    assert r1 is not None
    good, _new = releases.register(wf, store, model=_fn(good_answer), name="good")
    ro = releases.start(wf, store, "good", canary=[25, 100])
    s = keel.run(wf, _rows(10, 800), store=store, batch_size=100)
    assert counts_balance(s) and s.releases["good"] + s.releases["r1"] == 800
    decided = [d for d in _decisions(store) if int(d["key"][1:]) >= 10]
    assert len(decided) == 800
    for d in decided:
        want = good.id if releases.in_canary(d["key"], ro["id"], 25.0) else r1.id
        assert d["release_id"] == want, d["key"]
    assert 0.18 < s.releases["good"] / 800 < 0.32
    # the same keys again: nothing is decided twice, no record changes release
    first = {d["key"]: d["release_id"] for d in _decisions(store)}
    again = keel.run(wf, _rows(10, 800), store=store)
    assert again.duplicates == 800 and again.decided == 0
    assert {d["key"]: d["release_id"] for d in _decisions(store)} == first


# -- 6. rollback in the middle of a run ---------------------------------------------------------------
def test_a_run_in_progress_switches_to_the_champion_when_the_challenger_is_rolled_back(
        store: Store) -> None:
    wf = _wf(_fn(champion_answer))
    keel.run(wf, _rows(0, 60), store=store)
    _review_all(store)
    r1 = releases.champion_now(store, "tickets")
    assert r1 is not None
    bad, _new = releases.register(wf, store, model=_fn(bad_answer), name="bad")
    ro = releases.start(wf, store, "bad", canary=[50, 100])

    def reviewers(_n: int) -> None:  # they work the queue between batches, during the rollout
        if sql.active_rollout(store, "tickets") is not None:
            _review_all(store)

    # one run of many batches; the runner looks at the evidence at every batch boundary
    # (check_every_s=0)
    s = keel.run(wf, _rows(60, 600), store=store, batch_size=30, progress=reviewers)
    assert counts_balance(s) and s.decided == 600
    (rolled,) = [e for e in releases.history(store, "tickets") if e["kind"] == "rolled_back"]
    decided = [d for d in _decisions(store) if int(d["key"][1:]) >= 60]
    before = [d for d in decided if d["decided_at"] < rolled["at"]]
    after = [d for d in decided if d["decided_at"] > rolled["at"]]
    assert len(after) >= 200, "the rollback came too late in the run to show anything"
    # the batch the model was already answering when the rollback was taken (keel run asks for
    # the next batch while the last one lands) finishes on the release that started it; every
    # record after that is the champion's
    late = [d for d in after if d["release_id"] != r1.id]
    assert len(late) <= 30 and {d["release_id"] for d in late} <= {bad.id}
    assert {d["release_id"] for d in after[30:]} == {r1.id}
    mine = [d for d in before if d["release_id"] == bad.id] + late
    assert mine and all(releases.in_canary(d["key"], ro["id"], 50.0) for d in mine)
    assert dict(s.releases) == {"r1": 600 - len(mine), "bad": len(mine)}
    # what the challenger decided stays its decision
    counts = {r["name"]: r["decided"] for r in releases.listing(store, "tickets")}
    assert counts["bad"] == len(mine)


def test_a_challenger_that_always_fails_is_rolled_back_by_its_guard_rail(store: Store) -> None:
    wf = _wf(_fn(champion_answer))
    keel.run(wf, _rows(0, 20), store=store)
    r1 = releases.champion_now(store, "tickets")
    assert r1 is not None
    broken, _new = releases.register(wf, store, model=_fn(broken_answer), name="broken")
    releases.start(wf, store, "broken", canary=[50, 100])
    s = keel.run(wf, _rows(20, 300), store=store, batch_size=20)
    assert counts_balance(s)
    last = releases.history(store, "tickets")[-1]
    assert (last["kind"], last["release"]) == ("rolled_back", "broken")
    assert last["reason"].startswith("guard rail: error rate 100.0% against the champion's 0.0%")
    failed = [d for d in _decisions(store) if d["release_id"] == broken.id]
    assert failed and {d["disposition"] for d in failed} == {"failed"}
    assert s.counts["failed"] == len(failed) < 100
    # nothing is lost: a replay decides them again, with the champion
    again = keel.replay(wf, "failed", store=store)
    assert again.counts["failed"] == 0 and dict(again.releases) == {"r1": len(failed)}


# -- 7. what was live when ------------------------------------------------------------------------
def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def test_history_at_a_past_moment_names_what_was_live_then(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 10)), "--db", db_url)
    two = _workflow_file(tmp_path / "two.py", wrong_when="False")
    assert keel_cli(capsys, "release", "register", str(two), "--name", "two",
                    "--db", db_url).returncode == 0
    time.sleep(0.01)
    t_before = time.time()
    time.sleep(0.01)
    promoted = keel_cli(capsys, "release", "promote", "two", "-w", str(wf_py), "--reason",
                        "better on the eval", "--db", db_url, "--json")
    assert _json(promoted)["champion"] == "two"
    time.sleep(0.01)
    t_after = time.time()
    time.sleep(0.01)
    rolled = _json(keel_cli(capsys, "rollback", str(wf_py), "--reason", "complaints",
                            "--db", db_url, "--json"))
    assert (rolled["rolled_back"], rolled["champion_name"]) == ("champion", "r1")

    def live(at: str) -> dict[str, str]:
        out = _json(keel_cli(capsys, "releases", "history", "-w", str(wf_py), "--at", at,
                             "--db", db_url, "--json"))
        assert all(e["at"] <= out["at"] for e in out["events"])
        return dict(out["live"])

    assert live(_iso(t_before)) == {"champion": "r1"}
    assert live(_iso(t_after)) == {"champion": "two"}
    assert live(repr(t_after)) == {"champion": "two"}  # seconds since the epoch
    assert live(_iso(time.time())) == {"champion": "r1"}
    store = Store.open(db_url)
    try:
        ids = {r["name"]: r["id"] for r in releases.listing(store, "tickets")}
        assert releases.at(store, "tickets", t_after).aliases == {"champion": ids["two"]}
        assert releases.at(store, "tickets", t_before).aliases == {"champion": ids["r1"]}
        kinds = [(e["kind"], e["release"], e["reason"]) for e in releases.history(store, "tickets")][-2:]
        assert kinds == [("promoted", "two", "better on the eval"), ("rolled_back", "r1", "complaints")]
    finally:
        store.close()

    for bad, why in (("yesterday", "give an ISO 8601 time"), ("2999-01-01T00:00:00Z", "in the future")):
        res = keel_cli(capsys, "releases", "history", "-w", str(wf_py), "--at", bad, "--db", db_url)
        assert res.returncode == 1 and why in _err(res) and "Traceback" not in res.stderr


# -- 8. bad input -----------------------------------------------------------------------------------
def test_mistakes_are_refused_clearly_and_change_nothing(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 10)), "--db", db_url)
    two = _workflow_file(tmp_path / "two.py", wrong_when="False")
    keel_cli(capsys, "release", "register", str(two), "--name", "two", "--db", db_url)
    other = _workflow_file(tmp_path / "other.py", extra="note: str = ''")
    assert keel_cli(capsys, "release", "register", str(other), "--name", "other",
                    "--db", db_url).returncode == 0
    labels = _csv(tmp_path / "labels.csv", 100, 20, labels=True)

    def state() -> tuple[Any, ...]:
        st = Store.open(db_url)
        try:
            with st.engine.connect() as conn:
                evals = conn.execute(text("select count(*) from eval_runs")).scalar_one()
                rollouts = conn.execute(text("select status from rollouts")).scalars().all()
            return (_kinds(st), sql.aliases(st, "tickets"), evals, sorted(rollouts))
        finally:
            st.close()

    def refused(*args: str, says: tuple[str, ...]) -> None:
        res = keel_cli(capsys, *args, "--db", db_url)
        msg = _err(res)
        assert res.returncode == 1, (args, res.stdout, msg)
        assert "Traceback" not in res.stderr
        for part in says:
            assert part in msg, (args, msg)

    before = state()
    unknown = ("no release 'nosuch' in tickets", "releases: r1, two, other", "`keel releases list`")
    refused("release", "promote", "nosuch", "-w", str(wf_py), says=unknown)
    refused("rollout", "start", str(wf_py), "--challenger", "nosuch", says=unknown)
    refused("eval", str(wf_py), "--labels", str(labels), "--release", "nosuch", says=unknown)
    refused("eval", str(wf_py), "--labels", str(labels), "--against", "nosuch", says=unknown)
    # a release made for another output contract does not decide this workflow's records
    contract = ("release other was made for output contract Label", "but tickets declares Label",
                "`keel release register`")
    refused("release", "promote", "other", "-w", str(wf_py), says=contract)
    refused("rollout", "start", str(wf_py), "--challenger", "other", "--canary", "5,50",
            says=contract)
    refused("eval", str(wf_py), "--labels", str(labels), "--release", "other", says=contract)
    # labels files that cannot be evaluated on
    no_label = _csv(tmp_path / "unlabelled.csv", 100, 5)
    refused("eval", str(wf_py), "--labels", str(no_label),
            says=("has no label column: none of label is among its columns (id, text)",
                  "--label-column COLUMN"))
    refused("eval", str(wf_py), "--labels", str(labels), "--label-column", "truth",
            says=("has no column 'truth'", "id, text, label"))
    empty = write_csv(tmp_path / "empty.csv", [(f"k{i}", _text(i), "") for i in range(5)],
                      header="id,text,label")
    refused("eval", str(wf_py), "--labels", str(empty),
            says=("column 'label' is empty in every row", "nothing to evaluate on"))
    header_only = write_csv(tmp_path / "header.csv", [], header="id,text,label")
    refused("eval", str(wf_py), "--labels", str(header_only),
            says=("has no labelled rows to evaluate on",))
    refused("rollout", "start", str(wf_py), "--challenger", "r1", "--canary", "5,50",
            says=("release r1 is already the champion",))
    refused("rollout", "start", str(wf_py), "--challenger", "two", "--canary", "50,5",
            says=("steps must rise", "5,25,50,100"))
    refused("rollout", "start", str(wf_py), "--challenger", "two", "--canary", "50,150",
            says=("percentages in [0, 100]",))
    refused("rollout", "start", str(wf_py), "--challenger", "two", "--canary", "0,50",
            says=("above 0", "--shadow"))
    refused("rollout", "start", str(wf_py), "--challenger", "two", "--canary", "half",
            says=("--canary 'half'", "e.g. 5,25,50,100"))
    refused("rollback", str(wf_py), says=("has had one champion only", "`keel releases history`"))
    assert state() == before

    # one rollout at a time
    assert keel_cli(capsys, "rollout", "start", str(wf_py), "--challenger", "two", "--canary",
                    "5,50", "--db", db_url).returncode == 0
    during = state()
    refused("rollout", "start", str(wf_py), "--challenger", "two", "--shadow",
            says=("a rollout is already under way for tickets", "`keel rollout abort`"))
    refused("rollout", "resume", str(wf_py), says=("already running",))
    assert state() == during


# -- rollout controls from the CLI -------------------------------------------------------------------
def test_pause_resume_and_abort_from_the_cli(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 10)), "--db", db_url)
    keel_cli(capsys, "release", "register", str(_workflow_file(tmp_path / "two.py", wrong_when="False")),
             "--name", "two", "--db", db_url)
    started = _json(keel_cli(capsys, "rollout", "start", str(wf_py), "--challenger", "two",
                             "--canary", "50,100", "--reason", "try it", "--db", db_url, "--json"))
    assert started["rollout"]["status"] == "running" and started["rollout"]["share"] == 50.0
    assert started["rollout"]["challenger"] == "two" and started["champion"]["name"] == "r1"

    def cli(*args: str) -> dict[str, Any]:
        return dict(_json(keel_cli(capsys, "rollout", *args, str(wf_py), "--db", db_url, "--json")))

    (st,) = _json(keel_cli(capsys, "status", "--db", db_url, "--json"))
    assert st["releases"]["challenger"] == "two"
    assert (st["releases"]["rollout"]["status"], st["releases"]["rollout"]["share"]) == ("running", 50.0)
    assert cli("pause")["rollout"]["status"] == "paused"
    res = keel_cli(capsys, "rollout", "pause", str(wf_py), "--db", db_url)
    assert res.returncode == 1 and "the rollout is paused, not running" in _err(res)
    # a paused rollout keeps its split but takes no step, even on evidence that would promote
    wf = keel.load_workflow(wf_py)
    store = Store.open(db_url)
    try:
        verdicts = []
        for at in range(10, 400, 60):  # until the evidence would promote
            s = keel.run(wf, _rows(at, 60), store=store)
            assert set(s.releases) == {"r1", "two"}
            _review_all(store)
            ro = sql.active_rollout(store, "tickets")
            assert ro is not None and (ro["status"], ro["step"]) == ("paused", 0)
            verdicts.append(releases.evidence(wf, store, ro)["verdict"])
            if verdicts[-1] == "promote":
                break
        assert verdicts[-1] == "promote"
        look = releases.tend(wf, store)
        assert look is not None and look["verdict"] == "hold" and look["share"] == 50.0
        ro = sql.active_rollout(store, "tickets")
        assert ro is not None and (ro["status"], ro["step"]) == ("paused", 0)
    finally:
        store.close()
    assert cli("resume")["rollout"]["status"] == "running"
    aborted = cli("abort")
    assert aborted["rollout"]["status"] == "aborted" and aborted["champion"]["name"] == "r1"
    res = keel_cli(capsys, "rollout", "abort", str(wf_py), "--db", db_url)
    assert res.returncode == 1 and "no rollout is under way for tickets" in _err(res)
    ran = keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "after.csv", 500, 20)), "--db", db_url)
    assert "r1 decided 20" in " ".join(ran.stdout.split()) and "two decided" not in ran.stdout
    hist = _json(keel_cli(capsys, "releases", "history", "-w", str(wf_py), "--db", db_url, "--json"))
    assert [e["kind"] for e in hist["events"]][-4:] == ["canary_started", "paused", "resumed", "aborted"]
    assert hist["live"] == {"champion": "r1"}


# -- 9. keel eval ------------------------------------------------------------------------------------
def test_eval_compares_two_releases_and_keeps_the_run(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 10)), "--db", db_url)
    keel_cli(capsys, "release", "register", str(_workflow_file(tmp_path / "two.py", wrong_when="False")),
             "--name", "two", "--db", db_url)
    labels = _csv(tmp_path / "labels.csv", 1000, 100, labels=True)
    html = tmp_path / "report.html"
    out = _json(keel_cli(capsys, "eval", str(wf_py), "--labels", str(labels), "--release", "two",
                         "--against", "champion", "--html", str(html), "--db", db_url, "--json"))

    tricky = sum("tricky" in _text(i) for i in range(1000, 1100))
    unsure = sum("unsure" in _text(i) for i in range(1000, 1100))
    assert tricky == 10 and unsure == 20
    two, r1 = out["releases"]["two"], out["releases"]["r1"]
    assert (two["labelled"], two["accuracy"], r1["accuracy"]) == (100, 1.0, 0.9)
    assert two["coverage"] == r1["coverage"] == 0.8  # the unsure ones go to people
    assert two["auto_accuracy"] == 1.0 and two["ece"] is not None and r1["ece"] > two["ece"]
    classes = {c["class"]: c for c in two["per_class"]}
    assert set(classes["long"]) == {"class", "support", "predicted", "precision", "recall"}
    assert set(classes) == {"long", "short"} and classes["long"]["precision"] == 1.0
    assert sum(c["support"] for c in classes.values()) == 100
    c = out["comparison"]
    assert (c["release"], c["against"], c["verdict"]) == ("two", "r1", "better")
    assert c["mcnemar"]["release_only_right"] == 10 and c["mcnemar"]["against_only_right"] == 0
    assert c["mcnemar"]["p_value"] == pytest.approx(2 * 0.5 ** 10)
    assert c["accuracy_difference"] == pytest.approx(0.1)
    assert c["disagreements"] == 10

    page = html.read_text()
    assert "<svg" in page and "two" in page and "r1" in page
    store = Store.open(db_url)
    try:
        (run,) = sql.eval_runs(store, "tickets")
    finally:
        store.close()
    assert run["id"] == out["eval_run"] and run["rows"] == 100
    assert run["data_hash"] == hashlib.sha256(labels.read_bytes()).hexdigest() == out["data"]["sha256"]
    assert run["release_id"] == two["release_id"] and run["against_id"] == r1["release_id"]
    shown = _json(keel_cli(capsys, "releases", "show", "two", "-w", str(wf_py), "--db", db_url, "--json"))
    assert [(e["id"], e["verdict"]) for e in shown["evaluations"]] == [(out["eval_run"], "better")]
    # the evaluation touched no production record
    listed = {r["name"]: r["decided"] for r in _json(keel_cli(
        capsys, "releases", "list", "-w", str(wf_py), "--db", db_url, "--json"))}
    assert listed == {"r1": 10, "two": 0}


# -- 11. artifacts -------------------------------------------------------------------------------------
def test_a_promoted_release_decides_with_its_stored_model_after_the_file_moves_on(
        tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    wf_py = _workflow_file(tmp_path / "workflow.py")
    keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "in.csv", 0, 10)), "--db", db_url)
    store = Store.open(db_url)
    try:
        loud, _new = releases.register(keel.load_workflow(wf_py), store,
                                       model=_fn(shouting_answer), name="loud")
        assert loud.artifact is not None
    finally:
        store.close()
    assert keel_cli(capsys, "release", "promote", "loud", "-w", str(wf_py), "--db",
                    db_url).returncode == 0
    # the workflow file now declares yet another model; the champion (loud) still decides
    _workflow_file(wf_py, wrong_when="False")
    ran = keel_cli(capsys, "run", str(wf_py), str(_csv(tmp_path / "more.csv", 10, 10)), "--db", db_url)
    said = " ".join(ran.stdout.split()) + " ".join(ran.stderr.split())
    assert ran.returncode == 0 and "loud decided 10" in said
    assert "declares r2, but the champion is loud" in said  # r1, loud, then r2
    store = Store.open(db_url)
    try:
        later = [d for d in _decisions(store) if int(d["key"][1:]) >= 10]
        assert {d["release_id"] for d in later} == {loud.id}
        assert {json.loads(d["output"])["label"] for d in later} <= {"LONG", "SHORT"}
        # the artifact is what decides: bytes changed in the store are refused
        with store.tx() as conn:
            conn.execute(text("update release_artifacts set data = :d where sha256 = :s"),
                         {"d": b"not a model", "s": loud.artifact})
    finally:
        store.close()
    with pytest.raises(ReleaseError, match="its stored model artifact does not match its hash"):
        keel.run(wf_py, _rows(20, 5), db=db_url)


def test_a_release_registered_from_a_workflow_file_runs_in_another_process(
        tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    wf = keel.load_workflow(_workflow_file(tmp_path / "workflow.py"))
    keel.run(wf, _rows(0, 5), store=store)
    two = keel.load_workflow(_workflow_file(tmp_path / "two.py", wrong_when="False"))
    releases.register(two, store, name="two")
    # another process (a later `keel release promote`) has not imported two.py
    monkeypatch.delitem(sys.modules, two.model.fn.__module__)  # type: ignore[attr-defined]
    assert releases.promote(wf, store, "two").name == "two"


def test_an_openai_model_is_stored_without_its_api_key(store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    wf = make(_fn(good_answer))
    secret = "sk-test-not-a-real-key-4242"
    llm = keel.OpenAIModel("gpt-4o-mini", prompt="Is this long or short? {text}",
                           base_url="http://127.0.0.1:9/v1", api_key=secret)
    rel, _new = releases.register(wf, store, model=llm, name="llm")
    assert rel.artifact is not None and llm.api_key == secret  # the live object keeps it
    data = sql.artifact(store, rel.artifact)
    assert data is not None and secret.encode() not in data
    assert pickle.loads(data).api_key is None
    loaded = releases.model_for(wf, store, rel)
    assert isinstance(loaded, keel.OpenAIModel) and loaded.api_key is None
    assert loaded.version == rel.model_version
    assert rel.spec["prompt"]["text"] == "Is this long or short? {text}"
    # registered on its own, the model asks for the workflow's output contract as it would
    # when the workflow declares it: the same version, the same release
    assert loaded.contract is not None and loaded.contract.model.__name__ == "Label"
    declared = make(keel.OpenAIModel("gpt-4o-mini", prompt="Is this long or short? {text}",
                                     base_url="http://127.0.0.1:9/v1"))
    assert releases.release_id(releases.bundle(declared)) == rel.id


# -- the feedback loop ---------------------------------------------------------------------------------
def train_good(labels: list[dict[str, Any]]) -> keel.Model:
    """A 'trained' model: always right (it ignores the labels, and can be pickled)."""
    return keel.FunctionModel(good_answer, name="trained", version="trained-good")


def test_the_retraining_policy_trains_evaluates_and_starts_a_rollout(store: Store) -> None:
    wf = make(_fn(champion_answer), train=train_good, rollout=keel.Rollout(**QUICK),
              retrain=keel.Retrain(after_labels=50, holdout=0.3))
    s = keel.run(wf, _rows(0, 500), store=store)
    assert s.counts["in_review"] == 100 and s.retraining is None  # no labels yet
    assert _review_all(store) == 100
    out = releases.tend_retraining(wf, store)
    assert out is not None and out["trigger"] == "100 new labels (policy: after 50)"
    assert out["new_release"] and out["release"] == "r2" and out["action"] == "rollout started"
    assert out["held_out"] >= 20 and out["label_examples"] + out["held_out"] == 100
    assert out["eval"]["comparison"]["verdict"] != "worse"
    events = releases.history(store, "tickets")
    assert [(e["kind"], e["release"]) for e in events][-3:] == [
        ("registered", "r2"), ("retrained", "r2"), ("shadow_started", "r2")]
    retrained = events[-2]["evidence"]
    assert retrained["labels"] == 100 and retrained["held_out"] == out["held_out"]
    assert retrained["eval_run"] == out["eval"]["eval_run"]
    ro = sql.active_rollout(store, "tickets")
    assert ro is not None and ro["steps"] == [0.0, 50.0, 100.0]
    assert ro["challenger"] == out["release_id"]
    assert releases.tend_retraining(wf, store) is None  # one rollout at a time


def test_a_time_based_retraining_policy_fires_before_any_candidate(store: Store) -> None:
    wf = make(_fn(champion_answer), train=train_good, rollout=keel.Rollout(**QUICK),
              retrain=keel.Retrain(after_labels=None, every_s=3600))
    keel.run(wf, _rows(0, 20), store=store)
    assert releases.tend_retraining(wf, store) is None  # not an hour yet
    out = releases.tend_retraining(wf, store, now=time.time() + 3601)
    assert out is not None and out["trigger"] == "3600 s since the first run (policy: every 3600 s)"
    assert out["action"].startswith("none: fewer than 20 held-out labels")
    assert releases.tend_retraining(wf, store, now=time.time() + 60) is None
