"""The governed pipeline end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.store import Store


def _rows(n: int) -> list[tuple[str, str]]:
    return [(f"k{i}", "unsure what this is" if i % 4 == 0 else f"message number {i}") for i in range(n)]


def test_every_record_ends_in_one_disposition(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(40))
    s = keel.run(make(), src, store=store, batch_size=7)
    assert counts_balance(s)
    assert s.read == 40
    assert s.counts["accepted"] == 30
    assert s.counts["in_review"] == 10
    assert s.review_reasons == {"low_confidence": 10}
    st = keel.status(store=store)[0]
    assert st["dispositions"]["accepted"] == 30
    assert st["review_backlog"]["open"] == 10
    assert st["pending"] == 0


def test_running_twice_decides_nothing_twice(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", _rows(25))
    model = keel.FakeModel({"label": "x"})
    wf = make(model)
    first = keel.run(wf, src, store=store)
    calls = model.calls
    second = keel.run(wf, src, store=store)
    assert first.decided == 25 and first.duplicates == 0
    assert second.decided == 0 and second.duplicates == 25
    assert model.calls == calls  # the model was not asked again
    assert counts_balance(second)


def test_trace_tells_the_whole_story(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [("a1", "unsure about my card")])
    keel.run(make(), src, store=store)
    (rec,) = keel.trace("a1", store=store)
    kinds = [e["kind"] for e in rec["events"]]
    assert kinds == ["received", "validated", "predicted", "routed"]
    routed = rec["events"][-1]["detail"]
    assert routed["review_reason"] == "low_confidence"
    assert routed["threshold"] == 0.8
    assert rec["decision"]["disposition"] == "in_review"
    assert rec["review_tasks"][0]["reason"] == "low_confidence"
    assert rec["predictions"][0]["model_version"].startswith("fake-")


def test_model_error_goes_to_fallback_then_failed(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", f"text {i}") for i in range(10)])
    broken = keel.FakeModel(error_rate=1.0)
    with_rules = make(broken, fallback=lambda m: {"label": "rules"} if m.id != "r3" else None)
    s = keel.run(with_rules, src, store=store)
    assert s.counts["fallback"] == 9
    assert s.counts["failed"] == 1  # the rules had no answer for r3
    (rec,) = keel.trace("r0", store=store)
    kinds = [e["kind"] for e in rec["events"]]
    assert kinds.count("attempt_failed") == 3  # retried, each attempt recorded
    assert "fallback_used" in kinds
    assert rec["decision"]["output"] == {"label": "rules"}


def test_output_contract_violation_is_never_accepted(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", f"text {i}") for i in range(20)])
    wf = make(keel.FakeModel({"label": "x"}, malformed_rate=1.0, confidence=0.99))
    s = keel.run(wf, src, store=store)
    assert s.counts["accepted"] == 0
    assert s.counts["in_review"] == 20
    assert s.review_reasons == {"output_invalid": 20}


def test_replay_failed_after_fix(tmp_path: Path, store: Store) -> None:
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", f"text {i}") for i in range(5)])
    assert keel.run(make(keel.FakeModel(error_rate=1.0)), src, store=store).counts["failed"] == 5
    fixed = keel.replay(make(keel.FakeModel({"label": "ok"})), "failed", store=store)
    assert fixed.read == 5 and fixed.counts["accepted"] == 5
    st = keel.status(store=store)[0]
    assert st["dispositions"]["failed"] == 0 and st["dispositions"]["accepted"] == 5
    (rec,) = keel.trace("r0", store=store)
    assert "replayed" in [e["kind"] for e in rec["events"]]


@pytest.mark.parametrize("how", [
    {"model": {"cost_usd": 0.001}, "workflow": {}},  # auto: answers that cost money
    {"model": {"latency_ms": 2.0}, "workflow": {}},  # auto: slow answers
    {"model": {}, "workflow": {"checkpoint": "always"}},
])
def test_checkpointed_predictions_are_not_paid_again(tmp_path: Path, store: Store,
                                                     how: dict[str, dict[str, Any]]) -> None:
    """A run that died after a dear answer resumes from the checkpoint."""
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", f"text {i}") for i in range(12)])
    model = keel.FakeModel({"label": "ok"}, **how["model"])
    wf = make(model, **how["workflow"])
    runner = keel.Runner(wf, store)
    # simulate a crash between the checkpoint and the decision write
    original = store.write_rows
    store.write_rows = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    from keel.sources._files import read_rows

    with contextlib.suppress(SystemExit):
        runner.run(read_rows(src))
    store.write_rows = original  # type: ignore[method-assign]
    paid = model.calls
    assert paid == 12
    assert keel.status(store=store)[0]["pending"] == 12
    s = keel.Runner(wf, store).run(read_rows(src))
    assert model.calls == paid  # nothing sent to the model again
    assert s.counts["accepted"] == 12 and counts_balance(s)
    (rec,) = keel.trace("r1", store=store)
    kinds = [e["kind"] for e in rec["events"]]
    assert kinds.count("predicted") == 1 and "resumed" in kinds


def test_cheap_answers_are_committed_with_their_decisions(tmp_path: Path, store: Store,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A fast, free model's answers are not committed on their own: a crash before the batch's
    transaction leaves nothing half-done, and the records are decided afresh next time."""
    # "fast" is measured: on a loaded machine twelve fake answers (a thread start, a loop hop)
    # can take over the 1.2 ms that makes them dear. This test is about answers judged cheap.
    monkeypatch.setattr(keel.runtime._runner, "DEAR_MS_PER_RECORD", 1e9)
    src = write_csv(tmp_path / "in.csv", [(f"r{i}", f"text {i}") for i in range(12)])
    model = keel.FakeModel({"label": "ok"})
    wf = make(model)
    original = store.write_rows
    store.write_rows = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    from keel.sources._files import read_rows

    with contextlib.suppress(SystemExit):
        keel.Runner(wf, store).run(read_rows(src))
    store.write_rows = original  # type: ignore[method-assign]
    assert keel.status(store=store) == [] or keel.status(store=store)[0]["pending"] == 0
    s = keel.Runner(wf, store).run(read_rows(src))
    assert model.calls == 24 and s.counts["accepted"] == 12 and counts_balance(s)
    (rec,) = keel.trace("r1", store=store)
    assert [e["kind"] for e in rec["events"]] == ["received", "validated", "predicted", "routed"]
    assert {e["segment"] for e in rec["events"]} == {1}  # one transaction, one segment


def test_runner_decide_answers_once_stored_and_knows_repeats(store: Store) -> None:
    """`Runner.decide`, the embedding entry point: one answer per record, in order."""
    runner = keel.Runner(make(), store)
    summary = runner.start_serving("embedded")
    try:
        first = runner.decide([{"id": "a", "text": "message one"}, {"id": "b", "text": "unsure"}],
                              summary)
        again = runner.decide([{"id": "a", "text": "message one"}], summary)
    finally:
        runner.finish_serving(summary)
    assert [i.disposition for i in first] == ["accepted", "in_review"]  # type: ignore[union-attr]
    (earlier,) = again
    assert isinstance(earlier, keel.runtime.Earlier) and earlier.record_id == first[0].record_id
    assert keel.status(store=store)[0]["dispositions"]["accepted"] == 1
