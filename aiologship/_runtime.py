"""One background thread per manager running an asyncio event loop (via anyio).

It hosts the log pump and the copy operations, and serves sync callers through an
anyio ``BlockingPortal``. Async callers reach it without blocking their own loop
by waiting for the portal's future in a worker thread.

The thread is a daemon; the manager drains it from an exit hook that runs before
the interpreter joins threads and shuts executors down.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import sniffio
from anyio.abc import TaskGroup
from anyio.from_thread import BlockingPortal

from ._exceptions import AiologshipError

T = TypeVar("T")

_START_TIMEOUT = 30.0


class Runtime:
    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._portal: BlockingPortal | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tg: TaskGroup | None = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        return self._portal is not None

    def in_runtime_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self, on_started: Callable[[], None] | None = None) -> None:
        """Start the thread (idempotent); ``on_started`` runs once, in the caller."""
        with self._lock:
            if self._portal is not None:
                return
            ready = threading.Event()
            failure: list[BaseException] = []
            self._stopped.clear()
            thread = threading.Thread(
                target=self._thread_main, args=(ready, failure), name=f"aiologship-{self.name}", daemon=True
            )
            thread.start()
            if not ready.wait(_START_TIMEOUT):
                raise AiologshipError(f"aiologship runtime thread did not start in {_START_TIMEOUT:.0f} s")
            if failure:
                raise AiologshipError("aiologship runtime thread failed to start") from failure[0]
            self._thread = thread
            if on_started is not None:
                on_started()

    def _thread_main(self, ready: threading.Event, failure: list[BaseException]) -> None:
        async def main() -> None:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                async with BlockingPortal() as portal:
                    self._loop = asyncio.get_running_loop()
                    self._portal = portal
                    ready.set()
                    await portal.sleep_until_stopped()
                # The manager stops its background tasks before stopping the portal;
                # whatever is left (an interpreter exit mid-run) is cancelled.
                tg.cancel_scope.cancel()

        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:  # reported to the starter, or lost with the thread
            failure.append(exc)
        finally:
            self._portal = None
            self._loop = None
            self._tg = None
            self._stopped.set()
            ready.set()

    def stop(self, timeout: float) -> bool:
        """Stop the loop after its tasks end; True if the thread finished in time."""
        portal, thread = self._portal, self._thread
        if portal is None or thread is None:
            return True
        if self.in_runtime_thread():
            raise AiologshipError("cannot stop the aiologship runtime from its own thread")
        try:
            portal.call(portal.stop)
        except RuntimeError:
            pass  # already stopping
        thread.join(timeout)
        return not thread.is_alive()

    def reset_after_fork(self) -> None:
        """In a forked child the thread does not exist: forget it, start anew on demand."""
        self._lock = threading.Lock()
        self._thread = None
        self._portal = None
        self._loop = None
        self._tg = None
        self._stopped = threading.Event()

    # ------------------------------------------------------------- scheduling

    def call_soon_threadsafe(self, callback: Callable[[], object]) -> None:
        loop = self._loop
        if loop is not None:
            try:
                loop.call_soon_threadsafe(callback)
            except RuntimeError:
                pass  # loop closing: the final drain picks the records up

    def call(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``await func(*args)`` on the runtime loop and wait (sync callers)."""
        if self.in_runtime_thread():
            raise AiologshipError(
                "a blocking aiologship call was made from its own runtime thread; use the async form"
            )
        return self._require_portal().call(func, *args)

    def submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Schedule ``func(*args)`` on the runtime loop; returns at once."""
        return self._require_portal().start_task_soon(func, *args)

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the runtime loop from another event loop, without blocking it."""
        if self.in_runtime_thread():
            return await func(*args)
        future = self.submit(func, *args)
        return await wait_future(future)

    def spawn(self, func: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a background task; must be called on the runtime loop."""
        if self._tg is None or not self.in_runtime_thread():
            raise AiologshipError("spawn() must be called on the aiologship runtime loop")
        self._tg.start_soon(func, *args)

    def _require_portal(self) -> BlockingPortal:
        portal = self._portal
        if portal is None:
            raise AiologshipError("the aiologship runtime is not running")
        return portal


async def wait_future(future: Future[T]) -> T:
    """Await a ``concurrent.futures.Future`` from another event loop without blocking it.

    Shielded: cancelling the waiter does not cancel the work on the runtime loop
    (a cancelled ``aclose()`` must not cut a drain in half).
    """
    if sniffio.current_async_library() == "asyncio":
        return await asyncio.shield(asyncio.wrap_future(future))
    return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)
