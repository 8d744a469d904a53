"""An OpenAI-compatible chat-completions model (OpenAI, vLLM, Ollama, a LiteLLM proxy).

One request per record (or ``n`` samples in one): a prompt from a template, JSON (or
JSON-schema structured) output parsed into the workflow's output contract, one bounded re-ask
when the answer breaks the contract (its cost counted), request parameters per model family,
tokens and cost from a maintained price table, and a declared confidence strategy
(:mod:`keel.models._confidence`). Whatever the server sends back ends as a prediction or a
typed error of its own, with the tokens and cost spent so far: never a crash of the batch.
"""

from __future__ import annotations

import asyncio
import math
import os
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict

from keel._http import retry_after
from keel._prediction import Prediction, Usage
from keel.contracts import Contract
from keel.errors import (
    ContentFiltered,
    EmptyAnswer,
    ImpossibleConfidence,
    MalformedOutput,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    Refused,
    RetryableModelError,
    Truncated,
)
from keel.models._base import Model, Outcome, hash_text, source_hash
from keel.models._confidence import (
    Confidence,
    Fixed,
    Judge,
    Logprobs,
    SelfConsistency,
    SelfReported,
)
from keel.models._prices import Price, given_price, price_for
from keel.models._wire import (
    FAMILIES,
    extract_json,
    family_of,
    merge_params,
    normalize_base_url,
    request_params,
    schema_name,
    status_error,
    strict_schema,
)

if TYPE_CHECKING:
    from keel.resilience import Resilience

_REASK = ("Your answer could not be used: {problem}. Reply again with only a JSON object "
          "that fits the schema, nothing else.")
#: max_tokens when none is given: an answer's worth for chat models; reasoning models spend
#: part of theirs thinking (max_completion_tokens covers both)
_MAX_TOKENS = {"chat": 512, "reasoning": 4096}


class OpenAIModel(Model):
    """Chat completions over HTTP with JSON output.

    ``prompt`` is a ``str.format`` template over the input's fields (``"Classify: {text}"``)
    or a function of the input. The output contract comes from the workflow (or ``output=``).

    ``confidence`` is a strategy (:class:`keel.Logprobs`, the default;
    :class:`keel.SelfConsistency`; :class:`keel.Judge`; :class:`keel.SelfReported`;
    :class:`keel.models.Fixed`); the older ``confidence_field=``, ``logprobs=False`` and
    ``default_confidence=`` still mean SelfReported, Fixed and Logprobs' default.

    Request parameters follow the model family (``family=`` overrides the guess from the
    name): chat models get ``temperature`` (0 unless given), ``max_tokens`` (512) and
    ``logprobs`` when the strategy reads them; reasoning models (o1, o3, o4-mini, gpt-5 ...)
    get ``max_completion_tokens`` (4096) and neither temperature nor logprobs. ``extra_body``
    wins over all of them (a None value removes one). ``strict`` sends ``"strict": true`` with
    the JSON schema (default: whenever the output contract can be expressed strictly).

    Prices come from the maintained table (:func:`keel.models.price_for`) unless
    ``price_per_mtok`` gives ``(input, output)`` or ``(input, output, cached input)`` USD per
    million tokens; a model with neither has an unknown cost (reported so, never as $0).
    ``base_url`` defaults to ``$OPENAI_BASE_URL``, else OpenAI (a bare host gets ``/v1``);
    the key to ``$OPENAI_API_KEY``. ``resilience`` sets retry, timeout, breaker and rate
    limits for this model (else the workflow's apply).
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
        confidence: Confidence | None = None,
        structured: bool = True,
        strict: bool | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        family: str | None = None,
        confidence_field: str | None = None,
        logprobs: bool = True,
        default_confidence: float = 0.0,
        price_per_mtok: tuple[float, ...] | None = None,
        max_reasks: int = 1,
        http_timeout_s: float = 60.0,
        headers: dict[str, str] | None = None,
        extra_body: dict[str, Any] | None = None,
        resilience: Resilience | None = None,
    ) -> None:
        if family is not None and family not in FAMILIES:
            raise ValueError(f"family {family!r}: use one of {', '.join(FAMILIES)}")
        self.model = model
        self.prompt = prompt
        self.system = system
        self.base_url = normalize_base_url(base_url or os.environ.get("OPENAI_BASE_URL")
                                           or "https://api.openai.com/v1")
        self.api_key = api_key
        self.name = name or model
        self.contract = Contract(output) if output is not None else None
        self.structured = structured
        self.strict = strict
        self.extra_body = dict(extra_body or {})
        self.family = family or family_of(model, self.extra_body)
        self.temperature = temperature
        self.max_tokens = max_tokens if max_tokens is not None else _MAX_TOKENS[self.family]
        self.confidence = _strategy(confidence, confidence_field, logprobs, default_confidence)
        self.price: Price | None = (given_price(model, price_per_mtok) if price_per_mtok
                                    else price_for(model))
        self.max_reasks = max_reasks
        self.http_timeout_s = http_timeout_s
        self.headers = dict(headers or {})
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._judge: OpenAIModel | None = None
        self.resilience = resilience

    # -- identity -------------------------------------------------------------------------------
    @property
    def confidence_field(self) -> str | None:
        return self.confidence.field if isinstance(self.confidence, SelfReported) else None

    @property
    def version(self) -> str:
        prompt = self.prompt if isinstance(self.prompt, str) else source_hash(self.prompt)
        schema = orjson.dumps(self._schema(), option=orjson.OPT_SORT_KEYS) if self.contract else b""
        temperature = self.temperature
        if temperature is None and self.family == "chat":
            temperature = 0.0
        parts: list[str | bytes] = [self.model, prompt, self.system or "", schema,
                 repr((temperature, self.max_tokens, self.confidence_field, self.structured))]
        # what changes answers beyond the original four settings (absent: versions as before)
        if isinstance(self.confidence, (SelfConsistency, Judge)):
            parts.append(repr(self.confidence.describe()))
        if self.extra_body:
            parts.append(orjson.dumps(self.extra_body, option=orjson.OPT_SORT_KEYS,
                                      default=str).decode())
        if self.strict is False:
            parts.append("strict=False")
        return "openai-" + hash_text(*parts, length=12)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a release's artifact) without its HTTP clients and without an API key
        given in code: a loaded copy reads ``$OPENAI_API_KEY`` like any other."""
        state = dict(self.__dict__)
        state.update(_clients={}, api_key=None, _judge=None)
        return state

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "metrics": {
            "price": self.price.as_dict() if self.price is not None else "unknown",
            "confidence": self.confidence.describe(), "family": self.family}}

    def bind(self, output_contract: Contract) -> None:
        if self.contract is None:
            self.contract = output_contract

    # -- the request ----------------------------------------------------------------------------
    def _schema(self) -> dict[str, Any]:
        assert self.contract is not None
        schema = self.contract.schema()
        field = self.confidence_field
        if field and field not in schema.get("properties", {}):
            schema = {**schema, "properties": {**schema.get("properties", {}),
                                               field: {"type": "number"}}}
            schema["required"] = [*schema.get("required", []), field]
        return schema

    def render(self, item: BaseModel) -> tuple[str, dict[str, Any]]:
        """The prompt's text for ``item``, and the template variables it used."""
        if not isinstance(self.prompt, str):
            return self.prompt(item), {}
        values = item.model_dump()
        names = {f.split(".", 1)[0].split("[", 1)[0]
                 for _lit, f, _spec, _conv in string.Formatter().parse(self.prompt) if f}
        return self.prompt.format(**values), {k: values[k] for k in sorted(names) if k in values}

    def _messages(self, text: str) -> list[dict[str, str]]:
        rule = "Answer with one JSON object"
        if self.contract is not None:
            rule += " that fits this JSON schema: " + orjson.dumps(self._schema()).decode()
        if self.confidence_field:
            rule += (f". Put your confidence that the answer is right, a number from 0 to 1, "
                     f"in the field {self.confidence_field!r}")
        system = f"{self.system}\n\n{rule}." if self.system else f"{rule}."
        return [{"role": "system", "content": system}, {"role": "user", "content": text}]

    def _response_format(self) -> dict[str, Any]:
        if not (self.structured and self.contract is not None):
            return {"type": "json_object"}
        schema = self._schema()
        spec: dict[str, Any] = {"name": schema_name(self.contract.model.__name__)}
        closed = strict_schema(schema) if self.strict is not False else None
        if closed is not None:
            spec.update(schema=closed, strict=True)
        else:
            spec["schema"] = schema
            if self.strict:  # asked for, but the contract cannot be expressed strictly
                spec["strict"] = True
        return {"type": "json_schema", "json_schema": spec}

    def _body(self, messages: list[dict[str, str]], *, n: int = 1,
              temperature: float | None = None) -> dict[str, Any]:
        wants_logprobs = isinstance(self.confidence, Logprobs) and n == 1
        if temperature is None or self.family == "reasoning":  # they sample at their own
            temperature = self.temperature
        params = request_params(self.family, max_tokens=self.max_tokens, n=n,
                                temperature=temperature, logprobs=wants_logprobs)
        body = {"model": self.model, "messages": messages, **params,
                "response_format": self._response_format()}
        return merge_params(body, self.extra_body)

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
        if self._judge is not None:
            await self._judge.aclose()

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        try:
            resp = await self._client().post("/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise ModelTimeout(f"{self.name}: HTTP timeout: {exc!r}") from exc
        except httpx.HTTPError as exc:
            raise ModelUnavailable(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 400:
            raise status_error(self.name, f"{self.base_url}/chat/completions", resp,
                               _wait_s(resp))
        try:
            data = resp.json()
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                raise TypeError("no list of choices")
        except (ValueError, TypeError) as exc:
            raise ModelUnavailable(f"{self.name}: unreadable response body "
                                   f"({resp.text[:120]!r})") from exc
        return data

    # -- answers --------------------------------------------------------------------------------
    def _usage(self, data: dict[str, Any]) -> Usage:
        u: dict[str, Any] = data["usage"] if isinstance(data.get("usage"), dict) else {}
        n_in, n_out = _count(u.get("prompt_tokens")), _count(u.get("completion_tokens"))
        details = u.get("prompt_tokens_details")
        cached = _count(details.get("cached_tokens") if isinstance(details, dict)
                        else u.get("prompt_cache_hit_tokens"))
        price = self.price
        if price is None and isinstance(data.get("model"), str):
            price = price_for(data["model"])  # a dated name the server answered with
        if price is None:
            return Usage(n_in, n_out, 0.0, cached, priced=False)
        return Usage(n_in, n_out, price.cost_usd(n_in, n_out, cached), cached)

    def _read(self, choice: Any) -> Reading:
        """The answer, or a typed error saying what is wrong with it. Only broken or cut-off
        JSON and a contract violation are worth a re-ask (``mendable``)."""
        if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
            return Reading.fail(EmptyAnswer(f"{self.name}: the answer has no message"))
        message, finish = choice["message"], choice.get("finish_reason")
        if message.get("refusal"):
            return Reading.fail(Refused(f"{self.name} refused: {message['refusal']}"))
        if finish == "content_filter":
            return Reading.fail(ContentFiltered(f"{self.name}: the server's content filter "
                                                "withheld the answer"))
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            if finish == "length":
                return Reading.fail(Truncated(
                    f"{self.name}: the answer was cut off at {self.max_tokens} tokens before "
                    "it began (a reasoning model spends them thinking): raise max_tokens"))
            return Reading.fail(EmptyAnswer(f"{self.name}: the answer is empty "
                                            f"(finish_reason {finish!r})"))
        try:
            obj = orjson.loads(extract_json(content))
        except orjson.JSONDecodeError:
            if finish == "length":
                return Reading.mend(Truncated("the answer is not valid JSON (cut off at "
                                              f"max_tokens={self.max_tokens})"))
            return Reading.mend(MalformedOutput("the answer is not valid JSON"))
        if not isinstance(obj, dict):
            return Reading.mend(MalformedOutput("the answer is not a JSON object"))
        conf, problem = self._confidence(obj, choice)
        if problem is not None:
            return Reading.fail(problem)
        if self.contract is not None:
            value, violations = self.contract.validate(obj)
            if violations or value is None:
                return Reading.mend(MalformedOutput("; ".join(str(v) for v in violations[:5])))
            obj = value.model_dump(mode="json")
        return Reading(obj, conf)

    def _confidence(self, obj: dict[str, Any], choice: dict[str, Any]) -> tuple[float, ModelError | None]:
        strategy = self.confidence
        if isinstance(strategy, SelfReported):
            field = strategy.field
            declared = self.contract is not None and field in self.contract.fields
            raw = obj.get(field) if declared else obj.pop(field, None)
            try:
                conf = float(raw)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return 0.0, MalformedOutput(f"field {field!r} must be a number from 0 to 1")
            if not 0.0 <= conf <= 1.0:
                return 0.0, MalformedOutput(f"{field!r} is not in [0, 1]")
            return conf, None
        if isinstance(strategy, Fixed):
            return strategy.value, None
        logprobs = choice.get("logprobs")
        tokens = logprobs.get("content") if isinstance(logprobs, dict) else None
        if isinstance(strategy, Logprobs) and tokens:
            try:
                return math.exp(_total_logprob(tokens)), None
            except ImpossibleConfidence as exc:
                return 0.0, ImpossibleConfidence(f"{self.name}: {exc.message}")
        return strategy.default if isinstance(strategy, Logprobs) else 0.0, None

    def _typed(self, err: ModelError, usage: Usage) -> ModelError:
        """A problem as the record's outcome, carrying what the calls spent."""
        msg = err.message if err.message.startswith(self.name) else f"{self.name}: {err.message}"
        return type(err)(msg, usage=usage)

    async def _asked(self, messages: list[dict[str, str]]) -> Outcome:
        """One answer (temperature as declared), re-asked when it breaks the contract."""
        usage = Usage()
        last: ModelError | None = None
        for ask in range(self.max_reasks + 1):
            try:
                data = await self._post(self._body(messages))
            except ModelError as exc:
                exc.usage = exc.usage + usage
                return exc
            usage = usage + self._usage(data)
            if not data["choices"]:
                return EmptyAnswer(f"{self.name}: the server answered with no choices",
                                   usage=usage)
            choice = data["choices"][0]
            got = self._read(choice)
            if got.output is not None:
                meta = {"raw": choice["message"].get("content"),
                        "finish_reason": choice.get("finish_reason"), "reasks": ask,
                        "response_model": data.get("model")}
                return Prediction(output=got.output, confidence=got.confidence, usage=usage,
                                  metadata=meta)
            problem = got.problem
            assert problem is not None
            if not got.mendable:  # nothing a re-ask mends
                return self._typed(problem, usage)
            last = problem
            said = choice["message"].get("content") or ""
            messages = [*messages, {"role": "assistant", "content": said},
                        {"role": "user", "content": _REASK.format(problem=problem.message)}]
        assert last is not None
        cls = Truncated if isinstance(last, Truncated) else MalformedOutput
        return cls(f"{self.name}: answer broke the output contract after {self.max_reasks} "
                   f"re-ask(s): {last.message}", usage=usage)

    async def _sampled(self, messages: list[dict[str, str]], sc: SelfConsistency) -> Outcome:
        """``sc.samples`` answers (as ``n`` per request, topped up where a server sends
        fewer); the majority answer with the share that agrees as its confidence."""
        usage, requests = Usage(), 0
        choices: list[Any] = []
        while len(choices) < sc.samples and requests < sc.samples:
            body = self._body(messages, n=sc.samples - len(choices), temperature=sc.temperature)
            try:
                data = await self._post(body)
            except ModelError as exc:
                if not choices or not isinstance(exc, RetryableModelError):
                    exc.usage = exc.usage + usage
                    return exc
                break  # samples in hand: the missing ones count as disagreeing
            usage, requests = usage + self._usage(data), requests + 1
            if not data["choices"]:
                break
            choices.extend(data["choices"][: sc.samples - len(choices)])
        votes: Counter[bytes] = Counter()
        first: dict[bytes, dict[str, Any]] = {}
        problems: list[ModelError] = []
        for choice in choices:
            got = self._read(choice)
            out = got.output
            if out is None:
                assert got.problem is not None
                problems.append(got.problem)
                continue
            key = orjson.dumps({k: out.get(k) for k in (sc.fields or sorted(out))},
                               option=orjson.OPT_SORT_KEYS)
            votes[key] += 1
            first.setdefault(key, out)
        if not votes:
            if not problems:
                return EmptyAnswer(f"{self.name}: the server answered with no choices",
                                   usage=usage)
            return self._typed(problems[0], usage)
        key, agree = votes.most_common(1)[0]
        meta = {"confidence": {"strategy": "SelfConsistency", "samples": sc.samples,
                               "answered": len(choices), "valid": sum(votes.values()),
                               "agree": agree, "requests": requests,
                               "votes": [[orjson.loads(k), v] for k, v in votes.most_common()]}}
        if problems:
            meta["confidence"]["problems"] = sorted({p.code for p in problems})
        return Prediction(output=first[key], confidence=agree / sc.samples, usage=usage,
                          metadata=meta)

    async def _judged(self, item: BaseModel, pred: Prediction, judge: Judge) -> Outcome:
        """The answer's confidence from a judge: its probability that the answer is right."""
        verdict = await self._judge_model(judge).judge_one(item, pred.output)
        if isinstance(verdict, ModelError):
            if isinstance(verdict, RetryableModelError):  # try the record again
                verdict.usage = verdict.usage + pred.usage
                return verdict
            pred.metadata["confidence"] = {"strategy": "Judge", "error": verdict.message}
            return Prediction(pred.output, 0.0, pred.usage + verdict.usage, pred.metadata)
        said = bool(verdict.output.get("correct"))
        p_correct = verdict.confidence if said else 1.0 - verdict.confidence
        pred.metadata["confidence"] = {"strategy": "Judge", "model": self._judge_model(judge).model,
                                       "verdict": said, "judge_confidence": verdict.confidence,
                                       "judge_cost_usd": verdict.usage.cost_usd}
        return Prediction(pred.output, p_correct, pred.usage + verdict.usage, pred.metadata)

    def _judge_model(self, judge: Judge) -> OpenAIModel:
        if self._judge is None:
            strategy: Confidence = (Logprobs(default=1.0) if judge.samples == 1 else
                                    SelfConsistency(judge.samples, judge.temperature,
                                                    ("correct",)))
            self._judge = OpenAIModel(
                judge.model or self.model, prompt=judge.prompt, output=Verdict,
                base_url=judge.base_url or self.base_url, api_key=judge.api_key or self.api_key,
                confidence=strategy, headers=self.headers, http_timeout_s=self.http_timeout_s,
                system="You check answers carefully and say whether they are right.",
                price_per_mtok=(None if judge.model else _as_tuple(self.price)))
        return self._judge

    async def judge_one(self, item: BaseModel, answer: Any) -> Outcome:
        """As a judge: is ``answer`` right for ``item``?"""
        values = item.model_dump(mode="json")
        shown = _JudgeItem(input=orjson.dumps(values).decode(),
                           answer=orjson.dumps(answer).decode(),
                           **{k: v for k, v in values.items() if k not in ("input", "answer")})
        return await self._one(shown)

    async def _one(self, item: BaseModel) -> Outcome:
        text, variables = self.render(item)
        messages = self._messages(text)
        strategy = self.confidence
        if isinstance(strategy, SelfConsistency):
            outcome = await self._sampled(messages, strategy)
        else:
            outcome = await self._asked(messages)
        if isinstance(outcome, Prediction) and isinstance(strategy, Judge):
            outcome = await self._judged(item, outcome, strategy)
        if isinstance(outcome, Prediction):
            outcome.metadata.update(self._prompt_meta(text, variables))
        return outcome

    def _prompt_meta(self, text: str, variables: dict[str, Any]) -> dict[str, Any]:
        """What the trace shows of the prompt: its template, the variables it used, the
        text sent, the system message, the price used."""
        template = (self.prompt if isinstance(self.prompt, str)
                    else f"<function {getattr(self.prompt, '__name__', '?')}>")
        return {"prompt": text, "template": template, "variables": variables,
                "system": self.system,
                "price": (self.price.matched or "price_per_mtok") if self.price else "unknown"}

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


class Verdict(BaseModel):
    """A judge's answer."""

    correct: bool


class _JudgeItem(BaseModel):
    model_config = ConfigDict(extra="allow")
    input: str
    answer: str


@dataclass(slots=True)
class Reading:
    """One choice read: the output and its confidence, or the problem (and whether a re-ask
    may mend it)."""

    output: dict[str, Any] | None
    confidence: float = 0.0
    problem: ModelError | None = None
    mendable: bool = False

    @classmethod
    def fail(cls, problem: ModelError) -> Reading:
        return cls(None, 0.0, problem)

    @classmethod
    def mend(cls, problem: ModelError) -> Reading:
        return cls(None, 0.0, problem, mendable=True)


def _strategy(given: Confidence | None, field: str | None, logprobs: bool,
              default: float) -> Confidence:
    if given is not None:
        if field is not None:
            raise ValueError("pass confidence=keel.SelfReported(field) instead of both "
                             "confidence= and confidence_field=")
        return given
    if field:
        return SelfReported(field)
    return Logprobs(default) if logprobs else Fixed(default)


def _as_tuple(price: Price | None) -> tuple[float, ...] | None:
    if price is None or price.table_ref is not None:
        return None
    if price.cached_input_per_mtok is None:
        return (price.input_per_mtok, price.output_per_mtok)
    return (price.input_per_mtok, price.output_per_mtok, price.cached_input_per_mtok)


def _count(value: Any) -> int:
    """A token count as servers send it (a number, a numeric string, null, garbage)."""
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return 0


def _wait_s(resp: httpx.Response) -> float | None:
    wait = retry_after(resp.headers.get("retry-after"))
    if wait is None and resp.headers.get("retry-after-ms"):
        try:
            wait = float(resp.headers["retry-after-ms"]) / 1000.0
        except ValueError:
            wait = None
    return wait


def _total_logprob(tokens: Any) -> float:
    """The answer's joint log-probability. Each token's must be a finite number <= 0: anything
    else (null, NaN, a positive value) makes the confidence meaningless, so the answer is
    refused rather than trusted (it goes to the fallback or a person, never auto-accepted)."""
    total = 0.0
    for tok in tokens if isinstance(tokens, list) else [tokens]:
        lp = tok.get("logprob") if isinstance(tok, dict) else None
        if isinstance(lp, bool) or not isinstance(lp, (int, float)) or not math.isfinite(lp) \
                or lp > 0:
            where = tok.get("token") if isinstance(tok, dict) else tok
            raise ImpossibleConfidence(
                f"the server sent an impossible log-probability ({lp!r}) for token {where!r}: "
                "the answer's confidence cannot be trusted")
        total += float(lp)
    return total
