"""keel.OpenAIModel against servers as they really answer (keel's loopback fake): parameters
per model family, strict schemas, JSON where models put it, error bodies of every shape,
typed outcomes for every bad answer, prices, self-consistency and a judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Generic, TypeVar

import pytest
from pydantic import BaseModel
from tests._loopback import Reply, Request, serve
from tests._workflows import Label, Msg, make, write_csv
from tests.conftest import counts_balance

import keel
from keel.models import price_for
from keel.resilience import BreakerPolicy, RetryPolicy

USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
         "prompt_tokens_details": {"cached_tokens": 400}}


def chat(*contents: str, finish: str = "stop", model: str = "gpt-4o-mini-2024-07-18",
         usage: dict[str, Any] | None = None, **message: Any) -> dict[str, Any]:
    return {"id": "x", "object": "chat.completion", "model": model,
            "choices": [{"index": i, "finish_reason": finish,
                         "message": {"role": "assistant", "content": c, **message}}
                        for i, c in enumerate(contents)],
            "usage": usage or USAGE}


def fast(model: keel.OpenAIModel, attempts: int = 3, **kw: Any) -> keel.OpenAIModel:
    model.resilience = keel.Resilience(retry=RetryPolicy(max_attempts=attempts, base_delay_s=0.001),
                                       timeout_s=5, **kw)
    return model


def one(url: str, text: str = "hello there", **kw: Any) -> Any:
    kw.setdefault("output", Label)
    model = keel.OpenAIModel(kw.pop("model", "gpt-4o-mini"), prompt="{text}", base_url=url,
                             api_key="sk-test", **kw)
    (out,) = model.predict([Msg(id="1", text=text)])
    return out


# -- request parameters per model family --------------------------------------------------------
@pytest.mark.parametrize("name", ["o4-mini", "o3", "gpt-5-mini", "openai/gpt-5", "o1-2024-12-17"])
def test_reasoning_models_get_max_completion_tokens_and_no_temperature_or_logprobs(name: str) -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, seen):
        out = one(url, model=name)
    body = seen[0].json()
    assert isinstance(out, keel.Prediction)
    assert body["max_completion_tokens"] == 4096
    assert not {"max_tokens", "temperature", "logprobs", "top_p"} & set(body)
    assert out.confidence == 0.0  # no logprobs: nothing automated until another strategy


def test_chat_models_keep_temperature_max_tokens_and_logprobs() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, seen):
        one(url, model="gpt-5-chat-latest")
    body = seen[0].json()
    assert (body["temperature"], body["max_tokens"], body["logprobs"]) == (0.0, 512, True)


def test_the_users_parameters_win_and_none_removes_one() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, seen):
        one(url, model="o4-mini", extra_body={"reasoning_effort": "low", "max_completion_tokens": None},
            temperature=1.0)
        one(url, model="gpt-4o", extra_body={"temperature": 0.3, "logprobs": None, "seed": 7})
    reasoning, chat_body = seen[0].json(), seen[1].json()
    assert reasoning["reasoning_effort"] == "low" and reasoning["temperature"] == 1.0
    assert "max_completion_tokens" not in reasoning
    assert chat_body["temperature"] == 0.3 and chat_body["seed"] == 7 and "logprobs" not in chat_body


def test_a_proxy_alias_can_be_declared_a_reasoning_model() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, seen):
        one(url, model="my-thinker", family="reasoning")
    assert "temperature" not in seen[0].json()


# -- the schema ---------------------------------------------------------------------------------
T = TypeVar("T")


class Wrap(BaseModel, Generic[T]):
    label: T


class WithDefault(BaseModel):
    label: str
    note: str = ""


def test_strict_schema_with_a_name_the_official_api_takes() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, seen):
        out = one(url, output=Wrap[str])
        one(url, output=WithDefault)
    spec = seen[0].json()["response_format"]["json_schema"]
    assert Wrap[str].__name__ == "Wrap[str]" and spec["name"] == "Wrap_str"
    assert spec["strict"] is True and spec["schema"]["additionalProperties"] is False
    assert isinstance(out, keel.Prediction) and out.output == {"label": "x"}
    optional = seen[1].json()["response_format"]["json_schema"]
    assert "strict" not in optional  # an optional field cannot be said strictly: not sent


@pytest.mark.parametrize("content", [
    '```json\n{"label": "fenced"}\n```',
    '<think>The user wants {"label": "wrong"}... let me think.</think>\n{"label": "fenced"}',
    'Okay.</think>{"label": "fenced"}',
    'Sure! Here it is: {"label": "fenced"} Anything else?',
])
def test_json_is_found_in_fences_and_after_reasoning(content: str) -> None:
    with serve(lambda r: Reply(200, chat(content))) as (url, seen):
        out = one(url)
    assert isinstance(out, keel.Prediction) and out.output == {"label": "fenced"}
    assert len(seen) == 1  # no re-ask needed


# -- error bodies -------------------------------------------------------------------------------
@pytest.mark.parametrize(("status", "body", "cls", "says"), [
    (400, {"object": "error", "message": "This model's maximum context length is 2048 tokens.",
           "type": "BadRequestError", "param": None, "code": 400},
     keel.NonRetryableModelError, "maximum context length is 2048"),
    (404, {"error": "model 'llama2' not found, try pulling it first"},
     keel.NonRetryableModelError, "not found, try pulling it first"),
    (502, b"<!DOCTYPE html><html><body>Bad Gateway</body></html>",
     keel.ModelUnavailable, "an HTML page answered"),
    (422, {"detail": [{"loc": ["body", "messages"], "msg": "field required"}]},
     keel.NonRetryableModelError, "field required"),
    (429, {"error": {"message": "You exceeded your current quota, please check your plan.",
                     "type": "insufficient_quota", "code": "insufficient_quota"}},
     keel.NonRetryableModelError, "quota is spent"),
    (429, {"error": {"message": "Request too large for gpt-4o on tokens per min (TPM): Limit "
                                "30000, Requested 31538.", "code": "rate_limit_exceeded"}},
     keel.NonRetryableModelError, "over the tokens-per-minute limit"),
    (401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}},
     keel.NonRetryableModelError, "refused the API key"),
])
def test_every_error_body_is_a_clear_message(status: int, body: Any, cls: type, says: str) -> None:
    with serve(lambda r: Reply(status, body)) as (url, _seen):
        out = one(url)
    assert type(out) is cls, out
    assert says in out.message and f"HTTP {status}" in out.message


def test_a_404_names_the_url_and_the_fix() -> None:
    with serve(lambda r: Reply(404, {"detail": "Not Found"})) as (url, _seen):
        out = one(url + "/api")
    assert f"POST {url}/api/chat/completions" in out.message and "/v1" in out.message


@pytest.mark.parametrize(("given", "used"), [
    ("http://localhost:11434", "http://localhost:11434/v1"),
    ("http://localhost:8000/v1/", "http://localhost:8000/v1"),
    ("http://proxy:4000/v1/chat/completions", "http://proxy:4000/v1"),
    ("https://example.com/openai/deployments/x", "https://example.com/openai/deployments/x"),
])
def test_base_urls_as_people_paste_them(given: str, used: str) -> None:
    assert keel.OpenAIModel("m", prompt="{text}", base_url=given).base_url == used


def test_a_base_url_without_a_scheme_is_a_clear_error() -> None:
    with pytest.raises(keel.UserError, match="must start with http"):
        keel.OpenAIModel("m", prompt="{text}", base_url="localhost:11434")


# -- every bad answer is a typed outcome, the batch goes on, tokens and cost are kept -------------
BAD = {
    "empty-choices": (chat(), "keel.model.empty"),
    "refusal": (chat("", refusal="I can't help with that"), "keel.model.refused"),
    "content-filter": (chat("", finish="content_filter"), "keel.model.content_filter"),
    "cut-off": (chat('{"label": "lo', finish="length"), "keel.model.truncated"),
    "thought-too-long": (chat("", finish="length"), "keel.model.truncated"),
    "null-logprob": ({**chat('{"label": "x"}'), "choices": [{
        "index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": '{"label": "x"}'},
        "logprobs": {"content": [{"token": "x", "logprob": None}]}}]}, "keel.model.impossible_confidence"),
}


def _bad_server(req: Request) -> Reply:
    text = req.json()["messages"][1]["content"]
    return Reply(200, BAD[text][0]) if text in BAD else Reply(200, chat('{"label": "fine"}'))


def test_each_bad_answer_has_its_own_reason_and_keeps_tokens_and_cost(tmp_path: Path,
                                                                      store: keel.Store) -> None:
    rows = [(k, k) for k in BAD] + [("ok", "an ordinary message")]
    with serve(_bad_server) as (url, _seen):
        model = fast(keel.OpenAIModel("gpt-4o-mini", prompt="{text}", base_url=url, api_key="k"))
        s = keel.run(make(model, fallback=lambda m: {"label": "rules"}),
                     write_csv(tmp_path / "in.csv", rows), store=store)
    assert counts_balance(s) and s.counts["fallback"] == len(BAD) and s.counts["failed"] == 0
    per_call = price_for("gpt-4o-mini").cost_usd(1000, 100, 400)  # cached tokens at their price
    for key, (_body, code) in BAD.items():
        (rec,) = keel.trace(key, store=store)
        failed = [e for e in rec["events"] if e["kind"] == "attempt_failed"]
        assert [e["detail"]["code"] for e in failed] == [code], key
        calls = 2 if key == "cut-off" else 1  # a cut-off answer is re-asked once
        assert failed[0]["cost_usd"] == pytest.approx(calls * per_call), key
        assert failed[0]["detail"]["input_tokens"] == calls * 1000, key
        assert rec["decision"]["cost_usd"] == pytest.approx(calls * per_call), key


# -- prices ----------------------------------------------------------------------------------------
def test_a_dated_name_is_priced_from_the_table_with_cached_tokens() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, _seen):
        out = one(url, model="gpt-4o-mini-2024-07-18")
    # 600 input tokens at $0.15/M, 400 cached at $0.075/M, 100 output at $0.60/M
    assert out.usage.cost_usd == pytest.approx((600 * 0.15 + 400 * 0.075 + 100 * 0.60) / 1e6)
    assert out.usage.cached_tokens == 400 and out.metadata["price"] == "gpt-4o-mini"


def test_an_unknown_model_has_an_unknown_cost_not_zero(tmp_path: Path, store: keel.Store,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from keel.cli import main

    assert price_for("my-local-llama") is None
    with serve(lambda r: Reply(200, chat('{"label": "x"}', model="my-local-llama"))) as (url, _s):
        model = fast(keel.OpenAIModel("my-local-llama", prompt="{text}", base_url=url))
        s = keel.run(make(model), write_csv(tmp_path / "in.csv", [("a", "hello")]), store=store)
    assert s.cost_unknown == 1 and s.as_dict()["cost_unknown_records"] == 1
    (rec,) = keel.trace("a", store=store)
    (ev,) = [e for e in rec["events"] if e["kind"] == "predicted"]
    assert ev["detail"]["cost"] == "unknown" and ev["detail"]["input_tokens"] == 1000
    st = keel.status(store=store)[0]
    assert st["cost_unknown"]["answers"] == 1 and st["cost_unknown"]["input_tokens"] == 1000
    capsys.readouterr()
    assert main(["status", "--db", str(store.engine.url)]) == 0
    assert "unknown for 1 answers" in capsys.readouterr().out.replace("\n", " ")
    assert model.describe()["metrics"]["price"] == "unknown"


def test_a_price_given_in_code_wins() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "x"}'))) as (url, _seen):
        out = one(url, model="gpt-4o-mini", price_per_mtok=(1.0, 2.0, 0.5))
    assert out.usage.cost_usd == pytest.approx((600 * 1.0 + 400 * 0.5 + 100 * 2.0) / 1e6)


# -- confidence strategies ----------------------------------------------------------------------
def _voter(answers: list[str], honour_n: bool = True) -> Any:
    """Answers the i-th sample with answers[i]; without ``honour_n`` one choice per request."""
    count = {"n": 0}

    def handler(req: Request) -> Reply:
        body = req.json()
        n = int(body.get("n") or 1) if honour_n else 1
        picked = answers[count["n"]:count["n"] + n]
        count["n"] += n
        return Reply(200, chat(*[json.dumps({"label": a}) for a in picked],
                               usage={"prompt_tokens": 100, "completion_tokens": 5 * n}))
    return handler


@pytest.mark.parametrize("honour_n", [True, False])
def test_self_consistency_takes_the_majority_and_the_share_agreeing(honour_n: bool) -> None:
    answers = ["a", "b", "a", "a", "c"]
    with serve(_voter(answers, honour_n)) as (url, seen):
        out = one(url, confidence=keel.SelfConsistency(samples=5, temperature=0.9),
                  price_per_mtok=(1.0, 2.0))
    assert isinstance(out, keel.Prediction)
    assert out.output == {"label": "a"} and out.confidence == pytest.approx(3 / 5)
    bodies = [r.json() for r in seen]
    assert bodies[0]["temperature"] == 0.9 and "logprobs" not in bodies[0]
    assert len(seen) == (1 if honour_n else 5)  # a server that ignores n is topped up
    assert bodies[0].get("n") == 5
    calls = len(seen)
    assert out.usage.cost_usd == pytest.approx((calls * 100 * 1.0 + 25 * 2.0) / 1e6)
    assert out.metadata["confidence"]["votes"][0] == [{"label": "a"}, 3]


def test_self_consistency_counts_broken_samples_as_disagreeing() -> None:
    with serve(lambda r: Reply(200, chat('{"label": "a"}', "no json", '{"label": "a"}'))) as (url, _s):
        out = one(url, confidence=keel.SelfConsistency(samples=3))
    assert out.output == {"label": "a"} and out.confidence == pytest.approx(2 / 3)
    assert out.metadata["confidence"]["problems"] == ["keel.model.malformed"]


def test_a_judge_gives_its_probability_that_the_answer_is_right() -> None:
    def handler(req: Request) -> Reply:
        body = req.json()
        if body["response_format"]["json_schema"]["name"] == "Verdict":
            verdict = chat('{"correct": false}')
            verdict["choices"][0]["logprobs"] = {"content": [{"token": "false", "logprob": -0.2231}]}
            return Reply(200, verdict)
        return Reply(200, chat('{"label": "a"}'))

    with serve(handler) as (url, seen):
        out = one(url, confidence=keel.Judge(), price_per_mtok=(1.0, 2.0))
    judge_body = seen[1].json()
    assert "It answered:" in judge_body["messages"][1]["content"]
    assert '{"label":"a"}' in judge_body["messages"][1]["content"]
    assert out.output == {"label": "a"}
    assert out.confidence == pytest.approx(1 - 0.8, abs=1e-3)  # "false" at 80%
    assert out.usage.cost_usd == pytest.approx(2 * (1000 * 1.0 + 100 * 2.0) / 1e6)  # both paid


# -- the breaker cuts retries short, and says so ------------------------------------------------
def test_the_trace_says_when_the_breaker_cut_retries_short(tmp_path: Path, store: keel.Store) -> None:
    with serve(lambda r: Reply(503, {"error": {"message": "overloaded"}})) as (url, _seen):
        model = keel.OpenAIModel("gpt-4o-mini", prompt="{text}", base_url=url)
        model.resilience = keel.Resilience(
            retry=RetryPolicy(max_attempts=5, base_delay_s=0.001, deadline_s=30), timeout_s=5,
            breaker=BreakerPolicy(window=4, min_calls=4, reset_timeout_s=600))
        rows = [(f"k{i}", f"message {i}") for i in range(8)]
        s = keel.run(make(model, fallback=lambda m: {"label": "rules"}),
                     write_csv(tmp_path / "in.csv", rows), store=store, batch_size=8)
    assert s.counts["fallback"] == 8
    stopped = [e for k, _ in rows for e in keel.trace(k, store=store)[0]["events"]
               if e["kind"] == "retries_stopped"]
    assert stopped, "nobody's retries were cut short by the open circuit"
    assert "circuit opened" in stopped[0]["detail"]["why"] and "of 5 attempts" in stopped[0]["detail"]["why"]
