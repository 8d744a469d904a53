"""The runner's own event loop, on a background thread, plus a thread call that can be abandoned.

Async models (HTTP clients) run here with their concurrency and rate limits; sync models are
awaited through :func:`in_thread` so a call that hangs can be cut by a timeout. The loop lives
on its own thread so a runner works the same from plain code and from inside another event
loop (``keel serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ClassVar, TypeVar

T = TypeVar("T")


class LoopThread:
    """Starts on first use, runs coroutines to completion for the calling thread, closes cleanly.

    ``on_close`` coroutines (closing HTTP clients, say) run on the loop before it stops.
    """

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.on_close: list[Callable[[], Awaitable[None]]] = []

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def main() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=main, name="keel-loop", daemon=True)
                thread.start()
                ready.wait()
                self._loop, self._thread = loop, thread
            return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result in the calling thread."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    async def _shutdown(self) -> None:
        for hook in self.on_close:
            with contextlib.suppress(Exception):  # closing must not hide the run's outcome
                await hook()
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.get_running_loop().shutdown_asyncgens()


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking call on a model-call thread and await it.

    Unlike ``asyncio.to_thread`` the threads belong to no bounded pool: a call takes an idle
    thread or starts one, and a thread goes back to the idle ones only when its call
    returns. So a call that hangs and is abandoned by a timeout keeps its thread to itself
    and never blocks later calls or the interpreter's exit (the threads are daemons).
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def work() -> Callable[[], None]:
        value: Any
        try:
            ok, value = True, fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            ok, value = False, exc

        def deliver() -> None:
            loop.call_soon_threadsafe(settle, ok, value)

        return deliver

    _CallThread.take().jobs.put(work)
    return await fut


class _CallThread(threading.Thread):
    """A model-call thread: runs the calls it is given, one at a time, idling in between."""

    #: idle threads, most recently used last; more than ``KEEP`` idle ones end
    idle: ClassVar[list[_CallThread]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()
    KEEP: ClassVar[int] = 256

    def __init__(self) -> None:
        super().__init__(name="keel-model-call", daemon=True)
        self.jobs: queue.SimpleQueue[Callable[[], Callable[[], None]]] = queue.SimpleQueue()

    @classmethod
    def take(cls) -> _CallThread:
        with cls.lock:
            if cls.idle:
                return cls.idle.pop()
        thread = cls()
        thread.start()
        return thread

    def run(self) -> None:
        while True:
            deliver = self.jobs.get()()
            with self.lock:  # idle again before the caller hears back: its next call reuses it
                stay = len(self.idle) < self.KEEP
                if stay:
                    self.idle.append(self)
            # RuntimeError: the loop closed while this call hung, so nobody is waiting for it
            with contextlib.suppress(RuntimeError):
                deliver()
            if not stay:
                return
