"""Monitor-only: watch the messages and answers of a support router keel does not run.

The team's router (any system, any model) logs each message with the category it chose.
keel profiles a period the team trusts (here Banking77's training split) and compares later
logs with it: drift in the messages, new kinds of questions, a changed category mix. Nothing
is decided, routed or stored by keel but the reference profile.

    keel drift reference examples/watch_banking/watch.py --from examples/support_triage/data/train.csv
    keel drift report examples/watch_banking/watch.py --from examples/support_triage/data/test.csv
"""

from pydantic import BaseModel

import keel


class Message(BaseModel):
    id: str | None = None  # the training split has no ids: its rows are named by line
    text: str


class Routed(BaseModel):
    category: str  # the answer the team's own system gave


watch = keel.Watch(name="bank_router", input=Message, output=Routed, key="id")
