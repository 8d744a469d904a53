"""keel.unique: an output whose fields repeat those of a record already decided (in an earlier
run, or by another process while this one runs) goes to review naming the field, the rule and
the record holding the values; never accepted. Real SQLite store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel._record import RawRow
from keel.errors import InvalidDecision
from keel.review import ReviewQueue
from keel.store.queries import decisions_by_key


class Bill(BaseModel):
    id: str
    vendor: str
    number: str
    sure: bool = True


class Read(BaseModel):
    vendor: str
    number: str


def read(bill: Any) -> tuple[dict[str, Any], float]:
    return {"vendor": bill.vendor, "number": bill.number}, 0.95 if bill.sure else 0.2


def flow() -> keel.Workflow:
    return keel.Workflow(
        name="bills", input=Bill, output=Read, key="id", model=keel.FunctionModel(read),
        output_checks=[keel.unique("no duplicate number", "vendor", "number",
                                   message="this vendor's number was already decided")],
        owners=keel.Owners(business="a@example.com", support="b@example.com"),
        policy=keel.Policy(threshold=0.8, audit_rate=0.0))


def _details(store: keel.Store, keys: list[str]) -> dict[str, str | None]:
    out = {}
    for key in keys:
        tasks = keel.trace(key, store=store)[0]["review_tasks"]
        out[key] = tasks[0]["detail"] if tasks else None
    return out


def test_a_second_run_sends_numbers_already_decided_to_review(tmp_path: Path) -> None:
    store = keel.Store.open(str(tmp_path / "k.db"))
    keel.run(flow(), [{"id": "a1", "vendor": "Acme", "number": "7"},
                      {"id": "a2", "vendor": "Acme", "number": "8", "sure": False},
                      {"id": "b1", "vendor": "Bolt", "number": "7"}], store=store)
    keel.run(flow(), [{"id": "a1-again", "vendor": "ACME ", "number": "7"},
                      {"id": "a2-again", "vendor": "Acme", "number": "8"},
                      {"id": "c1", "vendor": "Cord", "number": "7"},
                      {"id": "c2", "vendor": "Cord", "number": "7"}], store=store)
    got = decisions_by_key(store, "bills")
    details = _details(store, ["a1-again", "c2"])
    store.close()
    assert got["a1-again"]["disposition"] == "in_review"  # case and spaces ignored
    assert details["a1-again"] == ("number: this vendor's number was already decided "
                                   "(record a1) [no duplicate number]")
    # a2 is still waiting for a person: not decided, so its number is not taken yet
    assert got["a2-again"]["disposition"] == "accepted"
    assert got["c1"]["disposition"] == "accepted"  # another vendor's number 7
    assert got["c2"]["disposition"] == "in_review"  # within the run
    assert details["c2"] is not None and "(record c1)" in details["c2"]


def test_a_running_worker_sees_what_another_process_decided(tmp_path: Path) -> None:
    """The decided outputs are read when a runner starts and refreshed before each batch."""
    store = keel.Store.open(str(tmp_path / "k.db"))
    runner = keel.Runner(flow(), store)  # started before the other run decides anything
    keel.run(flow(), [{"id": "x1", "vendor": "Acme", "number": "1"}], store=store)
    runner.run([RawRow("records", n, r) for n, r in enumerate(
        [{"id": "x2", "vendor": "Acme", "number": "1"},
         {"id": "x3", "vendor": "Acme", "number": "2"}], 1)])
    runner.close()
    got = decisions_by_key(store, "bills")
    store.close()
    assert got["x2"]["disposition"] == "in_review"
    assert got["x3"]["disposition"] == "accepted"


def test_a_reviewer_is_held_to_the_same_rule(tmp_path: Path) -> None:
    """A correction that repeats another decided record's values is refused, naming the
    field; a decided record reopened and accepted as it was is no duplicate of itself."""
    store = keel.Store.open(str(tmp_path / "k.db"))
    wf = flow()
    keel.run(wf, [{"id": "d1", "vendor": "Acme", "number": "1"},
                  {"id": "d2", "vendor": "Acme", "number": "2", "sure": False}], store=store)
    queue = ReviewQueue(store, flow())
    (task,) = queue.list()
    with pytest.raises(InvalidDecision, match=r"number: .*already decided \(record d1\)"):
        queue.decide(task["id"], "alice", "correct", {"vendor": "acme", "number": "1"})
    assert queue.decide(task["id"], "alice", "accept")["disposition"] == "reviewed"
    again = queue.reopen("bills", "d1", "bob")
    assert queue.decide(again["id"], "carol", "accept")["status"] == "decided"
    store.close()
