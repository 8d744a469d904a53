"""A chat-completions server's behaviour, for tests of keel.OpenAIModel (see _loopback)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import Any

from tests._loopback import Reply, Request

PRICE = (1.0, 2.0)  # USD per million tokens in, out
CALL_COST = (20 * PRICE[0] + 5 * PRICE[1]) / 1e6
LOGPROBS = [-0.01, -0.2, -0.01]


def completion(content: str, *, finish: str = "stop", refusal: str | None = None,
               logprobs: bool = True, values: list[Any] | None = None) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish,
                              "message": {"role": "assistant", "content": content,
                                          "refusal": refusal}}
    if logprobs:
        choice["logprobs"] = {"content": [{"token": "t", "logprob": lp}
                                          for lp in (values or LOGPROBS)]}
    return {"id": "x", "model": "tiny-llm", "choices": [choice],
            "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}


class FakeLLM:
    """Behaves by the message text: ok, 429s, 500s, slow, truncated JSON, refusals, 400s."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, req: Request) -> Reply:
        body = req.json()
        text = body["messages"][1]["content"]
        reask = len(body["messages"]) > 2
        with self.lock:
            self.seen[text] += 1
            n = self.seen[text]
        if "rate-limit" in text and n == 1:
            return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.05"})
        if "server-error" in text and n <= 2:
            return Reply(500, {"error": {"message": "boom"}})
        if "broken-body" in text and n == 1:
            return Reply(200, b'{"id": "x", "choi')
        if "slow" in text:
            return Reply(200, completion('{"label": "slow"}'), delay_s=2.0)
        if "bad-request" in text:
            return Reply(400, {"error": {"message": "context length exceeded"}})
        if "refuse" in text:
            return Reply(200, completion("", refusal="I can't help with that"))
        if "truncated" in text and not reask:
            return Reply(200, completion('{"label": "lo', finish="length"))
        if "always-wrong" in text:
            return Reply(200, completion('{"colour": "blue"}'))
        if "positive-logprob" in text:
            return Reply(200, completion(json.dumps({"label": "long"}), values=[-0.1, 0.7]))
        if "null-logprob" in text:
            return Reply(200, completion(json.dumps({"label": "long"}), values=[-0.1, None]))
        if "nan-logprob" in text:
            return Reply(200, b'{"id": "x", "model": "tiny-llm", "choices": [{"index": 0, '
                              b'"finish_reason": "stop", "message": {"role": "assistant", '
                              b'"content": "{\\"label\\": \\"long\\"}"}, "logprobs": {"content": '
                              b'[{"token": "t", "logprob": NaN}]}}], "usage": {"prompt_tokens": 20, '
                              b'"completion_tokens": 5, "total_tokens": 25}}')
        if "confidence" in text:
            return Reply(200, completion('{"label": "sure", "certainty": 0.42}', logprobs=False))
        return Reply(200, completion(json.dumps({"label": "long"})))
