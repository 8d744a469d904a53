"""The fault matrix through whole runs, on SQLite and PostgreSQL: every record ends in one
disposition, nothing is delivered twice, and each failure, retry and fallback is on record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.resilience import BreakerPolicy, RetryPolicy
from keel.store import Store

FAST = RetryPolicy(max_attempts=3, base_delay_s=0.001, max_delay_s=0.05, seed=1)


def rules(msg: Any) -> dict[str, str]:
    return {"label": "rules"}


def _rows(n: int) -> list[tuple[str, str]]:
    return [(f"k{i}", f"message number {i}") for i in range(n)]


def _out_keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


FAULTS = {
    "errors": dict(error_rate=0.3),
    "timeouts": dict(timeout_rate=0.2, hang_s=30.0, is_async=True),
    "malformed": dict(malformed_rate=0.3),
    "rate_limits": dict(rate_limit_rate=0.3, retry_after_s=0.001),
    "down": dict(error_rate=1.0),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_matrix(tmp_path: Path, store: Store, fault: str) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(60))
    model = keel.FakeModel({"label": "model"}, seed=5, **FAULTS[fault])
    wf = make(model, fallback=rules, resilience=keel.Resilience(retry=FAST, timeout_s=0.2))
    out = tmp_path / "out.jsonl"
    s = keel.run(wf, src, store=store, out=out, batch_size=16)
    assert counts_balance(s) and s.read == 60
    assert sorted(_out_keys(out)) == sorted(k for k, _ in _rows(60))
    assert s.counts["failed"] == 0  # the rules answered whatever the model could not
    if fault == "malformed":
        assert s.counts["fallback"] > 0  # the contract violation went to the rules
    else:
        assert s.counts["accepted"] + s.counts["fallback"] == 60
    if fault == "down":
        assert s.counts["fallback"] == 60
    st = keel.status(store=store)[0]
    assert st["pending"] == 0
    assert sum(st["dispositions"].values()) == 60
    again = keel.run(wf, src, store=store, out=out, batch_size=16)
    assert again.duplicates == 60 and again.decided == 0
    assert len(_out_keys(out)) == 60  # nothing delivered twice


def test_transient_errors_are_retried_into_success(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(80))
    model = keel.FakeModel({"label": "model"}, seed=2, error_rate=0.2, cost_usd=0.001)
    wf = make(model, resilience=keel.Resilience(retry=RetryPolicy(max_attempts=6,
                                                                  base_delay_s=0.001)))
    s = keel.run(wf, src, store=store, batch_size=20)
    assert s.counts["accepted"] == 80  # 0.2**6: nobody runs out of attempts
    retried = [rec for k, _ in _rows(80) for rec in keel.trace(k, store=store)
               if any(e["kind"] == "attempt_failed" for e in rec["events"])]
    assert retried, "a 20% error rate retried nobody"
    ev = next(e for e in retried[0]["events"] if e["kind"] == "attempt_failed")
    assert ev["detail"]["code"] == "keel.model.unavailable"
    assert ev["latency_ms"] is not None


def test_model_down_opens_the_breaker_and_status_shows_it(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(100))
    model = keel.FakeModel({"label": "model"}, timeout_rate=1.0, hang_s=30.0)
    res = keel.Resilience(retry=FAST, timeout_s=0.05,
                          breaker=BreakerPolicy(min_calls=10, window=20, reset_timeout_s=600))
    wf = make(model, fallback=rules, resilience=res)
    s = keel.run(wf, src, store=store, batch_size=10)
    assert s.counts["fallback"] == 100 and counts_balance(s)
    assert model.calls == 10  # one batch timed out, then the open breaker skipped the model
    (br,) = keel.status(store=store)[0]["breakers"]
    assert br["state"] == "open" and br["model_version"] == model.version
    (rec,) = keel.trace("k55", store=store)
    used = next(e for e in rec["events"] if e["kind"] == "fallback_used")
    assert used["detail"]["code"] == "keel.model.circuit_open"
    assert "circuit open" in used["detail"]["cause"]
    # the state is in the store: a new run starts with the circuit still open
    more = write_csv(tmp_path / "more.csv", [("n1", "new message")])
    keel.run(wf, more, store=store)
    assert model.calls == 10


def test_breaker_state_survives_in_the_store_and_half_opens(tmp_path: Path, store: Store) -> None:
    model = keel.FakeModel({"label": "model"}, error_rate=1.0)
    res = keel.Resilience(retry=FAST, breaker=BreakerPolicy(min_calls=5, window=10,
                                                             reset_timeout_s=0.0,
                                                             success_threshold=1))
    wf = make(model, fallback=rules, resilience=res)
    keel.run(wf, write_csv(tmp_path / "a.csv", _rows(10)), store=store)
    assert keel.status(store=store)[0]["breakers"][0]["state"] == "open"
    model.error_rate = 0.0  # the model is back; the cool-down (0 s) has passed
    s = keel.run(wf, write_csv(tmp_path / "b.csv", [("z1", "hello there")]), store=store)
    assert s.counts["accepted"] == 1
    assert keel.status(store=store)[0]["breakers"][0]["state"] == "closed"


def test_primary_then_secondary_then_rules_then_review(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("a", "first text"), ("b", "second text"),
                                          ("c", "third text")])
    primary = keel.FakeModel({"label": "primary"}, error_rate=1.0, name="primary")
    secondary = keel.FunctionModel(
        lambda m: ({"label": "secondary"}, 0.9) if m.id == "a" else (_ for _ in ()).throw(
            keel.NonRetryableModelError("secondary says 400")), name="secondary")
    chain = [secondary, lambda m: {"label": "rules"} if m.id == "b" else None]
    wf = make(primary, fallback=chain, resilience=keel.Resilience(retry=FAST, breaker=None),
              policy=keel.Policy(threshold=0.8, audit_rate=0.0, on_model_failure="review"))
    s = keel.run(wf, src, store=store)
    assert s.counts["fallback"] == 2 and s.counts["in_review"] == 1
    assert s.review_reasons == {"model_failed": 1}
    steps = {}
    for key in "abc":
        (rec,) = keel.trace(key, store=store)
        steps[key] = [(e["detail"]["step"], e["detail"]["code"])
                      for e in rec["events"] if e["kind"] == "fallback_used"]
    assert steps["a"] == [("fallback:1", "keel.model.unavailable")]
    assert steps["b"] == [("fallback:1", "keel.model.unavailable"),
                          ("fallback:2", "keel.model.fatal")]
    assert steps["c"][-1][0] == "fallback:2"
    assert keel.trace("a", store=store)[0]["decision"]["output"] == {"label": "secondary"}


def test_failures_by_cause_and_replay_after_the_fix(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(20))
    down = keel.FakeModel({"label": "x"}, error_rate=1.0, name="m")
    s = keel.run(make(down, resilience=keel.Resilience(retry=FAST)), src, store=store)
    assert s.counts["failed"] == 20
    st = keel.status(store=store)[0]
    assert st["failures_by_cause"] == {"keel.model.unavailable": 20}
    assert st["breakers"][0]["state"] == "open"
    fixed = keel.FakeModel({"label": "x"}, name="m")  # same version: the outage is over
    assert fixed.version == down.version
    r = keel.replay(make(fixed, resilience=keel.Resilience(retry=FAST)), "failed", store=store)
    assert r.counts["accepted"] == 20 and counts_balance(r)
    st = keel.status(store=store)[0]
    assert st["failures_by_cause"] == {} and st["dispositions"]["failed"] == 0
    assert st["breakers"][0]["state"] == "closed"


def test_attempt_costs_are_counted(tmp_path: Path, store: Store) -> None:
    class PaidFailure(keel.FakeModel):
        def predict(self, inputs: Any) -> list[Any]:
            out = super().predict(inputs)
            for o in out:
                if isinstance(o, keel.ModelError):
                    o.cost_usd = 0.5  # a failed call that was billed anyway
            return out

    src = write_csv(tmp_path / "in.csv", _rows(4))
    wf = make(PaidFailure({"label": "x"}, error_rate=1.0), fallback=rules,
              resilience=keel.Resilience(retry=FAST, breaker=None))
    s = keel.run(wf, src, store=store)
    assert s.cost_usd == pytest.approx(4 * 3 * 0.5)
    assert keel.status(store=store)[0]["cost_usd"] == pytest.approx(6.0)


def test_keel_status_shows_breakers_and_failures_by_cause(
        tmp_path: Path, store: Store, db_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    from keel.cli import main

    src = write_csv(tmp_path / "in.csv", _rows(30))
    down = keel.FakeModel({"label": "x"}, timeout_rate=1.0, hang_s=30.0, name="flaky-llm")
    wf = make(down, resilience=keel.Resilience(retry=FAST, timeout_s=0.05))
    assert keel.run(wf, src, store=store).counts["failed"] == 30
    capsys.readouterr()
    assert main(["status", "--db", db_url]) == 0
    text = capsys.readouterr().out
    assert "failed: keel.model.timeout" in text
    assert f"breaker flaky-llm ({down.version})" in text and "open since" in text


class BatchRecorder(keel.Model):
    """A sync batch model that fails each record's first call with a 503."""

    kind = "recorder"

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.tried: set[str] = set()

    @property
    def version(self) -> str:
        return "recorder-1"

    def predict(self, inputs: Any) -> list[Any]:
        self.batches.append([m.id for m in inputs])
        out: list[Any] = []
        for m in inputs:
            first = m.id not in self.tried and int(m.id[1:]) % 5 == 0
            self.tried.add(m.id)
            out.append(keel.ModelUnavailable("503") if first
                       else keel.Prediction({"label": "model"}, 0.9))
        return out


def test_transient_failures_ride_along_with_the_next_batch(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(40))
    model = BatchRecorder()
    s = keel.run(make(model, resilience=keel.Resilience(retry=FAST)), src, store=store,
                 batch_size=10)
    assert s.counts["accepted"] == 40 and counts_balance(s)
    # k0 failed in the first batch; the second batch was already asked (its calls overlap the
    # first batch's landing), so k0 rides along with the third, k20..k29
    assert model.batches[1] == [f"k{i}" for i in range(10, 20)]
    assert model.batches[2] == ["k0", "k5", *[f"k{i}" for i in range(20, 30)]]
    # the last batch retries inside its call; what the one before it left over gets a round
    assert model.batches[-2:] == [["k30", "k35"], ["k20", "k25"]]
    (rec,) = keel.trace("k0", store=store)
    tries = [(e["kind"], e["detail"]["attempt"]) for e in rec["events"]
             if e["kind"] in ("attempt_failed", "predicted")]
    assert tries == [("attempt_failed", 1), ("predicted", 2)]
    assert rec["decision"]["attempts"] == 2


def test_with_a_latency_budget_retries_stay_inside_the_call(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(20))
    model = BatchRecorder()
    budget = RetryPolicy(max_attempts=3, base_delay_s=0.001, deadline_s=30.0)
    s = keel.run(make(model, resilience=keel.Resilience(retry=budget)), src, store=store,
                 batch_size=10)
    assert s.counts["accepted"] == 20
    assert model.batches[1] == ["k0", "k5"]  # retried at once, before the next batch


def test_a_carried_record_gets_only_its_remaining_attempts(tmp_path: Path, store: Store) -> None:
    def answer(msg: Any) -> Any:
        if msg.id == "k0":
            raise keel.ModelUnavailable("503 for k0, always")
        return {"label": "model"}, 0.9

    src = write_csv(tmp_path / "in.csv", _rows(30))
    wf = make(keel.FunctionModel(answer), resilience=keel.Resilience(retry=FAST))
    s = keel.run(wf, src, store=store, batch_size=10)
    assert s.counts["failed"] == 1 and s.counts["accepted"] == 29
    (rec,) = keel.trace("k0", store=store)
    tries = [e["detail"]["attempt"] for e in rec["events"] if e["kind"] == "attempt_failed"]
    assert tries == [1, 2, 3] and rec["decision"]["attempts"] == 3


def test_one_workflows_outage_never_trips_anothers_breaker(tmp_path: Path, store: Store) -> None:
    """Two workflows share one model; all of one's calls fail. Its breaker opens; the other's
    calls still go through, on a breaker of its own."""
    from keel.resilience import BreakerPolicy, Resilience, RetryPolicy

    def answer(msg: Any) -> tuple[dict[str, str], float]:
        if "boom" in msg.text:
            raise keel.ModelUnavailable("upstream 503")
        return {"label": "long"}, 0.95

    shared = keel.FunctionModel(answer, version="shared-1")
    shared.resilience = Resilience(retry=RetryPolicy(max_attempts=1),
                                   breaker=BreakerPolicy(window=10, min_calls=5,
                                                         reset_timeout_s=600))
    broken = make(shared, name="broken", policy=keel.Policy(threshold=0.5, audit_rate=0.0,
                                                            on_model_failure="review"))
    healthy = make(shared, name="healthy")
    keel.run(broken, write_csv(tmp_path / "a.csv", [(f"a{i}", "boom now") for i in range(20)]),
             store=store, batch_size=5)
    s = keel.run(healthy, write_csv(tmp_path / "b.csv", [(f"b{i}", "fine message")
                                                          for i in range(20)]),
                 store=store, batch_size=5)
    assert s.counts["accepted"] == 20  # not a single call skipped for the other's outage
    by_wf = {st["workflow"]: {b["model_version"]: b["state"] for b in st["breakers"]}
             for st in keel.status(store=store)}
    assert by_wf["broken"] == {"shared-1": "open"}
    assert by_wf["healthy"].get("shared-1", "closed") == "closed"  # never tripped
