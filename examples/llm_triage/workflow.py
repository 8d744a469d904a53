"""An LLM workflow: a banking support message to one of twelve intents, by a chat model.

Point it at any OpenAI-compatible endpoint (OpenAI, vLLM, Ollama, a LiteLLM proxy):

    KEEL_LLM_BASE_URL=https://api.openai.com/v1 OPENAI_API_KEY=sk-... KEEL_LLM_MODEL=gpt-4o-mini \
        keel run examples/llm_triage/workflow.py examples/llm_triage/data/traffic.csv

Without KEEL_LLM_BASE_URL it starts a simulated LLM on 127.0.0.1 (simulated_llm.py beside
this file: deterministic, with an LLM's error pattern, no logprobs), so the example runs
anywhere. The model sends no log-probabilities, so confidence comes from self-consistency:
five samples at temperature 0.7, and the share that agree. `keel calibrate` turns that
share into a threshold with a guarantee; the rest goes to the keyword rules, then to a person.
"""

import os
from typing import Literal

from pydantic import BaseModel, Field

import keel

Intent = Literal["card_arrival", "card_delivery_estimate", "lost_or_stolen_card", "compromised_card",
                 "exchange_rate", "exchange_charge", "transfer_not_received_by_recipient",
                 "pending_transfer", "request_refund", "Refund_not_showing_up", "change_pin",
                 "pin_blocked"]


class Ticket(BaseModel):
    id: str
    text: str = Field(min_length=1, max_length=2000)


class Triage(BaseModel):
    intent: Intent


def _endpoint() -> str:
    url = os.environ.get("KEEL_LLM_BASE_URL")
    if url:
        return url
    import simulated_llm  # beside this file: keel puts the workflow's folder on the path

    return simulated_llm.serve()[0]


PROMPT = ("Which of these banking intents is the customer's message about? "
          "card_arrival, card_delivery_estimate, lost_or_stolen_card, compromised_card, "
          "exchange_rate, exchange_charge, transfer_not_received_by_recipient, pending_transfer, "
          "request_refund, Refund_not_showing_up, change_pin, pin_blocked.\n\n"
          "Message: {text}")

llm = keel.OpenAIModel(
    os.environ.get("KEEL_LLM_MODEL", "gpt-4o-mini"),
    prompt=PROMPT,
    system="You route customer messages for a bank's support team.",
    base_url=_endpoint(),
    api_key=os.environ.get("KEEL_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY") or "sk-none",
    confidence=keel.SelfConsistency(samples=5, temperature=0.7),
    resilience=keel.Resilience(
        retry=keel.RetryPolicy(max_attempts=4, deadline_s=60),
        timeout_s=30,
        breaker=keel.BreakerPolicy(reset_timeout_s=30),
        limits=keel.RateLimits(max_concurrency=8),
    ),
)

RULES = {"pin": "change_pin", "stolen": "lost_or_stolen_card", "exchange rate": "exchange_rate"}


def keyword_rules(ticket: Ticket) -> dict[str, str] | None:
    """The rules the team used before the LLM: a few unambiguous keywords, else no answer."""
    text = ticket.text.lower()
    return next(({"intent": intent} for word, intent in RULES.items() if word in text), None)


workflow = keel.Workflow(
    name="llm_triage", input=Ticket, output=Triage, key="id", model=llm,
    fallback=keyword_rules,
    policy=keel.Policy(threshold=0.8, audit_rate=0.02, on_model_failure="review"),
    owners=keel.Owners(business="support-lead@example.com", support="ml@example.com"),
)
