"""Budgets hold under concurrency: many runs in threads and in separate `keel run` processes
at a nearly spent budget, on SQLite and PostgreSQL, never spend past the limit by more than
one call's reservation; every record ends in exactly one disposition (nothing lost)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from sqlalchemy import event
from tests._workflows import make

import keel
from keel.store import cost as sql
from keel.store import queries

PRICE = 0.01          # per call, as declared
LIMIT = 1.00          # the day's budget
SPENT = 0.95          # already spent when the test starts: room for 5 calls

WORKFLOW = textwrap.dedent('''
    from pydantic import BaseModel
    import keel

    class Msg(BaseModel):
        id: str
        text: str

    class Label(BaseModel):
        label: str

    workflow = keel.Workflow(
        name="budgeted", input=Msg, output=Label, key="id",
        model=keel.FakeModel({"label": "x"}, confidence=0.95, name="llm", latency_ms=3.0),
        fallback=keel.Rules(lambda m: {"label": "rules"}),
        policy=keel.Policy(threshold=0.5, audit_rate=0.0),
        owners=keel.Owners(business="ops@example.com", support="ml@example.com"),
        cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=%r)],
                       budgets=[keel.Budget("day", usd=%r)], on_exhausted=%r),
    )
''')


def _nearly_spent(url: str, wf: keel.Workflow | None = None, workflow: str = "budgeted") -> None:
    store = keel.Store.open(url)
    try:
        # registered once first: concurrent first runs of a new workflow race to register it
        # (a pre-existing race on PostgreSQL, outside cost)
        keel.run(wf or _workflow("stop"), [], store=store)
        limits = [sql.Limit("day", keel.Budget("day", usd=LIMIT).window(_now()), LIMIT, None)]
        sql.reserve(store, workflow, limits, 0, PRICE, 0)
        sql.settle(store, workflow, limits, 0.0, 0, SPENT, 0)
    finally:
        store.close()


def _now() -> float:
    import time

    return time.time()


def _window(url: str, workflow: str = "budgeted") -> dict[str, float]:
    store = keel.Store.open(url)
    try:
        rows = [r for r in sql.windows(store, workflow) if r["period"] == "day"]
        status = queries.status(store, workflow)
    finally:
        store.close()
    assert len(rows) == 1
    return {**rows[0], "dispositions": status["dispositions"], "records": status["records"]}


def _workflow(action: str) -> keel.Workflow:
    return make(keel.FakeModel({"label": "x"}, confidence=0.95, name="llm", latency_ms=3.0),
                name="budgeted", fallback=keel.Rules(lambda m: {"label": "rules"}),
                policy=keel.Policy(threshold=0.5, audit_rate=0.0),
                cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=PRICE)],
                               budgets=[keel.Budget("day", usd=LIMIT)], on_exhausted=action))


@pytest.mark.slow
def test_threads_at_a_nearly_spent_budget_never_overrun(db_url: str) -> None:
    _nearly_spent(db_url)
    errors: list[BaseException] = []

    def one(n: int) -> None:
        store = keel.Store.open(db_url)  # each thread a server of its own
        try:
            rows = [{"id": f"t{n}-{i}", "text": "hello there"} for i in range(12)]
            keel.run(_workflow("stop"), rows, store=store, batch_size=3)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    w = _window(db_url)
    assert w["spent_usd"] <= LIMIT + PRICE + 1e-9          # the bound: one call's reservation
    assert w["spent_usd"] == pytest.approx(LIMIT)           # and the room was used, not lost
    assert w["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    d = w["dispositions"]
    assert d["accepted"] == 5                               # 5 calls fit in $0.05
    assert d["failed"] == 8 * 12 - 5 and w["records"] == 96  # the rest kept, replayable
    assert w["refused"] >= 91


@pytest.mark.slow
@pytest.mark.parametrize("action", ["fallback", "review"])
def test_keel_run_processes_at_a_nearly_spent_budget(db_url: str, tmp_path: Path,
                                                     action: str) -> None:
    wf = tmp_path / "workflow.py"
    wf.write_text(WORKFLOW % (PRICE, LIMIT, action))
    _nearly_spent(db_url, keel.load_workflow(wf))
    procs = []
    for n in range(4):
        data = tmp_path / f"in{n}.csv"
        data.write_text("id,text\n" + "".join(f"p{n}-{i},hello there\n" for i in range(15)))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "keel", "run", str(wf), str(data), "--db", db_url,
             "--batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}))
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode in (0, 2), err.decode()
        assert b"Traceback" not in err
    w = _window(db_url)
    assert w["spent_usd"] <= LIMIT + PRICE + 1e-9
    assert w["spent_usd"] == pytest.approx(LIMIT)
    d = w["dispositions"]
    assert d["accepted"] == 5
    over = "fallback" if action == "fallback" else "in_review"
    assert d[over] == 60 - 5 and w["records"] == 60


def test_a_stopped_record_is_replayed_once_the_budget_allows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    _nearly_spent(url)
    store = keel.Store.open(url)
    try:
        rows = [{"id": f"r{i}", "text": "hello there"} for i in range(8)]
        first = keel.run(_workflow("stop"), rows, store=store, batch_size=4)
        assert first.counts["accepted"] == 5 and first.counts["failed"] == 3
        assert all("keel.budget" in c for c in first.failure_causes)
        # the budget is raised (a new declaration): the failed records decide on replay
        wf = make(keel.FakeModel({"label": "x"}, confidence=0.95, name="llm"), name="budgeted",
                  policy=keel.Policy(threshold=0.5, audit_rate=0.0),
                  cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=PRICE)],
                                 budgets=[keel.Budget("day", usd=2.0)]))
        again = keel.replay(wf, "failed", store=store)
        assert again.counts["accepted"] == 3
        assert queries.status(store, "budgeted")["dispositions"]["accepted"] == 8
    finally:
        store.close()


def test_room_taken_ahead_is_given_back_when_the_run_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    store = keel.Store.open(url)
    try:
        wf = make(keel.FakeModel({"label": "x"}, confidence=0.95, name="llm"), name="budgeted",
                  policy=keel.Policy(threshold=0.5, audit_rate=0.0),
                  cost=keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=PRICE)],
                                 budgets=[keel.Budget("day", usd=100.0)]))
        rows = [{"id": f"a{i}", "text": "hello there"} for i in range(50)]
        summary = keel.run(wf, rows, store=store, batch_size=10)  # takes room ahead
        assert summary.counts["accepted"] == 50
    finally:
        store.close()
    w = _window(url)
    assert w["spent_usd"] == pytest.approx(50 * PRICE)
    assert w["reserved_usd"] == pytest.approx(0.0, abs=1e-9)   # nothing held after the run


def test_an_alert_fires_when_the_day_budget_burns_too_fast(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from keel import monitor

    url = f"sqlite:///{tmp_path / 'k.db'}"
    _nearly_spent(url)                                     # $0.95 of $1.00 spent
    store = keel.Store.open(url)
    try:
        today = datetime.now(tz=UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        rule = keel.AlertRule("budget_burn_rate", above=1.0, min_count=0, name="burn")
        noon = today.timestamp() + 12 * 3600                # half the day gone: 0.95 / 0.5
        res = monitor.evaluate(store, _workflow("stop"), rules=[rule], now=noon)
        status = {s.rule: s for s in res.statuses}["burn"]
        assert status.value == pytest.approx(1.9) and status.state == "firing"
        late = today.timestamp() + 23.9 * 3600              # near midnight: on pace
        res = monitor.evaluate(store, _workflow("stop"), rules=[rule], now=late)
        assert {s.rule: s for s in res.statuses}["burn"].value < 1.0
    finally:
        store.close()


def test_two_servers_taking_room_ahead_use_the_budget_exactly(db_url: str) -> None:
    """Two servers deciding one record at a time at a budget with room for 1,000 calls: each
    takes room ahead while there is plenty (a transaction every few dozen records), none near
    the limit; together they are granted exactly 1,000 calls, never one more."""
    store = keel.Store.open(db_url)
    try:
        money = keel.Cost(prices=[keel.ModelPrice("llm", per_call_usd=PRICE)],
                          budgets=[keel.Budget("day", usd=1000 * PRICE)])
        servers = [sql.BudgetKeeper(store, "ahead", money, PRICE, 0) for _ in range(2)]
        updates: list[int] = []

        def count(conn: object, cursor: object, statement: str, *args: object) -> None:
            if statement.startswith("UPDATE budget_windows"):
                updates.append(granted)

        event.listen(store.engine, "before_cursor_execute", count)
        granted = 0
        for _round in range(2):  # the second round: after each server gives back its room
            refused = [False, False]
            while not all(refused):
                for n, keeper in enumerate(servers):
                    grant, limits = keeper.reserve(1)
                    refused[n] = grant.granted == 0
                    granted += grant.granted
                    keeper.settle(grant, limits, grant.usd, 0)  # spent what it held
                    assert sql.windows(store, "ahead")[0]["spent_usd"] <= 1000 * PRICE + 1e-9
            for keeper in servers:
                keeper.flush()
        assert granted == 1000
        assert sum(1 for g in updates if g < 400) < 20  # plenty of room: few transactions
        assert sum(1 for g in updates if g >= 990) >= 10  # near the limit: one per record
        (day,) = sql.windows(store, "ahead")
        assert day["spent_usd"] == pytest.approx(1000 * PRICE)
        assert day["reserved_usd"] == pytest.approx(0.0, abs=1e-9)
    finally:
        store.close()
