"""The webhook sink: POST each decision as JSON with an Idempotency-Key.

Delivery is at least once, with an exactly-once effect for a receiver that drops a key it has
seen: each decision is owed to the sink from the transaction that decides it (the outbox), and
marked delivered once the receiver answered 2xx, every ``commit_every`` POSTs. A crash in
between sends those again, with the same key (a hash of the decision line). Each POST carries
``Content-Digest`` (RFC 9530, sha-256 of the body): a receiver can refuse a body cut short by
a crash mid-send.

Failed posts are retried in rounds with exponential backoff (honouring Retry-After, capped);
a delivery still failing after ``max_attempts`` (or refused with a 4xx that retrying cannot
fix) becomes a dead letter: ``keel deliveries --failed`` lists it, ``keel deliveries retry``
sends it again.
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from keel import _json
from keel._http import retry_after
from keel.deliver._sinks import Written
from keel.errors import UserError
from keel.resilience import RetryPolicy

_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}


def idempotency_key(line: dict[str, Any]) -> str:
    return hashlib.sha256(_json.dumpb(line)).hexdigest()[:40]


def content_digest(body: bytes) -> str:
    """The ``Content-Digest`` header value for ``body`` (RFC 9530)."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


@dataclass(frozen=True, slots=True)
class _Result:
    ok: bool
    retryable: bool
    error: str = ""
    retry_after_s: float | None = None


class WebhookSink:
    #: POSTs recorded as delivered together: what a crash can make the receiver see twice
    commit_every = 32

    def __init__(self, url: str, *, max_attempts: int = 5, base_delay_s: float = 0.2,
                 max_delay_s: float = 5.0, timeout_s: float = 10.0, concurrency: int = 8,
                 headers: dict[str, str] | None = None, seed: int | None = None) -> None:
        if not url.startswith(("http://", "https://")):
            raise UserError(f"--webhook {url!r}: give an http:// or https:// URL")
        if max_attempts < 1:
            raise UserError("webhook max_attempts must be at least 1")
        self.url = url
        self.name = f"webhook:{url}"
        #: the same backoff as a model call's retries (keel.resilience.RetryPolicy)
        self.retry = RetryPolicy(max_attempts=max_attempts, base_delay_s=base_delay_s,
                                 max_delay_s=max_delay_s, seed=seed)
        self.max_attempts = max_attempts
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self.headers = dict(headers or {})
        self.rng = random.Random(seed)
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None

    def open(self, committed_offset: int) -> None:
        self._client = httpx.Client(timeout=self.timeout_s, headers=self.headers)
        self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="keel-webhook")

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def _post(self, line: dict[str, Any]) -> _Result:
        assert self._client is not None
        body = _json.dumpb(line)
        headers = {"Idempotency-Key": idempotency_key(line), "Content-Type": "application/json",
                   "Content-Digest": content_digest(body)}
        try:
            resp = self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _Result(False, True, f"{type(exc).__name__}: {exc}")
        if resp.is_success:
            return _Result(True, False)
        text = resp.text[:200]
        return _Result(False, resp.status_code in _RETRY_STATUS,
                       f"HTTP {resp.status_code}: {text}",
                       retry_after(resp.headers.get("retry-after")))

    def write(self, lines: list[dict[str, Any]]) -> Written:
        assert self._pool is not None, "open the sink first"
        out = Written()
        todo = {line["record_id"]: line for line in lines}
        for attempt in range(1, self.max_attempts + 1):
            ids = list(todo)
            results = list(self._pool.map(lambda rid: self._post(todo[rid]), ids))
            hints: list[float] = []
            for rid, res in zip(ids, results, strict=True):
                if attempt > 1:
                    out.attempts[rid] = attempt
                if res.ok:
                    del todo[rid]
                elif not res.retryable or attempt == self.max_attempts:
                    out.dead[rid] = (attempt, res.error)
                    del todo[rid]
                elif res.retry_after_s is not None:
                    hints.append(res.retry_after_s)
            if not todo:
                break
            wait = self.retry.delay_s(attempt, self.rng, max(hints) if hints else None)
            time.sleep(min(self.retry.max_delay_s, wait))
        return out
