"""``CopyOperation``: the handle ``start_hdfs_copy`` returns, in sync and async code.

The engine itself lives on the manager's runtime loop. The handle is awaitable
(``op = await lm.start_hdfs_copy(...)`` waits until the operation has started),
and ``flush()`` / ``stop()`` block in sync code and return an awaitable when
called on a running event loop (``await op.flush()``).

Layer rule: sits between the manager's ``CopyRegistry`` and ``_copiers``;
imports the ``Backend`` protocol from there, ``_runtime``, and ``_copy`` for
types only.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Generator
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from ._copiers import Backend
from ._runtime import Runtime, wait_future

if TYPE_CHECKING:
    from ._copy import CopySpec, CopyStatus, CycleResult

_log = logging.getLogger("aiologship")


def in_event_loop() -> bool:
    return asyncio._get_running_loop() is not None


class CopyOperation:
    """A running (or skipped) copy operation. See ``LogManager.start_hdfs_copy``."""

    def __init__(
        self, spec: CopySpec, backend: Backend, runtime: Runtime, started: Future[None]
    ) -> None:
        """``started``: the backend's start, already submitted to ``runtime`` (the
        registry does it, so it can wait for it outside its lock)."""
        self.spec = spec
        self._backend = backend
        self._runtime = runtime
        self._started = started

    @property
    def name(self) -> str:
        return self.spec.copy_name

    @property
    def state(self) -> str:
        return str(self.status().state)

    def status(self) -> CopyStatus:
        return self._backend.status()

    # ----------------------------------------------------------------- start

    def __await__(self) -> Generator[Any, None, CopyOperation]:
        return self._await_started().__await__()

    async def _await_started(self) -> CopyOperation:
        await wait_future(self._started)
        return self

    # ---------------------------------------------------------- flush / stop

    def flush(self) -> Any:
        """Run one copy cycle now and wait for it; ``await`` it in async code."""
        return self._dual(self._backend.flush)

    async def aflush(self) -> CycleResult:
        result: CycleResult = await self._acall(self._backend.flush)
        return result

    def stop(self) -> Any:
        """Final cycle, then stop; ``await`` it in async code."""
        return self._dual(self._backend.stop)

    async def astop(self) -> None:
        await self._acall(self._backend.stop)

    def _dual(self, func: Callable[[], Awaitable[Any]]) -> Any:
        if in_event_loop():
            return self._acall(func)
        self._wait_started_sync()
        return self._runtime.call(func)

    async def _acall(self, func: Callable[[], Awaitable[Any]]) -> Any:
        await self._await_started()
        return await self._runtime.acall(func)

    def _wait_started_sync(self) -> None:
        self._started.result()

    def __repr__(self) -> str:
        try:
            state = self.state
        except Exception:
            state = "?"
        return f"<CopyOperation {self.name!r} {state} -> {self.spec.destination_redacted}>"
