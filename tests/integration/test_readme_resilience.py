"""Docs run: the README's "When the model fails" example, against loopback servers standing in
for the LLM endpoint and the webhook receiver."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tests._fake_llm import completion
from tests._loopback import Reply, Request, serve

ROOT = Path(__file__).resolve().parents[2]


def _example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## When the model fails", 1)[1]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]


def llm(req: Request) -> Reply:
    text = req.json()["messages"][1]["content"]
    if "flaky" in text and not hasattr(llm, "flaked"):
        llm.flaked = True  # type: ignore[attr-defined]
        return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
    if "gibberish" in text:
        return Reply(200, completion('{"intent": 42}'))
    return Reply(200, completion('{"intent": "card_arrival"}'))


@pytest.mark.slow
def test_readme_llm_example_runs_with_a_webhook(tmp_path: Path) -> None:
    (tmp_path / "workflow.py").write_text(_example())
    (tmp_path / "tickets.csv").write_text(
        "id,text\nt1,my card has not arrived\nt2,flaky network today\n"
        "t3,gibberish about my card\nt4,gibberish only\n")
    received: list[Request] = []

    def receiver(req: Request) -> Reply:
        received.append(req)
        return Reply(200, {"ok": True})

    with serve(llm) as (llm_url, llm_seen), serve(receiver) as (hook_url, _):
        env = {**os.environ, "OPENAI_BASE_URL": llm_url, "OPENAI_API_KEY": "sk-test"}
        run = subprocess.run(
            [sys.executable, "-m", "keel", "run", "workflow.py", "tickets.csv",
             "--webhook", hook_url, "--json"],
            cwd=tmp_path, env=env, text=True, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr
    s = json.loads(run.stdout)
    # t1, t2 (after a 429) answered by the LLM; t3's answer broke the contract twice and the
    # rules took it; t4 too, but the rules had no answer either: a person decides
    assert s["dispositions"]["accepted"] == 2
    assert s["dispositions"]["fallback"] == 1
    assert s["dispositions"]["in_review"] == 1 and s["review_reasons"] == {"model_failed": 1}
    assert s["delivered"] == 4 and len(received) == 4
    assert len(llm_seen) == 1 + 2 + 2 + 2  # t1; t2 retried once; t3, t4 asked and re-asked
    assert s["cost_usd"] > 0
    deliveries = subprocess.run([sys.executable, "-m", "keel", "deliveries", "--json"],
                                cwd=tmp_path, text=True, capture_output=True, timeout=120)
    assert deliveries.returncode == 0
    assert {d["status"] for d in json.loads(deliveries.stdout)} == {"delivered"}
