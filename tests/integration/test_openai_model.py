"""keel.OpenAIModel against a loopback server that speaks the chat-completions protocol."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from tests._fake_llm import CALL_COST, LOGPROBS, PRICE, FakeLLM
from tests._loopback import serve
from tests._workflows import make, write_csv
from tests.conftest import counts_balance

import keel
from keel.resilience import RetryPolicy
from keel.store import Store


def llm(url: str, **kw: Any) -> keel.OpenAIModel:
    model = keel.OpenAIModel("tiny-llm", prompt="Classify: {text}", base_url=url,
                             api_key="sk-test", price_per_mtok=PRICE, **kw)
    model.resilience = keel.Resilience(
        retry=RetryPolicy(max_attempts=3, base_delay_s=0.001), timeout_s=0.5,
        limits=keel.RateLimits(max_concurrency=4))
    return model


def _run(tmp_path: Path, store: Store, texts: dict[str, str], **kw: Any) -> tuple[Any, Any]:
    src = write_csv(tmp_path / "in.csv", list(texts.items()))
    fake = FakeLLM()
    with serve(fake) as (url, seen):
        wf = make(llm(url, **kw), fallback=lambda m: {"label": "rules"},
                  policy=keel.Policy(threshold=0.5, audit_rate=0.0))
        summary = keel.run(wf, src, store=store)
    assert counts_balance(summary)
    return summary, seen


def _decision(store: Store, key: str) -> dict[str, Any]:
    (rec,) = keel.trace(key, store=store)
    return rec


def test_happy_path_request_and_answer(tmp_path: Path, store: Store) -> None:
    s, seen = _run(tmp_path, store, {"a": "my card never arrived"})
    assert s.counts["accepted"] == 1
    body = seen[0].json()
    assert seen[0].path == "/v1/chat/completions"  # a bare host gets /v1
    assert seen[0].headers["authorization"] == "Bearer sk-test"
    assert body["model"] == "tiny-llm" and body["logprobs"] is True
    assert body["messages"][1]["content"] == "Classify: my card never arrived"
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["label"]["type"] == "string"  # the workflow's output contract
    rec = _decision(store, "a")
    assert rec["decision"]["output"] == {"label": "long"}
    assert rec["decision"]["confidence"] == pytest.approx(math.exp(sum(LOGPROBS)))
    assert rec["decision"]["cost_usd"] == pytest.approx(CALL_COST)
    (pred,) = rec["predictions"]
    assert (pred["input_tokens"], pred["output_tokens"]) == (20, 5)


def test_429_with_retry_after_and_500s_are_retried(tmp_path: Path, store: Store) -> None:
    s, seen = _run(tmp_path, store, {"r": "rate-limit me", "s": "server-error here",
                                     "b": "broken-body please"})
    assert s.counts["accepted"] == 3
    codes = {k: [e["detail"].get("code") for e in _decision(store, k)["events"]
                 if e["kind"] == "attempt_failed"] for k in "rsb"}
    assert codes == {"r": ["keel.model.rate_limited"],
                     "s": ["keel.model.unavailable"] * 2,
                     "b": ["keel.model.unavailable"]}
    assert len(seen) == 2 + 3 + 2  # each retried until it answered


def test_slow_responses_time_out_and_fall_back(tmp_path: Path, store: Store) -> None:
    s, _seen = _run(tmp_path, store, {"w": "slow answer"})
    assert s.counts["fallback"] == 1
    rec = _decision(store, "w")
    failed = [e for e in rec["events"] if e["kind"] == "attempt_failed"]
    assert [e["detail"]["code"] for e in failed] == ["keel.model.timeout"] * 3
    assert rec["decision"]["output"] == {"label": "rules"}


def test_truncated_json_gets_one_reask_and_both_calls_are_paid(tmp_path: Path,
                                                               store: Store) -> None:
    s, seen = _run(tmp_path, store, {"t": "truncated output"})
    assert s.counts["accepted"] == 1
    reask = seen[1].json()["messages"]
    assert reask[2] == {"role": "assistant", "content": '{"label": "lo'}
    assert "not valid JSON (cut off at max_tokens=512)" in reask[3]["content"]
    rec = _decision(store, "t")
    assert rec["decision"]["cost_usd"] == pytest.approx(2 * CALL_COST)
    assert rec["predictions"][0]["metadata"]["reasks"] == 1


def test_contract_violation_after_the_reask_goes_to_the_fallback(tmp_path: Path,
                                                                 store: Store) -> None:
    s, seen = _run(tmp_path, store, {"x": "always-wrong answer"})
    assert s.counts["fallback"] == 1
    assert len(seen) == 2  # one call, one bounded re-ask, no retries of a malformed answer
    rec = _decision(store, "x")
    (failed,) = [e for e in rec["events"] if e["kind"] == "attempt_failed"]
    assert failed["detail"]["code"] == "keel.model.malformed"
    assert "label" in failed["detail"]["error"]
    assert failed["cost_usd"] == pytest.approx(2 * CALL_COST)
    assert rec["decision"]["cost_usd"] == pytest.approx(2 * CALL_COST)


def test_refusals_and_4xx_are_not_retried(tmp_path: Path, store: Store) -> None:
    s, seen = _run(tmp_path, store, {"f": "please refuse", "q": "bad-request text"})
    assert s.counts["fallback"] == 2 and len(seen) == 2
    codes = {k: [e["detail"]["code"] for e in _decision(store, k)["events"]
                 if e["kind"] == "attempt_failed"] for k in "fq"}
    assert codes == {"f": ["keel.model.refused"], "q": ["keel.model.fatal"]}


def test_confidence_from_a_declared_field(tmp_path: Path, store: Store) -> None:
    s, seen = _run(tmp_path, store, {"c": "confidence please"}, confidence_field="certainty")
    assert s.counts["in_review"] == 1  # 0.42 is under the 0.5 threshold
    body = seen[0].json()
    assert "logprobs" not in body
    assert "certainty" in body["response_format"]["json_schema"]["schema"]["required"]
    rec = _decision(store, "c")
    assert rec["decision"]["confidence"] == pytest.approx(0.42)
    assert rec["predictions"][0]["output"] == {"label": "sure"}  # the field is not output


def test_blocking_predict_outside_a_runner() -> None:
    from tests._workflows import Label, Msg

    with serve(FakeLLM()) as (url, _seen):
        model = keel.OpenAIModel("tiny-llm", prompt="{text}", base_url=url, output=Label)
        (pred,) = model.predict([Msg(id="1", text="hello")])
    assert isinstance(pred, keel.Prediction) and pred.output == {"label": "long"}
    assert pred.usage.cost_usd == 0.0  # an unknown model name has no price


def test_version_changes_with_the_prompt() -> None:
    a = keel.OpenAIModel("m", prompt="Classify: {text}")
    b = keel.OpenAIModel("m", prompt="Label: {text}")
    assert a.version != b.version
    assert a.version == keel.OpenAIModel("m", prompt="Classify: {text}").version


@pytest.mark.parametrize("text", ["positive-logprob here", "null-logprob here", "nan-logprob here"])
def test_an_impossible_logprob_is_never_a_confident_decision(tmp_path: Path, store: Store,
                                                             text: str) -> None:
    """A positive, null or NaN log-probability would make any confidence up: the answer is an
    adapter error of its own (no re-ask, its tokens and cost kept) and the record goes to the
    fallback."""
    s, seen = _run(tmp_path, store, {"p": text})
    assert s.counts["fallback"] == 1 and s.counts["accepted"] == 0
    assert len(seen) == 1
    rec = _decision(store, "p")
    (failed,) = [e for e in rec["events"] if e["kind"] == "attempt_failed"]
    assert failed["detail"]["code"] == "keel.model.impossible_confidence"
    assert "impossible log-probability" in failed["detail"]["error"]
    assert failed["cost_usd"] == pytest.approx(CALL_COST)
    assert (failed["detail"]["input_tokens"], failed["detail"]["output_tokens"]) == (20, 5)
