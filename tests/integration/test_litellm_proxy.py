"""keel.OpenAIModel against a real OpenAI-compatible server written by others: LiteLLM's proxy
(tests/integration/litellm/: exact version with hashes, its own venv, loopback, no upstream).
Its request parsing, per-family parameter checks, error bodies and response serialisation sit
between keel and a deterministic backend (the llm_triage example's simulated LLM).

The proxy comes from KEEL_LITELLM_URL (CI starts it early: .ci/run), else these tests start it
from the venv `.ci/litellm install` makes. Without either they are skipped, saying so; with
KEEL_REQUIRE_LITELLM=1 (CI) they fail instead.
"""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel
from tests._workflows import write_csv
from tests.conftest import counts_balance

import keel
from keel.models import price_for
from keel.review import calibrate

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent / "litellm"
EXAMPLE = ROOT / "examples" / "llm_triage"
KEY = "sk-keel-test"

pytestmark = [pytest.mark.slow, pytest.mark.litellm]


def _unavailable(why: str) -> None:
    if os.environ.get("KEEL_REQUIRE_LITELLM") == "1":
        pytest.fail(f"the LiteLLM proxy is required (KEEL_REQUIRE_LITELLM=1): {why}")
    pytest.skip(f"LiteLLM proxy not available: {why}; run `.ci/litellm install` (CI does)")


def _ready(url: str, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            if httpx.get(url.removesuffix("/v1") + "/health/liveliness", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def proxy() -> Iterator[str]:
    url = os.environ.get("KEEL_LITELLM_URL")
    if url:
        if not _ready(url, 180):
            _unavailable(f"nothing answers at {url}")
        yield url
        return
    venv = Path(subprocess.run([str(ROOT / ".ci" / "litellm"), "venv"], capture_output=True,
                               text=True, check=True).stdout.strip())
    if not (venv / ".installed").exists():
        _unavailable(f"no LiteLLM venv at {venv}")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PYTHONDONTWRITEBYTECODE")}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
    log = Path(tempfile.gettempdir()) / f"keel-litellm-{port}.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(venv / "bin" / "litellm"), "--config", str(HERE / "config.yaml"),
                                 "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
                                cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        if not _ready(url, 180):
            _unavailable(f"it did not start within 180 s (see {log})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def llm(url: str, model: str, **kw: Any) -> keel.OpenAIModel:
    kw.setdefault("resilience", keel.Resilience(
        retry=keel.RetryPolicy(max_attempts=3, base_delay_s=0.01), timeout_s=30,
        limits=keel.RateLimits(max_concurrency=8)))
    return keel.OpenAIModel(model, prompt="Message: {text}", base_url=url, api_key=KEY, **kw)


class Triage(BaseModel):
    intent: str


def _ask(model: keel.OpenAIModel, text: str = "I still have not received my new card") -> Any:
    from tests._workflows import Msg

    (out,) = model.predict([Msg(id="1", text=text)])
    return out


@pytest.mark.parametrize("name", ["o4-mini", "gpt-5-mini"])
def test_reasoning_model_requests_pass_litellms_parameter_checks(proxy: str, name: str) -> None:
    out = _ask(llm(proxy, name, output=Triage))
    assert isinstance(out, keel.Prediction), out
    assert out.output == {"intent": "card_arrival"}
    # what keel sent before it knew model families: LiteLLM refuses it, and keel says why
    old = _ask(llm(proxy, name, output=Triage, extra_body={"temperature": 0.0, "logprobs": True}))
    assert isinstance(old, keel.NonRetryableModelError)
    assert "HTTP 400" in old.message and "UnsupportedParamsError" in old.message


def test_a_chat_model_is_priced_from_the_table(proxy: str) -> None:
    out = _ask(llm(proxy, "gpt-4o-mini", output=Triage))
    assert isinstance(out, keel.Prediction)
    u = out.usage
    assert (u.input_tokens, u.output_tokens) == (10, 20)  # LiteLLM's mock usage
    assert u.cost_usd == pytest.approx(price_for("gpt-4o-mini").cost_usd(10, 20))  # type: ignore[union-attr]
    assert out.confidence == 0.0  # no logprobs from this server: Logprobs' default


def test_logprobs_pass_through_the_proxy(proxy: str) -> None:
    out = _ask(llm(proxy, "triage-sim-logprobs", output=Triage, price_per_mtok=(0.15, 0.6)))
    assert isinstance(out, keel.Prediction) and 0.0 < out.confidence < 1.0


def test_errors_through_the_proxy_are_retried_or_explained(proxy: str) -> None:
    from tests._workflows import Msg

    from keel.resilience import build_caller

    caller = build_caller(llm(proxy, "triage-sim", output=Triage, price_per_mtok=(0.15, 0.6)))
    texts = {"keel.model.rate_limited": f"rate-limit {time.time()}",
             "keel.model.unavailable": f"server-error {time.time()}"}
    for code, text in texts.items():
        (res,) = caller([Msg(id="1", text=text)])
        assert isinstance(res.outcome, keel.Prediction)  # retried into an answer
        assert [a.code for a in res.attempts] == [code, None]
        assert "(mock)" in (res.attempts[0].error or "")  # LiteLLM's message, not a bare status
    caller.loop.close()
    wrong = _ask(llm(proxy, "no-such-model", output=Triage))
    assert isinstance(wrong, keel.NonRetryableModelError)
    assert "HTTP 400" in wrong.message and "Invalid model name" in wrong.message


def _example(monkeypatch: pytest.MonkeyPatch, proxy: str | None,
             confidence: Any = None) -> keel.Workflow:
    if proxy:
        monkeypatch.setenv("KEEL_LLM_BASE_URL", proxy)
        monkeypatch.setenv("KEEL_LLM_MODEL", "triage-sim")
        monkeypatch.setenv("KEEL_LLM_API_KEY", KEY)
    else:
        monkeypatch.delenv("KEEL_LLM_BASE_URL", raising=False)
    wf = keel.load_workflow(EXAMPLE / "workflow.py")
    if confidence is not None:
        import dataclasses

        m = wf.model
        assert isinstance(m, keel.OpenAIModel)
        wf = dataclasses.replace(wf, model=keel.OpenAIModel(
            m.model, prompt=m.prompt, system=m.system, base_url=m.base_url, api_key=KEY,
            confidence=confidence, resilience=m.resilience, price_per_mtok=(0.15, 0.6)))
    return wf


def test_the_example_runs_through_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            proxy: str) -> None:
    wf = _example(monkeypatch, proxy)
    with (EXAMPLE / "data" / "traffic.csv").open() as fh:
        rows = [(r["id"], r["text"]) for r in list(csv.DictReader(fh))[:60]]
    store = keel.Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    s = keel.run(wf, write_csv(tmp_path / "t.csv", rows), store=store)
    assert counts_balance(s) and s.counts["accepted"] > 0 and s.counts["in_review"] > 0
    (rec,) = keel.trace(rows[0][0], store=store)
    votes = rec["predictions"][0]["metadata"]["confidence"]["votes"]
    assert sum(n for _answer, n in votes) == 5  # five samples, as n=5, through the proxy
    assert s.cost_unknown == 60  # "triage-sim" has no price in any table: unknown, not $0
    store.close()


def test_calibration_through_the_proxy_matches_the_simulation_served_directly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, proxy: str) -> None:
    """Self-consistency certifies a threshold through a real server, with the very numbers the
    simulated LLM gives when keel talks to it directly; confidence 0 certifies nothing."""
    labels = EXAMPLE / "data" / "labelled.csv"
    store = keel.Store.open(f"sqlite:///{tmp_path / 'keel.db'}")
    via_proxy = calibrate(_example(monkeypatch, proxy, keel.SelfConsistency(5, 0.7)), store,
                          labels_file=labels, label_column="category", target_accuracy=0.95,
                          activate=False)
    direct = calibrate(_example(monkeypatch, None, keel.SelfConsistency(5, 0.7)), store,
                       labels_file=labels, label_column="category", target_accuracy=0.95,
                       activate=False)
    assert via_proxy.threshold is not None and via_proxy.coverage > 0.5
    assert (via_proxy.threshold, via_proxy.coverage, via_proxy.errors) == \
        (direct.threshold, direct.coverage, direct.errors)
    with pytest.raises(keel.errors.CalibrationError):
        calibrate(_example(monkeypatch, proxy, keel.Logprobs()), store, labels_file=labels,
                  label_column="category", target_accuracy=0.95, activate=False)
    store.close()
