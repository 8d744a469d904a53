"""The workflow the bench scripts run: a ticket's text in, one intent out.

Each bench writes it to a file with its own name, model, policy and extra settings; what is
the same (the contracts and the owners) is written once, here.
"""

from __future__ import annotations

#: a model that answers at once, always the same intent, always sure
NOOP_MODEL = 'keel.FakeModel({"intent": "card_arrival"}, confidence=0.99)'


def ticket_workflow(name: str, model: str = NOOP_MODEL,
                    policy: str = "keel.Policy(threshold=0.5, audit_rate=0.0)",
                    extra: str = "", before: str = "") -> str:
    """The text of a workflow.py: ``model``, ``policy`` and ``extra`` (more ``Workflow``
    arguments, each ending in a comma) are Python source; ``before`` goes above the
    declaration (a model function and its imports)."""
    return f'''
from pydantic import BaseModel
import keel

class Ticket(BaseModel):
    id: str
    text: str

class Triage(BaseModel):
    intent: str
{before}
workflow = keel.Workflow(
    name={name!r}, input=Ticket, output=Triage, key="id",
    model={model},
    policy={policy},
    owners=keel.Owners(business="bench", support="bench"),
    {extra}
)
'''
