"""The review queue on SQLite and PostgreSQL: claim, lease, decide, labels, audit trail."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from pathlib import Path
from typing import Any

import pytest
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.review import InvalidDecision, LeaseConflict, ReviewQueue
from keel.store import Store
from keel.store import reviews as sql


class Clock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def _seed(tmp_path: Path, store: Store, n: int = 8, **kw: Any) -> keel.Workflow:
    """n records, every other one low-confidence (text says 'unsure')."""
    rows = [(f"k{i}", "unsure about this one" if i % 2 == 0 else f"plain message {i}")
            for i in range(n)]
    wf = make(**kw)
    s = keel.run(wf, write_csv(tmp_path / "in.csv", rows), store=store)
    assert counts_balance(s)
    return wf


def _chain_ok(store: Store, key: str) -> list[str]:
    """The record's events in order; asserts the hash chain links up."""
    (rec,) = keel.trace(key, store=store)
    evs = rec["events"]
    for prev, ev in itertools.pairwise(evs):
        assert ev["seq"] == prev["seq"] + 1
        if ev["segment"] == prev["segment"]:
            assert (ev["hash"], ev["prev_hash"]) == (prev["hash"], prev["prev_hash"])
        else:
            assert ev["segment"] == prev["segment"] + 1 and ev["prev_hash"] == prev["hash"]
    return [e["kind"] for e in evs]


def test_list_shows_open_tasks_in_queue_order(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    tasks = q.list()
    assert len(tasks) == 4
    assert {t["reason"] for t in tasks} == {"low_confidence"}
    assert {t["key"] for t in tasks} == {"k0", "k2", "k4", "k6"}
    assert all(t["confidence"] == pytest.approx(0.3) for t in tasks)
    assert q.list(reason="audit_sample") == []
    dues = [t["due_at"] for t in tasks]
    assert dues == sorted(dues)


def test_get_says_what_and_why(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    task = q.get(q.list()[0]["id"])
    assert task["input"]["text"] == "unsure about this one"
    assert task["model_output"] == {"label": "long"}
    assert task["confidence"] == pytest.approx(0.3)
    assert task["model_version"].startswith("fake-")
    assert "not confident" in task["why"] and "threshold 0.800" in task["why"]
    with pytest.raises(keel.UserError, match="no review task"):
        q.get("nope")


def test_accept_makes_the_record_reviewed_with_event_and_label(tmp_path: Path,
                                                                store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    task = q.claim(None, "alice")
    assert task is not None and task["claimed_by"] == "alice"
    done = q.decide(task["id"], "alice", "accept")
    assert done["status"] == "decided" and done["decision"] == "accept"
    assert done["decided_by"] == "alice"
    (rec,) = keel.trace(task["key"], store=store)
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["decided_by"] == "alice"
    assert rec["decision"]["output"] == {"label": "long"}
    kinds = _chain_ok(store, task["key"])
    assert kinds[-1] == "reviewed"
    ev = rec["events"][-1]
    assert ev["actor"] == "alice" and ev["detail"]["decision"] == "accept"
    (label,) = sql.labels(store, "tickets")
    assert label["key"] == task["key"] and label["label"] == {"label": "long"}
    assert label["model_correct"] is True and label["reviewer"] == "alice"
    assert label["model_version"] == task["model_version"]
    st = keel.status(store=store)[0]
    assert st["dispositions"]["reviewed"] == 1 and st["dispositions"]["in_review"] == 3
    assert st["review_backlog"]["open"] == 3


def test_correct_is_checked_against_the_output_contract(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    tid = q.list()[0]["id"]
    with pytest.raises(InvalidDecision, match="output contract"):
        q.decide(tid, "bob", "correct", {"wrong_field": 1})
    with pytest.raises(InvalidDecision, match="needs the corrected output"):
        q.decide(tid, "bob", "correct")
    assert q.get(tid)["status"] == "open"  # a refused decision changes nothing
    done = q.decide(tid, "bob", "correct", {"label": "short"})
    (rec,) = keel.trace(done["key"], store=store)
    assert rec["decision"]["output"] == {"label": "short"}
    (label,) = sql.labels(store)
    assert label["model_correct"] is False and label["model_output"] == {"label": "long"}


def test_reject_needs_a_reason(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    tid = q.list()[0]["id"]
    with pytest.raises(InvalidDecision, match="reason"):
        q.decide(tid, "bob", "reject", reason="  ")
    with pytest.raises(InvalidDecision, match="one of"):
        q.decide(tid, "bob", "maybe")
    done = q.decide(tid, "bob", "reject", reason="spam, not a customer")
    (rec,) = keel.trace(done["key"], store=store)
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["output"] is None
    assert "spam" in rec["decision"]["reason"]
    with pytest.raises(InvalidDecision, match="already decided by bob"):
        q.decide(tid, "carol", "accept")


def test_two_reviewers_never_hold_the_same_task(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    clock = Clock()
    q = ReviewQueue(store, wf, clock=clock)
    first = q.claim(None, "alice", lease_s=60)
    assert first is not None
    with pytest.raises(LeaseConflict, match="claimed by alice"):
        q.claim(first["id"], "bob")
    with pytest.raises(LeaseConflict):
        q.decide(first["id"], "bob", "accept")
    second = q.claim(None, "bob")
    assert second is not None and second["id"] != first["id"]
    clock.now += 61  # alice's lease ran out: the task is free again
    assert q.claim(first["id"], "bob")["claimed_by"] == "bob"  # type: ignore[index]
    with pytest.raises(LeaseConflict):
        q.decide(first["id"], "alice", "accept")
    q.release(first["id"], "bob")
    assert q.decide(first["id"], "alice", "accept")["decided_by"] == "alice"


def test_claim_next_drains_the_queue(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    seen = []
    while (task := q.claim(None, "alice")) is not None:
        seen.append(task["key"])
        q.decide(task["id"], "alice", "correct", {"label": "short"})
    assert sorted(seen) == ["k0", "k2", "k4", "k6"]
    assert keel.status(store=store)[0]["dispositions"] == {
        "accepted": 4, "reviewed": 4, "fallback": 0, "quarantined": 0, "failed": 0, "in_review": 0}


def test_output_invalid_cannot_be_accepted(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("r1", "hello there")])
    wf = make(keel.FakeModel({"label": "x"}, malformed_rate=1.0))
    keel.run(wf, src, store=store)
    q = ReviewQueue(store, wf)
    (task,) = q.list()
    assert task["reason"] == "output_invalid"
    with pytest.raises(InvalidDecision, match="no valid model output"):
        q.decide(task["id"], "alice", "accept")
    q.decide(task["id"], "alice", "correct", {"label": "long"})
    (rec,) = keel.trace("r1", store=store)
    assert rec["decision"]["disposition"] == "reviewed"
    assert rec["decision"]["output"] == {"label": "long"}


def test_audit_sample_stays_accepted_and_stores_the_outcome(tmp_path: Path, store: Store) -> None:
    rows = [(f"a{i}", f"plain message {i}") for i in range(10)]
    wf = make(policy=keel.Policy(threshold=0.8, audit_rate=1.0))
    keel.run(wf, write_csv(tmp_path / "in.csv", rows), store=store)
    q = ReviewQueue(store, wf)
    tasks = q.list(reason="audit_sample")
    assert len(tasks) == 10
    q.decide(tasks[0]["id"], "alice", "accept")
    q.decide(tasks[1]["id"], "alice", "correct", {"label": "short"}, reason="it is short")
    st = keel.status(store=store)[0]
    assert st["dispositions"]["accepted"] == 10 and st["dispositions"]["reviewed"] == 0
    (confirmed,) = keel.trace(tasks[0]["key"], store=store)
    assert confirmed["decision"]["output"] == {"label": "long"}
    (overridden,) = keel.trace(tasks[1]["key"], store=store)
    assert overridden["decision"]["disposition"] == "accepted"
    assert overridden["decision"]["output"] == {"label": "short"}  # the person's answer stands
    ev = overridden["events"][-1]
    assert ev["kind"] == "reviewed" and ev["detail"]["override"] is True
    assert ev["detail"]["previous_output"] == {"label": "long"}
    with store.engine.connect() as conn:
        audited = sql.audit_accuracy(conn, "tickets")
    assert (audited["n"], audited["correct"], audited["wrong"]) == (2, 1, 1)
    labels = {x["key"]: x for x in sql.labels(store)}
    assert labels[tasks[1]["key"]]["reason"] == "audit_sample"
    assert all(x["sampled"] for x in labels.values())  # audit_rate 1.0: all in the sample


def test_overriding_an_automatic_decision(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store)
    q = ReviewQueue(store, wf)
    with pytest.raises(InvalidDecision, match="already has an open review task"):
        q.reopen("tickets", "k0", "lead")
    task = q.reopen("tickets", "k1", "lead", note="customer complained")
    assert task["reason"] == "manual" and task["disposition"] == "accepted"
    q.decide(task["id"], "alice", "correct", {"label": "short"})
    (rec,) = keel.trace("k1", store=store)
    assert rec["decision"]["disposition"] == "reviewed"
    kinds = _chain_ok(store, "k1")
    assert kinds[-2:] == ["review_requested", "reviewed"]
    assert rec["events"][-1]["detail"]["override"] is True
    assert rec["events"][-1]["detail"]["previous_disposition"] == "accepted"


def test_second_review_when_a_reviewer_disagrees_with_a_confident_model(
        tmp_path: Path, store: Store) -> None:
    policy = keel.Policy(threshold=0.8, audit_rate=1.0, second_review_above=0.9)
    wf = make(policy=policy)
    keel.run(wf, write_csv(tmp_path / "in.csv", [("s1", "plain message one")]), store=store)
    q = ReviewQueue(store, wf)
    (task,) = q.list()
    first = q.decide(task["id"], "alice", "correct", {"label": "short"})
    child_id = first["second_review_id"]
    assert child_id
    assert sql.labels(store) == []  # not final yet
    (rec,) = keel.trace("s1", store=store)
    assert rec["decision"]["output"] == {"label": "long"}  # unchanged until confirmed
    assert q.claim(None, "alice") is None  # never offered to the first reviewer
    with pytest.raises(InvalidDecision, match="someone else"):
        q.decide(child_id, "alice", "correct", {"label": "short"})
    child = q.claim(None, "bob")
    assert child is not None and child["id"] == child_id
    assert child["parent"]["decided_by"] == "alice"
    q.decide(child_id, "bob", "correct", {"label": "short"})
    (rec,) = keel.trace("s1", store=store)
    assert rec["decision"]["output"] == {"label": "short"}
    (label,) = sql.labels(store)
    assert label["reviewer"] == "bob" and "first correct by alice" in label["note"]
    assert label["reason"] == "audit_sample"


def test_escalation_of_overdue_tasks(tmp_path: Path, store: Store) -> None:
    wf = dataclasses.replace(make(), owners=keel.Owners(
        business="ops@example.com", support="ml@example.com", escalation="support-leads"))
    keel.run(wf, write_csv(tmp_path / "in.csv", [("e1", "unsure"), ("e2", "unsure too")]),
             store=store)
    clock = Clock()
    alerts: list[dict[str, Any]] = []
    q = ReviewQueue(store, wf, clock=clock, on_escalate=alerts.append)
    clock.now = q.list()[0]["due_at"] - 1
    assert q.escalate_overdue() == [] and alerts == []
    clock.now += 2
    tasks = q.list()  # listing escalates what is overdue
    assert {t["queue"] for t in tasks} == {"support-leads"}
    assert all(t["overdue"] and t["escalated_at"] for t in tasks)
    assert [a["escalated_to"] for a in alerts] == ["support-leads"] * 2
    assert q.escalate_overdue() == []  # once only
    kinds = _chain_ok(store, "e1")
    assert kinds[-1] == "escalated"


def test_a_broken_alert_hook_does_not_stop_escalation(tmp_path: Path, store: Store) -> None:
    wf = _seed(tmp_path, store, n=2)

    def broken(_task: dict[str, Any]) -> None:
        raise RuntimeError("pager down")

    clock = Clock(start=10 ** 10)
    q = ReviewQueue(store, wf, clock=clock, on_escalate=broken)
    assert len(q.escalate_overdue()) == 1
    assert q.list()[0]["queue"] == "escalation"


def test_queue_without_a_workflow_object_loads_the_contract(tmp_path: Path, store: Store) -> None:
    from tests._workflows import write_workflow

    path = write_workflow(tmp_path)
    keel.run(path, write_csv(tmp_path / "in.csv", [("w1", "unsure what")]), store=store)
    q = ReviewQueue(store)  # what the web app does
    (task,) = q.list()
    with pytest.raises(InvalidDecision, match="output contract"):
        q.decide(task["id"], "alice", "correct", {"label": 5, "extra": "x"} | {"label": None})
    q.decide(task["id"], "alice", "correct", {"label": "short"})


def test_reviewers_racing_for_the_queue_decide_each_task_once(tmp_path: Path,
                                                               store: Store) -> None:
    rows = [(f"r{i}", f"unsure {i}") for i in range(24)]
    wf = make()
    keel.run(wf, write_csv(tmp_path / "in.csv", rows), store=store)
    won: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def reviewer(name: str) -> None:
        q = ReviewQueue(store, wf)
        try:
            while (task := q.claim(None, name)) is not None:
                q.decide(task["id"], name, "accept")
                won.setdefault(name, []).append(task["key"])
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"rev{n}",)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    keys = [k for ks in won.values() for k in ks]
    assert sorted(keys) == sorted(k for k, _ in rows)  # every task once, none twice
    decided = ReviewQueue(store, wf).list(status="decided")
    assert len(decided) == 24
    assert {t["decided_by"] for t in decided} == set(won)
