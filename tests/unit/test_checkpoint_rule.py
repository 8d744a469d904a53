"""Which answers "auto" commits on their own before routing: dear ones (money or time)."""

from __future__ import annotations

from keel._prediction import Prediction, Usage
from keel._record import Checkpoint, Item
from keel.runtime._runner import DEAR_MS_PER_RECORD, _dear


def _answer(latency_ms: float, cost_usd: float = 0.0) -> Checkpoint:
    pred = Prediction(output={"label": "ok"}, confidence=0.9, usage=Usage(cost_usd=cost_usd))
    item = Item(key="k", raw={}, source="in.csv:2")
    return Checkpoint("rid", "primary", "m-1", pred, latency_ms, item)


def test_fast_free_answers_wait_for_the_batch_transaction() -> None:
    assert not _dear([_answer(DEAR_MS_PER_RECORD / 2) for _ in range(500)])


def test_one_slow_or_paid_answer_makes_the_step_dear() -> None:
    cheap = [_answer(0.01) for _ in range(10)]
    assert _dear([*cheap, _answer(DEAR_MS_PER_RECORD)])
    assert _dear([*cheap, _answer(0.01, cost_usd=0.0001)])
