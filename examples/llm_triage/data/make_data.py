"""How this folder's files were made from the support_triage example's Banking77 copy.

Run from the repository root: python examples/llm_triage/data/make_data.py
Six pairs of intents a reader (or a model) can confuse; every message of those intents in
Banking77's train and test splits, shuffled (seed 19), 1,000 labelled for calibration, 600 as
traffic (labels kept apart in traffic_labels.csv), the rest left out.
"""

import csv
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parents[1] / "support_triage" / "data"
PAIRS = [("card_arrival", "card_delivery_estimate"), ("lost_or_stolen_card", "compromised_card"),
         ("exchange_rate", "exchange_charge"), ("transfer_not_received_by_recipient", "pending_transfer"),
         ("request_refund", "Refund_not_showing_up"), ("change_pin", "pin_blocked")]
INTENTS = [i for pair in PAIRS for i in pair]

rows = [r for name in ("train.csv", "test.csv") for r in csv.DictReader((SOURCE / name).open())
        if r["category"] in INTENTS]
rows.sort(key=lambda r: (r["category"], r["text"]))
random.Random(19).shuffle(rows)
for n, r in enumerate(rows, 1):
    r["id"] = f"t-{n:05d}"


def write(name: str, part: list[dict[str, str]], cols: list[str]) -> None:
    with (HERE / name).open("w", newline="") as fh:
        w = csv.DictWriter(fh, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(part)


write("labelled.csv", rows[:1000], ["id", "text", "category"])
write("traffic.csv", rows[1000:1600], ["id", "text"])
write("traffic_labels.csv", rows[1000:1600], ["id", "category"])
