"""An OpenAI-compatible chat-completions model (OpenAI, vLLM, Ollama, a LiteLLM proxy).

One request per record: a prompt from a template, JSON (or JSON-schema structured) output
parsed into the workflow's output contract, one bounded re-ask when the answer breaks the
contract (its cost counted), tokens and cost from a price table, confidence from the
answer's token log-probabilities or from a field the model is asked to fill.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import BaseModel

from keel._http import retry_after
from keel._prediction import Prediction, Usage
from keel.contracts import Contract
from keel.errors import (
    MalformedOutput,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NonRetryableModelError,
    RateLimited,
    Refused,
)
from keel.models._base import Model, Outcome, hash_text, source_hash

if TYPE_CHECKING:
    from keel.resilience import Resilience

#: USD per million (input, output) tokens. Prices change: pass ``price_per_mtok`` to be sure.
PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
}

_REASK = ("Your answer could not be used: {problem}. Reply again with only a JSON object "
          "that fits the schema, nothing else.")


class OpenAIModel(Model):
    """Chat completions over HTTP with JSON output.

    ``prompt`` is a ``str.format`` template over the input's fields (``"Classify: {text}"``)
    or a function of the input. The output contract comes from the workflow (or
    ``output=``). Confidence: ``confidence_field`` names a number in [0, 1] the model is
    asked to include (it is removed from the output unless the contract declares it);
    otherwise, with ``logprobs=True``, the joint probability of the answer's tokens (the JSON
    punctuation is near certain, so this is the probability of the values); otherwise
    ``default_confidence`` (0: nothing is accepted without a person). ``resilience`` sets
    retry, timeout, breaker and rate limits for this model (else the workflow's apply).
    ``base_url`` defaults to ``$OPENAI_BASE_URL``, else OpenAI; the key to ``$OPENAI_API_KEY``.
    """

    kind = "openai"
    is_async = True

    def __init__(
        self,
        model: str,
        *,
        prompt: str | Callable[[Any], str],
        system: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        name: str | None = None,
        output: type[BaseModel] | None = None,
        structured: bool = True,
        temperature: float = 0.0,
        max_tokens: int | None = 512,
        confidence_field: str | None = None,
        logprobs: bool = True,
        default_confidence: float = 0.0,
        price_per_mtok: tuple[float, float] | None = None,
        max_reasks: int = 1,
        http_timeout_s: float = 60.0,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        self.model = model
        self.prompt = prompt
        self.system = system
        self.base_url = (base_url or os.environ.get("OPENAI_BASE_URL")
                         or "https://api.openai.com/v1").rstrip("/")
        self.api_key = api_key
        self.name = name or model
        self.contract = Contract(output) if output is not None else None
        self.structured = structured
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.confidence_field = confidence_field
        self.logprobs = logprobs
        self.default_confidence = default_confidence
        self.price = price_per_mtok or PRICES.get(model, (0.0, 0.0))
        self.max_reasks = max_reasks
        self.http_timeout_s = http_timeout_s
        self.headers = dict(headers or {})
        self.extra_body = dict(extra_body or {})
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self.resilience = resilience

    # -- identity -------------------------------------------------------------------------------
    @property
    def version(self) -> str:
        prompt = self.prompt if isinstance(self.prompt, str) else source_hash(self.prompt)
        schema = orjson.dumps(self._schema(), option=orjson.OPT_SORT_KEYS) if self.contract else b""
        return "openai-" + hash_text(self.model, prompt, self.system or "", schema,
                                     repr((self.temperature, self.max_tokens,
                                           self.confidence_field, self.structured)), length=12)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a release's artifact) without its HTTP clients and without an API key
        given in code: a loaded copy reads ``$OPENAI_API_KEY`` like any other."""
        state = dict(self.__dict__)
        state.update(_clients={}, api_key=None)
        return state

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "metrics": {"price_in_per_mtok": self.price[0],
                                                  "price_out_per_mtok": self.price[1]}}

    def bind(self, output_contract: Contract) -> None:
        if self.contract is None:
            self.contract = output_contract

    # -- the request ----------------------------------------------------------------------------
    def _schema(self) -> dict[str, Any]:
        assert self.contract is not None
        schema = self.contract.schema()
        if self.confidence_field and self.confidence_field not in schema.get("properties", {}):
            schema = {**schema, "properties": {**schema.get("properties", {}),
                                               self.confidence_field: {"type": "number"}}}
            schema["required"] = [*schema.get("required", []), self.confidence_field]
        return schema

    def _messages(self, item: BaseModel) -> list[dict[str, str]]:
        text = (self.prompt.format(**item.model_dump()) if isinstance(self.prompt, str)
                else self.prompt(item))
        rule = "Answer with one JSON object"
        if self.contract is not None:
            rule += " that fits this JSON schema: " + orjson.dumps(self._schema()).decode()
        if self.confidence_field:
            rule += (f". Put your confidence that the answer is right, a number from 0 to 1, "
                     f"in the field {self.confidence_field!r}")
        system = f"{self.system}\n\n{rule}." if self.system else f"{rule}."
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _body(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "temperature": self.temperature, **self.extra_body}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        if self.logprobs and not self.confidence_field:
            body["logprobs"] = True
        if self.structured and self.contract is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": self.contract.model.__name__, "schema": self._schema()}}
        else:
            body["response_format"] = {"type": "json_object"}
        return body

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            key = self.api_key or os.environ.get("OPENAI_API_KEY")
            headers = {**({"Authorization": f"Bearer {key}"} if key else {}), **self.headers}
            client = httpx.AsyncClient(base_url=self.base_url, headers=headers,
                                       timeout=self.http_timeout_s)
            self._clients[loop] = client
        return client

    async def aclose(self) -> None:
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client().post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise ModelTimeout(f"{self.name}: HTTP timeout: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise _status_error(self.name, resp)
        try:
            data = resp.json()
            if not isinstance(data["choices"][0]["message"], dict):
                raise TypeError("message is not an object")
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(f"{self.name}: unreadable response body "
                                   f"({resp.text[:120]!r})") from exc
        return data  # type: ignore[no-any-return]

    # -- answers --------------------------------------------------------------------------------
    def _usage(self, data: dict[str, Any]) -> Usage:
        u = data.get("usage") or {}
        n_in, n_out = int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0)
        return Usage(n_in, n_out, (n_in * self.price[0] + n_out * self.price[1]) / 1e6)

    def _read(self, choice: dict[str, Any]) -> tuple[dict[str, Any] | None, float, str | None]:
        """(output, confidence, problem): the answer, or what is wrong with it."""
        content = choice["message"].get("content") or ""
        try:
            obj = orjson.loads(content)
        except orjson.JSONDecodeError:
            cut = " (cut off at max_tokens)" if choice.get("finish_reason") == "length" else ""
            return None, 0.0, f"the answer is not valid JSON{cut}"
        if not isinstance(obj, dict):
            return None, 0.0, "the answer is not a JSON object"
        conf, problem = self._confidence(obj, choice)
        if problem is None and self.contract is not None:
            _value, violations = self.contract.validate(obj)
            if violations:
                problem = "; ".join(str(v) for v in violations[:5])
        return (obj, conf, None) if problem is None else (None, 0.0, problem)

    def _confidence(self, obj: dict[str, Any], choice: dict[str, Any]) -> tuple[float, str | None]:
        field = self.confidence_field
        if field:
            declared = self.contract is not None and field in self.contract.fields
            raw = obj.get(field) if declared else obj.pop(field, None)
            try:
                conf = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return 0.0, f"field {field!r} must be a number from 0 to 1"
            return (conf, None) if 0.0 <= conf <= 1.0 else (0.0, f"{field!r} is not in [0, 1]")
        tokens = ((choice.get("logprobs") or {}).get("content")) or []
        if tokens:
            return math.exp(_total_logprob(tokens)), None
        return self.default_confidence, None

    async def _one(self, item: BaseModel) -> Outcome:
        messages = self._messages(item)
        usage = Usage()
        problem = ""
        for ask in range(self.max_reasks + 1):
            try:
                data = await self._post(self._body(messages))
            except ModelError as exc:
                exc.cost_usd += usage.cost_usd
                return exc
            usage = usage + self._usage(data)
            choice = data["choices"][0]
            refusal = choice["message"].get("refusal")
            if refusal or choice.get("finish_reason") == "content_filter":
                return Refused(f"{self.name} refused: {refusal or 'content filter'}",
                               cost_usd=usage.cost_usd)
            try:
                out, conf, problem_or_none = self._read(choice)
            except ImpossibleAnswer as exc:  # the server's own numbers are wrong: no re-ask
                return MalformedOutput(f"{self.name}: {exc}", cost_usd=usage.cost_usd)
            if out is not None:
                meta = {"prompt": messages[1]["content"], "raw": choice["message"].get("content"),
                        "finish_reason": choice.get("finish_reason"), "reasks": ask,
                        "response_model": data.get("model")}
                return Prediction(output=out, confidence=conf, usage=usage, metadata=meta)
            problem = problem_or_none or "invalid answer"
            said = choice["message"].get("content") or ""
            messages = [*messages, {"role": "assistant", "content": said},
                        {"role": "user", "content": _REASK.format(problem=problem)}]
        return MalformedOutput(f"{self.name}: answer broke the output contract after "
                               f"{self.max_reasks} re-ask(s): {problem}", cost_usd=usage.cost_usd)

    async def apredict(self, inputs: Any) -> list[Outcome]:
        return list(await asyncio.gather(*(self._one(item) for item in inputs)))

    def predict(self, inputs: Any) -> list[Outcome]:
        """Blocking use outside a runner: one private event loop per call."""
        async def go() -> list[Outcome]:
            try:
                return await self.apredict(inputs)
            finally:
                await self.aclose()

        return asyncio.run(go())


class ImpossibleAnswer(ValueError):
    """The server sent numbers no model can produce (a positive log-probability, say)."""


def _total_logprob(tokens: list[dict[str, Any]]) -> float:
    """The answer's joint log-probability. Each token's must be a finite number <= 0: anything
    else (null, NaN, a positive value) makes the confidence meaningless, so the answer is
    refused rather than trusted (it goes to the fallback or a person, never auto-accepted)."""
    total = 0.0
    for tok in tokens:
        lp = tok.get("logprob") if isinstance(tok, dict) else None
        if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp) \
                or lp > 0:
            raise ImpossibleAnswer(f"the server sent an impossible log-probability ({lp!r}) for "
                                   f"token {tok.get('token') if isinstance(tok, dict) else tok!r}: "
                                   "the answer's confidence cannot be trusted")
        total += float(lp)
    return total


def _status_error(name: str, resp: httpx.Response) -> ModelError:
    code = resp.status_code
    try:
        detail = str((resp.json().get("error") or {}).get("message") or "")[:200]
    except (ValueError, AttributeError):
        detail = resp.text[:200]
    msg = f"{name}: HTTP {code}" + (f": {detail}" if detail else "")
    wait = retry_after(resp.headers.get("retry-after"))
    if wait is None and resp.headers.get("retry-after-ms"):
        try:
            wait = float(resp.headers["retry-after-ms"]) / 1000.0
        except ValueError:
            wait = None
    if code == 429:
        return RateLimited(msg, retry_after_s=wait)
    if code == 408:
        return ModelTimeout(msg)
    if code >= 500:
        return ModelUnavailable(msg, retry_after_s=wait)
    if code == 413:
        return NonRetryableModelError(f"{msg} (payload too large: shorten the prompt or input)")
    return NonRetryableModelError(msg)
