"""A simulated LLM behind an OpenAI-compatible endpoint, for the example and keel's tests.

It is not a language model: it knows each example message's true intent (from data/) and
answers the way LLM classifiers err, deterministically (a hash of the message and the sample
number decides every draw), so a run is repeatable:

- 55% of messages are easy (answered right 97% of the time when sampled), 21% medium (80%),
  22% hard (60% or 40%, else mostly the confusable sister intent), and 2% it gets wrong with
  conviction (the sister intent 85% of the time): agreement among samples cannot catch
  those, as in life. Its most likely answers are right for 87% of the labelled messages;
- at temperature 0 it gives its most likely answer; at a temperature it samples (sharper
  below 1); ``n`` samples come back as ``n`` choices;
- log-probabilities only when asked and ``logprobs=True`` here (most hosted models behind
  proxies send none: the default);
- a judge request (the schema named ``Verdict``) is answered like a lenient judge: right
  answers are called correct 95% of the time, wrong ones 30% (80% for its own blind spots);
- usage counts tokens as about four characters each.

Only the standard library: the LiteLLM proxy's custom handler in keel's tests imports it too.
``python simulated_llm.py [PORT]`` serves it on 127.0.0.1 until stopped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DATA = Path(__file__).resolve().parent / "data"
PAIRS = [("card_arrival", "card_delivery_estimate"), ("lost_or_stolen_card", "compromised_card"),
         ("exchange_rate", "exchange_charge"), ("transfer_not_received_by_recipient", "pending_transfer"),
         ("request_refund", "Refund_not_showing_up"), ("change_pin", "pin_blocked")]
INTENTS = [i for pair in PAIRS for i in pair]
SISTER = {a: b for a, b in PAIRS} | {b: a for a, b in PAIRS}
#: (share of messages, probability of the right intent) per kind of message
PROFILE = [(0.55, 0.97), (0.21, 0.80), (0.10, 0.60), (0.12, 0.40), (0.02, 0.15)]
MARKER = "Message:"


def _u(*parts: Any) -> float:
    """A uniform number in [0, 1) from a hash of the parts (the simulation's only dice)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _norm(text: str) -> str:
    return " ".join(text.split()).lower()


class SimulatedLLM:
    def __init__(self, data: Path = DATA, logprobs: bool = False) -> None:
        self.truth: dict[str, str] = {}
        held_back = {r["id"]: r["category"] for r in _rows(data / "traffic_labels.csv")}
        for name in ("labelled.csv", "traffic.csv"):
            for row in _rows(data / name):
                self.truth[_norm(row["text"])] = row.get("category") or held_back[row["id"]]
        self.logprobs = logprobs

    # -- the model's beliefs ---------------------------------------------------------------------
    def belief(self, text: str) -> tuple[str, float, str]:
        """(right intent, probability of answering it, the usual wrong answer)."""
        key = _norm(text)
        right = self.truth.get(key) or next((i for i in INTENTS if i.split("_")[0] in key), INTENTS[0])
        u, edge = _u("kind", key), 0.0
        for share, p in PROFILE:
            edge += share
            if u < edge:
                return right, p, SISTER[right]
        return right, PROFILE[-1][1], SISTER[right]

    def answer(self, text: str, sample: int, temperature: float) -> tuple[str, float]:
        """One answer and its probability under the model."""
        right, p, sister = self.belief(text)
        if temperature <= 0:
            return (right, p) if p >= 0.5 else (sister, 1 - p)
        a, b = p ** (1 / temperature), (1 - p) ** (1 / temperature)
        p_t = a / (a + b)
        draw = _u("sample", _norm(text), sample, temperature)
        if draw < p_t:
            return right, p_t
        if _u("stray", _norm(text), sample) < 0.9:
            return sister, 1 - p_t
        return INTENTS[int(_u("other", _norm(text), sample) * len(INTENTS))], (1 - p_t) / 10

    def verdict(self, text: str, answer: str, sample: int, temperature: float) -> tuple[bool, float]:
        right, p, _ = self.belief(text)
        q = 0.95 if answer == right else (0.8 if p < 0.5 else 0.3)  # P(says "correct")
        if temperature <= 0:
            return q >= 0.5, max(q, 1 - q)
        says = _u("judge", _norm(text), answer, sample) < q
        return says, q if says else 1 - q

    # -- the wire --------------------------------------------------------------------------------
    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        messages = body.get("messages") or []
        user = next((str(m.get("content") or "") for m in reversed(messages) if m.get("role") == "user"), "")
        n = int(body.get("n") or 1)
        temperature = float(body.get("temperature", 1.0) if body.get("temperature") is not None else 1.0)
        fmt = (body.get("response_format") or {}).get("json_schema") or {}
        judge = fmt.get("name") == "Verdict"
        choices = []
        for i in range(n):
            seed = i + 1000 * len(messages)  # a re-ask draws afresh
            if judge:
                text, said = _judged(user)
                ok, prob = self.verdict(text, said, seed, temperature)
                content, token = json.dumps({"correct": ok}), json.dumps(ok)
            else:
                text = user.rsplit(MARKER, 1)[-1].strip()
                label, prob = self.answer(text, seed, temperature)
                content, token = json.dumps({"intent": label}), label
            choice: dict[str, Any] = {"index": i, "finish_reason": "stop",
                                      "message": {"role": "assistant", "content": content}}
            if body.get("logprobs") and self.logprobs:
                choice["logprobs"] = {"content": [  # as OpenAI sends them
                    {"token": t, "logprob": lp, "bytes": list(t.encode()), "top_logprobs": []}
                    for t, lp in (('{"', -0.0001), (token, math.log(prob)), ('"}', -0.0001))]}
            choices.append(choice)
        prompt_tokens = sum(len(str(m.get("content") or "")) for m in messages) // 4 + 4 * len(messages)
        completion_tokens = sum(len(c["message"]["content"]) // 4 + 1 for c in choices)
        return {"id": f"chatcmpl-sim-{int(_u(user) * 1e12)}", "object": "chat.completion",
                "created": int(time.time()), "model": body.get("model", "simulated"),
                "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}


def _judged(user: str) -> tuple[str, str]:
    """The message and the proposed intent from keel's judge prompt (input and answer as JSON)."""
    found = re.search(r"input:\s*(\{.*?\})\s*It answered:\s*(\{.*?\})", user, re.S)
    if not found:
        return user, ""
    return str(json.loads(found.group(1)).get("text", "")), str(json.loads(found.group(2)).get("intent", ""))


def serve(port: int = 0, logprobs: bool = False) -> tuple[str, ThreadingHTTPServer]:
    """Serve on 127.0.0.1 from a daemon thread; returns (base URL, server)."""
    llm = SimulatedLLM(logprobs=logprobs)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, {"object": "list", "data": [{"id": "simulated", "object": "model"}]})

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
                return
            self._send(200, llm.complete(body))

    class Server(ThreadingHTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/v1", server


if __name__ == "__main__":
    url, srv = serve(int(sys.argv[1]) if len(sys.argv) > 1 else 8099)
    print(f"simulated LLM at {url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        srv.shutdown()
