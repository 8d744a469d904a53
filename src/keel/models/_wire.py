"""The chat-completions wire as servers really speak it: request parameters per model family,
the JSON schema a server will take, JSON found inside the answers models really give, error
bodies of every shape, and base URLs as people paste them."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import httpx

from keel.errors import (
    ConfigError,
    ModelError,
    ModelTimeout,
    ModelUnavailable,
    NonRetryableModelError,
    RateLimited,
)

# -- model families ---------------------------------------------------------------------------
#: OpenAI's reasoning models: o1, o3, o4-mini, gpt-5, gpt-5-mini ... (not gpt-5-chat-latest).
_REASONING = re.compile(r"^(?:o\d+(?:$|-)|gpt-5(?!-chat)(?:$|[-.]))")
FAMILIES = ("chat", "reasoning")


def family_of(model: str, params: dict[str, Any] | None = None) -> str:
    """``"reasoning"`` for OpenAI's reasoning models (they take ``max_completion_tokens`` and
    refuse ``temperature``, ``top_p`` and ``logprobs``), else ``"chat"``. A routing prefix
    (``openai/o4-mini``) or a fine-tune (``ft:o4-mini:...``) is seen through; gpt-5.1 and later
    with ``reasoning_effort: "none"`` behave as chat models."""
    name = model.lower().removeprefix("ft:")
    name = name.rsplit("/", 1)[-1]
    if not _REASONING.match(name):
        return "chat"
    if (params or {}).get("reasoning_effort") == "none" and re.match(r"^gpt-5\.\d", name):
        return "chat"
    return "reasoning"


def request_params(family: str, *, temperature: float | None, max_tokens: int | None,
                   logprobs: bool, n: int = 1) -> dict[str, Any]:
    """The sampling parameters keel sends for a model family (before the user's own)."""
    out: dict[str, Any] = {}
    if family == "reasoning":
        if max_tokens is not None:
            out["max_completion_tokens"] = max_tokens
        if temperature is not None:  # only when the user set it: reasoning models refuse it
            out["temperature"] = temperature
    else:
        out["temperature"] = 0.0 if temperature is None else temperature
        if max_tokens is not None:
            out["max_tokens"] = max_tokens
        if logprobs:
            out["logprobs"] = True
    if n > 1:
        out["n"] = n
    return out


def merge_params(body: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The user's parameters win; a None value removes keel's (``{"max_tokens": None}``)."""
    out = dict(body)
    for key, value in overrides.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


# -- the JSON schema ---------------------------------------------------------------------------
#: Keywords every server with strict structured outputs takes (OpenAI's documented subset
#: less its newer additions: patterns, formats and bounds are left to keel's own check).
_STRICT_KEYWORDS = frozenset({"type", "properties", "required", "additionalProperties", "items",
                              "enum", "const", "anyOf", "$ref", "$defs", "title", "description"})


def schema_name(name: str) -> str:
    """A schema name the official API takes: letters, digits, '_' and '-', at most 64."""
    clean = re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")
    return clean[:64] or "output"


def strict_schema(schema: dict[str, Any]) -> dict[str, Any] | None:
    """``schema`` as strict structured outputs need it (every object closed with
    ``additionalProperties: false``), or None when it uses what strict mode cannot express
    (an optional field, a length or a pattern): then it is sent without ``strict``."""
    out = copy.deepcopy(schema)
    return out if _close(out) else None


def _close(node: Any) -> bool:
    if isinstance(node, list):
        return all(_close(x) for x in node)
    if not isinstance(node, dict):
        return True
    if set(node) - _STRICT_KEYWORDS:
        return False
    if node.get("type") == "object" or "properties" in node:
        props = node.get("properties") or {}
        if set(node.get("required") or []) != set(props):
            return False
        if node.get("additionalProperties") not in (None, False):
            return False
        node["additionalProperties"] = False
        node["required"] = list(props)
    for key in ("properties", "$defs"):
        if key in node and not all(_close(v) for v in node[key].values()):
            return False
    return all(_close(node[k]) for k in ("items", "anyOf") if k in node)


# -- the answer --------------------------------------------------------------------------------
_THINK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.S | re.I)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)


def extract_json(content: str) -> str:
    """The JSON object in a model's answer: after a reasoning block (``<think>...</think>``,
    also when the server dropped the opening tag), inside a code fence, or the first object
    in surrounding prose. Returns the text to parse (unchanged when nothing is found)."""
    text = _THINK.sub("", content)
    for tag in ("</think>", "</thinking>", "</reasoning>"):
        if tag in text:
            text = text.rsplit(tag, 1)[1]
    text = text.strip()
    if text.startswith("{"):
        return _first_object(text) or text
    fenced = _FENCE.search(text)
    if fenced:
        return fenced.group(1).strip()
    start = text.find("{")
    return (_first_object(text[start:]) or text) if start >= 0 else text


def _first_object(text: str) -> str | None:
    try:
        _obj, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return None
    return text[:end]


# -- errors ------------------------------------------------------------------------------------
def error_detail(resp: httpx.Response) -> tuple[str, str]:
    """(message, code) from any error body servers send: OpenAI's and new vLLM's
    ``{"error": {"message", "code"}}``, old vLLM's flat ``{"object": "error", "message"}``,
    Ollama's ``{"error": "text"}``, FastAPI's ``{"detail": ...}``, plain text, a proxy's HTML."""
    try:
        body = resp.json()
    except ValueError:
        text = resp.text.strip()
        if text[:200].lower().lstrip().startswith(("<!doctype", "<html")):
            return ("an HTML page answered, not the model server (a proxy or gateway in the "
                    "way?)", "")
        return text[:300], ""
    message, code = "", ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            message = str(err.get("message") or "")
            code = str(err.get("code") or err.get("type") or "")
        elif isinstance(err, str):
            message = err
        if not message and body.get("message"):
            message = str(body["message"])
            code = code or str(body.get("code") or body.get("type") or "")
        if not message and "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)[:300]
    if not message:
        message = json.dumps(body)[:300]
    return message.strip()[:500], code


def status_error(name: str, url: str, resp: httpx.Response, wait: float | None) -> ModelError:
    """The keel error for an HTTP error answer, with a message that says what to do."""
    status = resp.status_code
    detail, code = error_detail(resp)
    msg = f"{name}: HTTP {status}" + (f": {detail}" if detail else "")
    low = f"{detail} {code}".lower()
    if status == 429:
        if "insufficient_quota" in low or "exceeded your current quota" in low:
            return NonRetryableModelError(f"{msg} (the account's quota is spent: check its plan "
                                          "and billing; retrying will not help)")
        if "request too large" in low or "must be reduced" in low:
            return NonRetryableModelError(f"{msg} (one request is over the tokens-per-minute "
                                          "limit: shorten the prompt or raise the limit)")
        return RateLimited(msg, retry_after_s=wait)
    if status == 408:
        return ModelTimeout(msg)
    if status >= 500:
        return ModelUnavailable(msg, retry_after_s=wait)
    if status in (401, 403):
        return NonRetryableModelError(f"{msg} (the server refused the API key: set "
                                      "OPENAI_API_KEY or pass api_key=)")
    if status == 404:
        return NonRetryableModelError(
            f"{msg} (nothing answers POST {url}: check the model name and base_url; "
            "OpenAI-compatible servers serve /v1/chat/completions, e.g. "
            "base_url='http://localhost:8000/v1')")
    if status == 413:
        return NonRetryableModelError(f"{msg} (payload too large: shorten the prompt or input)")
    return NonRetryableModelError(msg)


# -- the base URL ------------------------------------------------------------------------------
def normalize_base_url(url: str) -> str:
    """A base URL as people paste it, made into the one the server serves: a bare host gets
    ``/v1`` (OpenAI, vLLM, Ollama and LiteLLM all serve it there), a full endpoint loses its
    ``/chat/completions``, a trailing slash goes. Anything else is kept as given."""
    raw = url.strip()
    if not re.match(r"^https?://", raw, re.I):
        raise ConfigError(f"base_url {url!r} must start with http:// or https:// "
                          "(e.g. http://localhost:11434/v1 for Ollama)")
    try:
        parsed = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ConfigError(f"base_url {url!r} is not a URL: {exc}") from exc
    if not parsed.host:
        raise ConfigError(f"base_url {url!r} names no host")
    path = parsed.path.rstrip("/")
    for tail in ("/chat/completions", "/completions"):
        if path.endswith(tail):
            path = path[: -len(tail)]
    if not path:
        path = "/v1"
    return str(parsed.copy_with(path=path, query=None, fragment=None)).rstrip("/")
