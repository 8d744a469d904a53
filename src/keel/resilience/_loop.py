"""The runner's own event loop, on a background thread, plus a thread call that can be abandoned.

Async models (HTTP clients) run here with their concurrency and rate limits; sync models are
awaited through :func:`in_thread` so a call that hangs can be cut by a timeout. The loop lives
on its own thread so a runner works the same from plain code and from inside another event
loop (``keel serve``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

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
    """Run a blocking call on a fresh daemon thread and await it.

    Unlike ``asyncio.to_thread`` the thread belongs to no pool, so a call that hangs and is
    abandoned by a timeout never blocks later calls or the interpreter's exit.
    """
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def work() -> None:
        value: Any
        try:
            ok, value = True, fn()
        except BaseException as exc:  # handed to the awaiting coroutine
            ok, value = False, exc
        # RuntimeError: the loop closed while this call hung, so nobody is waiting for it
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, ok, value)

    threading.Thread(target=work, name="keel-model-call", daemon=True).start()
    return await fut
