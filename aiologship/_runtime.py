"""One background thread per manager running an asyncio event loop (via anyio).

It hosts the log pump and the copy operations, and serves sync callers through an
anyio ``BlockingPortal``. Async callers reach it without blocking their own loop
by waiting for the portal's future in a worker thread.

The thread is a daemon; the manager drains it from an exit hook that runs before
the interpreter joins threads and shuts executors down.

Fork safety rule: the runtime thread and its worker threads import nothing while
they start the loop and run the logging pipeline; what they need is imported
here, by the thread that starts them. A thread that imports holds that module's
import lock; a child forked meanwhile inherits the lock held by a thread that does
not exist in the child, and the child's own runtime thread would then wait on that
import forever (``flush()`` times out, every record is dropped). ``anyio.run()``
imports its backend lazily, so it is imported below; ``tests/logging/test_fork.py``
checks that no pipeline thread imports. (Starting a copy loads the copy engine in
a worker thread: a child forked during that import can log, but would block if it
started a copy of its own.)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import anyio
import anyio._backends._asyncio  # see the fork safety rule above
import anyio.to_thread
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
        self._ready = threading.Event()
        self._failure: list[BaseException] = []

    # ------------------------------------------------------------------ state

    @property
    def running(self) -> bool:
        """Started and not stopped (the loop may still be starting up)."""
        return self._thread is not None and not self._stopped.is_set()

    def in_runtime_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def start(self, main_task: Callable[[], Coroutine[Any, Any, None]] | None = None) -> None:
        """Start the thread (idempotent) and return at once.

        No waiting here: a caller may hold the ``logging`` module lock (``dictConfig``
        building a handler), which the new thread needs while it imports and starts
        its loop. Calls that need the portal wait for it, with a bound.
        ``main_task`` runs on the loop from its first moment.
        """
        with self._lock:
            if self._thread is not None and not self._stopped.is_set():
                return
            self._ready = threading.Event()
            self._failure = []
            self._stopped.clear()
            thread = threading.Thread(
                target=self._thread_main,
                args=(self._ready, self._failure, main_task),
                name=f"aiologship-{self.name}",
                daemon=True,
            )
            self._thread = thread
            thread.start()

    def _wait_ready(self) -> None:
        if not self._ready.wait(_START_TIMEOUT):
            raise AiologshipError(
                f"aiologship runtime thread did not start in {_START_TIMEOUT:.0f} s"
            )
        if self._failure:
            raise AiologshipError("aiologship runtime thread failed") from self._failure[0]

    def _thread_main(
        self,
        ready: threading.Event,
        failure: list[BaseException],
        main_task: Callable[[], Coroutine[Any, Any, None]] | None,
    ) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()  # before main_task runs: wake-ups work
            async with anyio.create_task_group() as tg:
                self._tg = tg
                if main_task is not None:
                    tg.start_soon(main_task)
                async with BlockingPortal() as portal:
                    self._portal = portal
                    ready.set()
                    await portal.sleep_until_stopped()
                # The manager stops its background tasks before stopping the portal;
                # whatever is left (an interpreter exit mid-run) is cancelled.
                tg.cancel_scope.cancel()

        try:
            anyio.run(main, backend="asyncio")
        except BaseException as exc:  # reported to the next caller that needs the portal
            failure.append(exc)
        finally:
            self._portal = None
            self._loop = None
            self._tg = None
            self._stopped.set()
            ready.set()

    def stop(self, timeout: float) -> bool:
        """Stop the loop after its tasks end; True if the thread finished in time."""
        thread = self._thread
        if thread is None or self._stopped.is_set():
            return True
        self._wait_ready()
        portal = self._portal
        if portal is None:
            thread.join(timeout)
            return not thread.is_alive()
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
        self._ready = threading.Event()
        self._failure = []

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
                "a blocking aiologship call was made on its own runtime thread; use the async form"
            )
        return self._require_portal().call(func, *args)

    def submit(self, func: Callable[..., Awaitable[T]], *args: Any) -> Future[T]:
        """Schedule ``func(*args)`` on the runtime loop; returns at once.

        Never waits, even while the thread is still starting (a manager created
        just before, on an event loop): then a short-lived thread waits for the
        portal and hands the task over, so the caller's loop does not.
        """
        portal = self._portal
        if portal is not None or self._thread is None or self._stopped.is_set():
            return self._require_portal().start_task_soon(func, *args)
        outer: Future[T] = Future()

        def hand_over() -> None:
            try:
                inner = self._require_portal().start_task_soon(func, *args)
            except BaseException as exc:
                outer.set_exception(exc)
                return
            inner.add_done_callback(lambda done: _copy_outcome(done, outer))

        threading.Thread(
            target=hand_over, name=f"aiologship-{self.name}-start", daemon=True
        ).start()
        return outer

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``func(*args)`` on the runtime loop from another event loop, without blocking it."""
        if self.in_runtime_thread():
            return await func(*args)
        future = self.submit(func, *args)
        return await wait_future(future)

    def spawn(self, func: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start a background task; must be called on the runtime loop."""
        if self._tg is None or not self.in_runtime_thread():
            raise AiologshipError("spawn() must be called on the aiologship runtime loop")
        self._tg.start_soon(func, *args)

    def _require_portal(self) -> BlockingPortal:
        if self._thread is not None and not self._stopped.is_set():
            self._wait_ready()
        portal = self._portal
        if portal is None:
            raise AiologshipError("the aiologship runtime is not running")
        return portal


def _copy_outcome(source: Future[T], target: Future[T]) -> None:
    error = source.exception()
    if error is not None:
        target.set_exception(error)
    else:
        target.set_result(source.result())


async def wait_future(future: Future[T]) -> T:
    """Await a ``concurrent.futures.Future`` from another event loop without blocking it.

    Shielded: cancelling the waiter does not cancel the work on the runtime loop
    (a cancelled ``aclose()`` must not cut a drain in half).
    """
    if asyncio._get_running_loop() is not None:
        return await asyncio.shield(asyncio.wrap_future(future))
    return await anyio.to_thread.run_sync(future.result, abandon_on_cancel=True)


async def in_worker_thread(func: Callable[..., T], *args: Any) -> T:
    """``anyio.to_thread.run_sync(func, *args)``, or ``func(*args)`` right here
    when no worker thread can start.

    While the exit hooks run, Python 3.12 refuses new threads ("can't create new
    thread at interpreter shutdown"; 3.11 and 3.13 start them), and the exit
    drain may need one the runtime never started. anyio raises before it hands
    ``func`` to a thread, so ``func`` has not run then; a ``RuntimeError`` that
    ``func`` itself raised is passed on.
    """
    ran = False

    def call() -> T:
        nonlocal ran
        ran = True
        return func(*args)

    try:
        return await anyio.to_thread.run_sync(call)
    except RuntimeError:
        if ran:
            raise
    return func(*args)
