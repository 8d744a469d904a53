"""Micro-batching: requests that arrive while a batch is deciding ride the next batch together.

The pipeline is vectorised (one model call and one transaction per batch), so many small
HTTP requests are cheapest decided as one batch. One worker thread owns the runner, which
also serialises writes to the store. There is no fixed wait: a lone request is decided at
once; under load, batches grow by themselves (optionally ``linger_s`` to gather more). A
batch is answered once it is stored; meanwhile the next batch is already being decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from keel._record import Item
from keel.errors import RequestError
from keel.runtime import Earlier, Runner, RunSummary
from keel.store import Store
from keel.store import serving as sq


class NotReady(RequestError):
    code = "keel.not_ready"
    status = 503


@dataclass
class _Job:
    records: list[dict[str, Any]]
    future: asyncio.Future[list[dict[str, Any]]]


@dataclass
class BatcherStats:
    batches: int = 0
    records: int = 0
    largest: int = 0
    busy_s: float = 0.0
    dispositions: Counter[str] = field(default_factory=Counter)


class DecisionBatcher:
    """Collects submitted records into pipeline batches of at most ``max_batch``."""

    def __init__(self, runner: Runner, store: Store, *, max_batch: int = 1000,
                 linger_s: float = 0.0, on_batch: Any = None) -> None:
        self.runner = runner
        self.store = store
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.on_batch = on_batch
        self.stats = BatcherStats()
        self.summary: RunSummary | None = None
        self._queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="keel-decide")
        self._readers = ThreadPoolExecutor(1, thread_name_prefix="keel-answer")
        self._answering: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.summary = await loop.run_in_executor(self._executor, self.runner.start_serving, "api")
        self._task = asyncio.create_task(self._loop(), name="keel-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._answering:  # batches decided: their requests get their answers
            await asyncio.gather(*self._answering, return_exceptions=True)
        if self.summary is not None:
            await asyncio.get_running_loop().run_in_executor(
                self._executor, self.runner.finish_serving, self.summary)
        self._executor.shutdown(wait=True)
        self._readers.shutdown(wait=True)

    async def submit(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Decide ``records``; one answer dict per record, in order."""
        if not self.running:
            raise NotReady("the pipeline is not running (starting up or shutting down); "
                           "retry shortly")
        fut: asyncio.Future[list[dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(records, fut))
        return await fut

    async def _loop(self) -> None:
        """Decide batch after batch; a batch's requests are answered once it is stored, while
        the next batch is already being decided (its write overlaps the next decision)."""
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            if self.linger_s:
                await asyncio.sleep(self.linger_s)
            size = len(jobs[0].records)
            while size < self.max_batch and not self._queue.empty():
                job = self._queue.get_nowait()
                jobs.append(job)
                size += len(job.records)
            try:
                results, stored, busy_s = await loop.run_in_executor(self._executor, self._decide,
                                                                     jobs)
            except Exception as exc:  # every waiting request learns of the failure
                _fail(jobs, exc)
                continue
            answering = asyncio.create_task(self._answer(jobs, results, stored, busy_s))
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)

    def _decide(self, jobs: list[_Job]) -> tuple[list[Item | Earlier], Future[None], float]:
        assert self.summary is not None
        t0 = time.perf_counter()
        flat = [r for job in jobs for r in job.records]
        results, stored = self.runner.decide_async(flat, self.summary)
        return results, stored, time.perf_counter() - t0

    async def _answer(self, jobs: list[_Job], results: list[Item | Earlier],
                      stored: Future[None], busy_s: float) -> None:
        """Once the batch is stored: answer each request (reads run beside the deciding)."""
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wrap_future(stored)
            answers = await loop.run_in_executor(self._readers, self._answers, results)
        except Exception as exc:
            _fail(jobs, exc)
            return
        self._count(len(results), answers, busy_s)
        start = 0
        for job in jobs:
            if not job.future.done():
                job.future.set_result(answers[start:start + len(job.records)])
            start += len(job.records)

    def _count(self, n: int, answers: list[dict[str, Any]], busy_s: float) -> None:
        st = self.stats
        st.batches += 1
        st.records += n
        st.largest = max(st.largest, n)
        st.busy_s += busy_s
        fresh = [a for a in answers if not a["already_decided"]]
        st.dispositions.update(a["disposition"] for a in fresh)
        if self.on_batch is not None:
            self.on_batch(fresh, busy_s)

    def _answers(self, results: list[Item | Earlier]) -> list[dict[str, Any]]:
        waiting = [r.record_id for r in results
                   if isinstance(r, Item) and r.disposition == "in_review"]
        tasks = sq.open_tasks(self.store, waiting) if waiting else {}
        earlier = [r.record_id for r in results if isinstance(r, Earlier)]
        stored = sq.decisions_by_record(self.store, earlier) if earlier else {}
        out, seen = [], set()
        for r in results:
            if isinstance(r, Item):
                answer = _fresh(r, tasks.get(r.record_id))
                answer["already_decided"] = r.record_id in seen  # a repeat within the batch
                seen.add(r.record_id)
            else:
                answer = _earlier(r, stored.get(r.record_id))
            out.append(answer)
        return out


def _fail(jobs: list[_Job], exc: BaseException) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(exc)


def _fresh(i: Item, task: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": i.key, "record_id": i.record_id, "disposition": i.disposition,
        "reason": i.reason, "output": i.output,
        "confidence": i.prediction.confidence if i.prediction else None,
        "model_version": i.predicted_by, "already_decided": False,
    }
    if i.disposition == "quarantined":
        out["violations"] = [v.as_dict() for v in i.violations]
    if i.disposition == "failed":
        out["error"] = {"code": i.error_code, "message": i.error}
    if task is not None:
        out["review_task"] = task
    return out


def _earlier(e: Earlier, stored: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"key": e.key, "record_id": e.record_id, "already_decided": True}
    if stored is None:
        out.update(disposition=None, reason="decided by another process; see the record")
        return out
    stored.pop("key", None)
    out.update(stored)
    return out
