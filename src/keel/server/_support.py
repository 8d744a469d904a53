"""Server settings, Prometheus metrics and periodic jobs (alerts and drift checks plug in here)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from keel.store import Store
from keel.telemetry import Telemetry, metrics_text

log = logging.getLogger("keel.server")


@dataclass
class Settings:
    """Limits and knobs of one ``keel serve`` process."""

    max_body_bytes: int = 4 * 1024 * 1024
    max_batch: int = 1000
    linger_ms: float = 0.0
    session_secret: str = field(default_factory=lambda: os.environ.get("KEEL_SESSION_SECRET", ""))
    secure_cookies: bool = False
    session_max_age_s: int = 8 * 3600
    lease_s: float = 300.0
    dashboard_cache_s: float = 2.0
    #: the dashboard's cost outlook (a scan over a week of decisions) is recomputed at most
    #: this often
    cost_cache_s: float = 30.0
    key_cache_s: float = 5.0
    alert_interval_s: float = 60.0
    #: answer 202 and leave the deciding to `keel worker` processes (records are queued)
    enqueue: bool = False

    def __post_init__(self) -> None:
        if not self.session_secret:  # sessions then last as long as the process
            self.session_secret = secrets.token_urlsafe(32)
        if self.max_batch < 1 or self.max_body_bytes < 1024:
            raise ValueError("max_batch must be >= 1 and max_body_bytes >= 1024")


class ServerMetrics:
    """``/metrics``: the pipeline's and the store's metrics (keel.telemetry), the server's
    own batching metrics, and the text of any ``extra`` renderers."""

    def __init__(self, workflow: str, store: Store, telemetry: Telemetry,
                 extra: Sequence[Callable[[], str | bytes]] = ()) -> None:
        self.workflow = workflow
        self.store = store
        self.telemetry = telemetry
        self.extra = list(extra)
        self.registry = CollectorRegistry()
        self.batch_seconds = Histogram(
            "keel_serve_batch_seconds", "Time to decide one micro-batch of requests",
            ["workflow"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
                                   2.5, 5), registry=self.registry)
        self.batch_records = Histogram(
            "keel_serve_batch_records", "Records per micro-batch", ["workflow"],
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000), registry=self.registry)

    def on_batch(self, fresh: list[dict[str, Any]], busy_s: float) -> None:
        self.batch_seconds.labels(self.workflow).observe(busy_s)
        self.batch_records.labels(self.workflow).observe(len(fresh))

    def render(self) -> bytes:
        parts = [metrics_text(self.store, self.telemetry, [self.workflow]),
                 generate_latest(self.registry)]
        for fn in self.extra:
            text = fn()
            parts.append(text.encode() if isinstance(text, str) else text)
        return b"".join(parts)


@dataclass
class PeriodicJob:
    """``fn`` runs every ``interval_s`` in a worker thread; failures are logged, never fatal."""

    name: str
    interval_s: float
    fn: Callable[[], Any]


async def run_jobs(jobs: Sequence[PeriodicJob]) -> None:
    async def one(job: PeriodicJob) -> None:
        while True:
            await asyncio.sleep(job.interval_s)
            try:
                await asyncio.to_thread(job.fn)
            except Exception:
                log.exception("periodic job %s failed", job.name)

    await asyncio.gather(*(one(j) for j in jobs))
