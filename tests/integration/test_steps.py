"""Multi-step workflows: each step's contract, fallback and threshold; answers checkpointed
under (record, step); a resumed record does not call an answered step again; the trail and
the review task name the step."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

import keel
from keel.contracts import check


class Doc(BaseModel):
    id: str
    text: str


class Words(BaseModel):
    words: list[str]


class Verdict(BaseModel):
    first: str
    count: int


calls: Counter[str] = Counter()


def read(doc: Any) -> tuple[dict[str, Any], float]:
    calls["read"] += 1
    if "garble" in doc.text:
        return {"words": doc.text.split()}, 0.2  # the "OCR" is unsure
    return {"words": doc.text.split()}, 0.97


def decide(words: Any) -> tuple[dict[str, Any], float]:
    calls["decide"] += 1
    if "boom" in words.words:
        raise keel.NonRetryableModelError("decider crashed")
    count = len(words.words) + (1 if "miscount" in words.words else 0)
    return {"first": words.words[0], "count": count}, 0.95


def rules(words: Any) -> dict[str, Any]:
    calls["rules"] += 1
    return {"first": words.words[0], "count": len(words.words)}


def flow(decider: Any = decide, **kw: Any) -> keel.Workflow:
    return keel.Workflow(
        name="steps", input=Doc, output=Verdict, key="id",
        steps=[keel.Step("read", keel.FunctionModel(read), output=Words,
                         checks=[check("some words", lambda w: len(w.words) > 0,
                                       field="words")]),
               keel.Step("decide", keel.FunctionModel(decider), **kw)],
        output_checks=[check("count matches", lambda v: v.count < 10, field="count",
                             message="count must be under 10")],
        owners=keel.Owners(business="a@example.com", support="b@example.com"),
        policy=keel.Policy(threshold=0.8, audit_rate=0.0))


DOCS = [
    {"id": "ok", "text": "alpha beta gamma"},
    {"id": "unsure", "text": "garble garble"},
    {"id": "crash", "text": "boom here"},
    {"id": "long", "text": "a b c d e f g h i j k"},
]


@pytest.fixture(autouse=True)
def _reset() -> None:
    calls.clear()


def _dispositions(store: keel.Store) -> dict[str, tuple[str, str | None]]:
    out = {}
    for d in DOCS:
        rec = keel.trace(d["id"], store=store)[0]
        out[d["id"]] = (rec["decision"]["disposition"], (rec["review_tasks"] or [{}])[0].get("detail"))
    return out


def test_steps_route_and_name_the_step(tmp_path: Any) -> None:
    store = keel.Store.open(str(tmp_path / "s.db"))
    summary = keel.run(flow(), DOCS, store=store)
    assert summary.decided == len(DOCS)
    got = _dispositions(store)
    assert got["ok"][0] == "accepted"
    assert got["unsure"][0] == "in_review" and "step read: confidence 0.200" in got["unsure"][1]
    assert got["crash"][0] == "failed"
    assert got["long"][0] == "in_review"
    assert "step decide" in got["long"][1] and "count must be under 10" in got["long"][1]
    assert calls["decide"] == 3  # the unsure record never reached the second step
    rec = keel.trace("ok", store=store)[0]
    assert {p["step"] for p in rec["predictions"]} == {"read", "decide"}
    done = next(e for e in rec["events"] if e["kind"] == "steps_done")
    assert [s["step"] for s in done["detail"]["steps"]] == ["read", "decide"]
    assert all(s["latency_ms"] is not None and s["confidence"] > 0.9
               for s in done["detail"]["steps"])
    store.close()


def test_a_step_fallback_answers_when_its_model_fails(tmp_path: Any) -> None:
    store = keel.Store.open(str(tmp_path / "s.db"))
    keel.run(flow(fallback=keel.Rules(rules)), DOCS, store=store)
    rec = keel.trace("crash", store=store)[0]
    assert rec["decision"]["disposition"] == "fallback"
    assert {p["step"] for p in rec["predictions"]} == {"read", "decide/fallback:1"}
    store.close()


def test_replay_resumes_at_the_step_that_failed(tmp_path: Any) -> None:
    """A record whose second step failed is replayed: the first step's checkpointed answer
    is used, its model is not called again."""
    store = keel.Store.open(str(tmp_path / "s.db"))
    keel.run(flow(), DOCS, store=store)
    assert calls["read"] == len(DOCS)
    calls.clear()

    def fixed(words: Any) -> tuple[dict[str, Any], float]:
        calls["decide"] += 1
        return {"first": words.words[0], "count": len(words.words)}, 0.95

    summary = keel.replay(flow(fixed), "failed", store=store)
    assert summary.decided == 1
    assert calls == Counter({"decide": 1})
    rec = keel.trace("crash", store=store)[0]
    assert rec["decision"]["disposition"] == "accepted"
    assert any(e["kind"] == "checkpoint_used" and e["detail"]["step"] == "read"
               for e in rec["events"])
    store.close()


def test_declaring_steps_wrongly_says_how_to_fix_it() -> None:
    with pytest.raises(ValueError, match="not both"):
        keel.Workflow(name="x", input=Doc, output=Verdict, key="id",
                      model=keel.FunctionModel(decide), steps=[keel.Step("a", decide)],
                      owners=keel.Owners(business="a", support="b"))
    with pytest.raises(ValueError, match="needs output="):
        keel.Workflow(name="x", input=Doc, output=Verdict, key="id",
                      steps=[keel.Step("a", read), keel.Step("b", decide)],
                      owners=keel.Owners(business="a", support="b"))
    with pytest.raises(ValueError, match="unique"):
        keel.Workflow(name="x", input=Doc, output=Verdict, key="id",
                      steps=[keel.Step("a", read, output=Words), keel.Step("a", decide)],
                      owners=keel.Owners(business="a", support="b"))
