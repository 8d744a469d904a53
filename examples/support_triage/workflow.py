"""support_triage: route Banking77 customer messages to one of 77 intents.

Run it:  keel run examples/support_triage/workflow.py examples/support_triage/data/test.csv
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from triage_model import (
    INTENTS,
    artifact_path,
    keyword_rules,
    load_or_train,
    retrain_with,
    training_data_hash,
)

import keel


class Ticket(BaseModel):
    id: str = Field(min_length=1, max_length=200)
    text: str = Field(min_length=1, max_length=5000)


class Triage(BaseModel):
    intent: str


def train(labels: list[dict]) -> keel.Model:
    """`keel retrain`: the same model fitted on the train split plus the reviewed labels."""
    estimator, data_hash = retrain_with(labels)
    return keel.SklearnModel(estimator, features="text", output="intent", name="tfidf-svm",
                             training_data_hash=data_hash, artifact=artifact_path(data_hash))


workflow = keel.Workflow(
    name="support_triage",
    description="Route a customer's message to the team that handles its intent.",
    input=Ticket,
    output=Triage,
    key="id",
    input_checks=[
        keel.check("text is not blank", lambda t: t.text.strip() != "", field="text",
                   message="text is only whitespace; send the customer's message"),
    ],
    output_checks=[
        keel.check("known intent", lambda o: o.intent in INTENTS, field="intent",
                   message="intent is not one of the 77 Banking77 intents"),
    ],
    model=keel.SklearnModel(load_or_train, features="text", output="intent",
                            name="tfidf-svm", training_data_hash=training_data_hash(),
                            artifact=artifact_path),
    fallback=keel.Rules(keyword_rules),
    train=train,
    policy=keel.Policy(threshold=0.9, audit_rate=0.02),
    # After `keel drift reference workflow.py --from data/train.csv`, messages unlike the
    # training data go to review as out_of_distribution, whatever the model's confidence.
    monitor=keel.DriftMonitor(),
    owners=keel.Owners(business="head-of-support@example.com",
                       support="ml-platform@example.com"),
    # What it costs (`keel cost workflow.py --project 50000/day`, `--thresholds`): the model
    # is free per call (serving it is the infrastructure line), a reviewer's hour and handling
    # time until reviews are measured, a misrouted ticket, and routing a ticket by hand.
    cost=keel.Cost(
        prices=[keel.ModelPrice("tfidf-svm")],
        reviewer_usd_per_hour=40.0, review_s_per_task=45.0,
        wrong_decision_usd=2.50, manual_handling_s=60.0, value_per_record_usd=0.70,
        infra_usd_per_month=150.0, retrain_usd_per_run=5.0, retrains_per_month=4,
        labels="data/calibration.csv", label_column="category",
        target_volume="50000/day",  # what the dashboard projects to
    ),
)
