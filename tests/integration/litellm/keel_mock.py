"""The LiteLLM proxy's backend in keel's tests (custom_provider_map): the llm_triage example's
simulated LLM, so the proxy's real request parsing, parameter checks, error mapping and
response serialisation sit between keel and a deterministic model.

Runs inside the proxy's own venv (never imported by keel or pytest). A user message holding
"rate-limit" or "server-error" gets a 429 or a 503 on its first call (once per text), to see
retries through the proxy's error bodies.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any

from litellm import CustomLLM
from litellm.llms.custom_llm import CustomLLMError
from litellm.types.utils import ModelResponse

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples" / "llm_triage"))

import simulated_llm

PLAIN = simulated_llm.SimulatedLLM()
WITH_LOGPROBS = simulated_llm.SimulatedLLM(logprobs=True)
_failed: set[str] = set()
_lock = threading.Lock()


class KeelMock(CustomLLM):
    def _answer(self, model: str, messages: list[dict[str, Any]], params: dict[str, Any]) -> ModelResponse:
        user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        for marker, status in (("rate-limit", 429), ("server-error", 503)):
            if marker in user:
                with _lock:
                    first = user not in _failed
                    _failed.add(user)
                if first:
                    raise CustomLLMError(status_code=status, message=f"{marker} (mock)")
        sim = WITH_LOGPROBS if model.endswith("logprobs") else PLAIN
        wire = ("n", "temperature", "logprobs", "response_format")
        body = {"model": model, "messages": messages, **{k: v for k, v in params.items() if k in wire}}
        return ModelResponse(**sim.complete(body))

    def completion(self, model, messages, api_base, custom_prompt_dict, model_response,  # type: ignore[no-untyped-def]
                   print_verbose, encoding, api_key, logging_obj, optional_params, *args, **kw):
        return self._answer(model, messages, optional_params)

    async def acompletion(self, model, messages, api_base, custom_prompt_dict, model_response,  # type: ignore[no-untyped-def]
                          print_verbose, encoding, api_key, logging_obj, optional_params, *args, **kw):
        return self._answer(model, messages, optional_params)


keel_mock = KeelMock()
