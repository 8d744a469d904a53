"""LLM confidence without logprobs: what each strategy automates at a guaranteed accuracy, and
what it costs per decision.

    python bench/llm_confidence.py [--target 0.95] [--strategies none,logprobs,sc3,sc5,sc10,judge,judge3]

On examples/llm_triage (twelve Banking77 intents in six confusable pairs) against its
simulated LLM (deterministic; an LLM's error pattern: easy, medium and hard messages, and 4%
it gets wrong with conviction), priced as gpt-4o-mini from the maintained table. For each
confidence strategy: `keel calibrate` on the 1,000 labelled messages (target accuracy, delta
0.05, binomial Learn-then-Test), then `keel run` on the 600 traffic messages under the
certified threshold, their labels read only to measure the realized accuracy of what was
automated. Without logprobs (what the simulated server sends, like most proxies to hosted
models and every reasoning model) the default confidence is 0 and nothing can be certified.

Prints one JSON line per strategy.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "llm_triage"
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(EXAMPLE))

import simulated_llm  # noqa: E402

import keel  # noqa: E402
from keel.errors import CalibrationError  # noqa: E402
from keel.review import calibrate  # noqa: E402
from keel.store import Store, realized_accuracy  # noqa: E402

STRATEGIES: dict[str, Any] = {
    "none": keel.Logprobs(),  # the server sends no logprobs: confidence 0
    "logprobs": keel.Logprobs(),  # the same simulated model, from a server that sends them
    "sc3": keel.SelfConsistency(samples=3, temperature=0.7),
    "sc5": keel.SelfConsistency(samples=5, temperature=0.7),
    "sc10": keel.SelfConsistency(samples=10, temperature=0.7),
    "judge": keel.Judge(),
    "judge3": keel.Judge(samples=3),
}


def measure(name: str, base: keel.Workflow, url: str, target: float) -> dict[str, Any]:
    model = base.model
    assert isinstance(model, keel.OpenAIModel)
    llm = keel.OpenAIModel(model.model, prompt=model.prompt, system=model.system, base_url=url,
                           api_key="sk-none", confidence=STRATEGIES[name],
                           resilience=model.resilience)
    wf = dataclasses.replace(base, model=llm)
    out: dict[str, Any] = {"strategy": name, "confidence": llm.confidence.describe(),
                           "target_accuracy": target}
    with tempfile.TemporaryDirectory() as tmp:
        store = Store.open(f"sqlite:///{tmp}/keel.db")
        t0 = time.perf_counter()
        try:
            res = calibrate(wf, store, labels_file=EXAMPLE / "data" / "labelled.csv",
                            label_column="category", target_accuracy=target)
            out.update(threshold=res.threshold, coverage_labelled=round(res.coverage, 4),
                       accuracy_bound=round(res.accuracy_bound, 4),
                       calibration_cost_usd=round(res.cost_usd, 6))
        except CalibrationError as exc:  # traffic then runs under the declared threshold
            out.update(threshold=None, refused=str(exc)[:160],
                       policy=f"declared threshold {wf.policy.threshold} (nothing certified)")
        out["calibrate_s"] = round(time.perf_counter() - t0, 2)
        s = keel.run(wf, EXAMPLE / "data" / "traffic.csv", store=store)
        with (EXAMPLE / "data" / "traffic_labels.csv").open() as fh:
            truth = {r["id"]: r["category"] for r in csv.DictReader(fh)}
        real = realized_accuracy(store, wf.name, truth, field="intent")
        out.update(traffic=s.read, accepted=s.counts["accepted"], in_review=s.counts["in_review"],
                   automated_share=round(s.counts["accepted"] / s.read, 4),
                   accuracy_automated=real["accuracy_automated"] and round(real["accuracy_automated"], 4),
                   cost_per_decision_usd=round(s.cost_usd / s.read, 8))
        store.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    args = ap.parse_args()
    base = keel.load_workflow(EXAMPLE / "workflow.py")  # starts the simulated LLM (no logprobs)
    plain_url = base.model.base_url  # type: ignore[attr-defined]
    with_logprobs, server = simulated_llm.serve(logprobs=True)
    single = None
    for name in args.strategies.split(","):
        row = measure(name, base, with_logprobs if name == "logprobs" else plain_url, args.target)
        if name in ("none", "logprobs"):
            single = single or row["cost_per_decision_usd"]
        if single:
            row["extra_cost_per_decision_usd"] = round(row["cost_per_decision_usd"] - single, 8)
            row["cost_ratio"] = round(row["cost_per_decision_usd"] / single, 2)
        print(json.dumps(row), flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
