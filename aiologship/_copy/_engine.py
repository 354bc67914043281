"""CopyEngine: the periodic loop, status, flush and stop of one copy operation.

The parts: ``_engine_state`` (lock, manifest, status.json), ``_engine_status``
(the counters behind :meth:`CopyEngine.status`), ``_plan`` (what a cycle
ships), ``_ship`` (the worker pool).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread

from .._config import HdfsDriver
from .._exceptions import CopyError, DestinationError
from .._fs import Destination, resolve_destination
from ._cycle import Cycles
from ._engine_state import EngineState
from ._engine_status import StatusBook
from ._plan import check_root_dir, local_prefix
from ._ship import stoppable_sleep
from ._spec import CopySpec
from ._status import CopyState, CopyStatus, CycleResult
from ._transfer import Progress, TempNames

logger = logging.getLogger("aiologship.copy")

DEFAULT_WORKERS = 8
# How long stop() / close() may take, in seconds, from the stop request: the
# rest of a cycle in progress (no more retries) and the final cycle (one
# attempt per file). What is left is reported pending; the next run ships it.
FINAL_CYCLE_TIMEOUT = 20.0
# open() waits this long for the destination's client (an hdfs:// NameNode that
# accepts the connection and never answers hangs it indefinitely); past it the
# destination counts as failing and cycles retry it.
RESOLVE_TIMEOUT = 10.0


class CopyEngine:
    """Runs one copy operation on the caller's event loop; blocking work in threads.

    ``clock`` (wall-clock seconds) and ``sleep`` (retry waits) are injectable for
    tests; ``resolver`` replaces :func:`resolve_destination` (tests of one layer).
    """

    def __init__(
        self,
        spec: CopySpec,
        *,
        state_dir: Path,
        hdfs_driver: HdfsDriver = HdfsDriver.AUTO,
        user: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        resolver: Callable[[str], Destination] | None = None,
        workers: int = DEFAULT_WORKERS,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self.spec = spec
        self._resolve_timeout = resolve_timeout
        self._clock = clock
        self._sleep = sleep
        self._resolver = resolver or functools.partial(
            resolve_destination, hdfs_driver=hdfs_driver, user=user
        )
        self._limiter = anyio.CapacityLimiter(max(1, workers))
        self._store = EngineState(spec, state_dir, self._limiter)
        self._book = StatusBook(spec, clock)
        tag = hashlib.sha256(spec.state_key.encode()).hexdigest()[:8]
        self._temps = TempNames(tag)
        # A local destination inside the globbed tree must not ship its own
        # files again (archive/app.log, archive/archive/app.log, ...).
        self._dest_prefix = local_prefix(spec.destination_base)
        # Set when another process may run this copy now: the engine stops.
        self._lock_lost: str | None = None
        self._stop_requested = anyio.Event()
        self._stop_deadline: float | None = None  # anyio clock; set by the first stop()
        self._stop_timeout: float | None = None
        self._cycle_scope: anyio.CancelScope | None = None
        self._done = anyio.Event()
        self._running = False
        self._stopping = False
        self._opened = False
        self._cycles = Cycles(
            spec,
            store=self._store,
            book=self._book,
            resolver=self._resolver,
            limiter=self._limiter,
            workers=max(1, workers),
            temps=self._temps,
            dest_prefix=self._dest_prefix,
            clock=clock,
            check_state=self._check_state,
            scheduling=lambda: self._running and not self._stop_requested.is_set(),
            retry_sleep=self._retry_sleep,
            give_up=self._stop_requested.is_set,
        )

    async def _retry_sleep(self, seconds: float) -> None:
        """The retry policy's wait before another attempt: counted, and ended by a stop."""
        self._book.retries += 1
        await stoppable_sleep(self._sleep, self._stop_requested, seconds)

    @property
    def state_path(self) -> Path:
        """This copy's folder in the state directory."""
        return self._store.path

    @property
    def _dest(self) -> Destination | None:
        """The destination, once resolved (by open() or a later cycle)."""
        return self._cycles.dest

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Check the state directory, take its lock, load the manifest and
        resolve the destination. Raises ``ConfigError`` (state dir, URI) or
        ``CopyError`` (another process runs this copy). A destination that
        cannot be reached is not an error here: cycles retry it."""
        if self._opened:
            return
        try:
            if self.spec.root_dir is not None:
                await anyio.to_thread.run_sync(
                    check_root_dir,
                    self.spec.root_dir,
                    self.spec,
                    self._dest_prefix,
                    limiter=self._limiter,
                )
            await anyio.to_thread.run_sync(self._store.open, limiter=self._limiter)
        except BaseException:
            self._store.release()
            self._book.state = CopyState.FAILED
            raise
        try:
            with anyio.move_on_after(self._resolve_timeout) as resolving:
                self._cycles.dest = await anyio.to_thread.run_sync(
                    self._resolver,
                    self.spec.destination_base,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
            if resolving.cancelled_caught:
                self._book.destination_failed(
                    f"destination {self.spec.destination_redacted}: no answer within "
                    f"{self._resolve_timeout:g} s"
                )
        except DestinationError as exc:
            self._book.destination_failed(str(exc))
        except BaseException:
            self._store.release()
            self._book.state = CopyState.FAILED
            raise
        self._opened = True
        self._book.state = CopyState.RUNNING

    def _check_state(self) -> None:
        """Before each cycle (blocking): is the lock still ours, is the folder there?

        A removed state dir unlinks the lock file, and another copier of this copy
        can then lock a new file at the same path; see ``StateLock.verify``."""
        try:
            self._store.verify_lock()
        except CopyError as exc:
            self._lock_lost = str(exc)
            self._book.last_error = self._lock_lost
            self._book.state = CopyState.FAILED
            logger.error("copy %r: %s", self.spec.copy_name, exc)
            raise
        self._store.ensure_folder()

    async def run(self) -> None:
        """Cycle every ``copy_interval`` seconds (once when it is None) until
        :meth:`stop`; the final cycle runs before this returns."""
        state = self._book.state
        if self._running:
            raise CopyError(f"copy operation {self.spec.copy_name!r} is already running")
        if state in (CopyState.STOPPED, CopyState.FAILED):
            raise CopyError(f"copy operation {self.spec.copy_name!r} is {state}")
        await self.open()
        self._running = True
        try:
            interval = self.spec.copy_interval
            while not self._stop_requested.is_set():
                # stop() gives this scope its deadline: a cycle in progress
                # (a destination that hangs) must not outlast the bound.
                with anyio.CancelScope() as self._cycle_scope:
                    await self._guarded_cycle()
                self._cycle_scope = None
                if interval is None:
                    self._book.next_cycle_at = None
                    await self._stop_requested.wait()
                    break
                self._book.next_cycle_at = self._clock() + interval
                with anyio.move_on_after(interval):
                    await self._stop_requested.wait()
            self._book.state = CopyState.STOPPING
            self._book.next_cycle_at = None
            await self._final_cycle()
        finally:
            self._running = False
            self._finish()

    async def _final_cycle(self) -> None:
        """The last cycle, within what is left of the stop's bound; a cycle cut
        short (this one or the one in progress at the stop) is reported."""
        deadline = math.inf if self._stop_deadline is None else self._stop_deadline
        with anyio.CancelScope(deadline=deadline) as scope:
            if anyio.current_time() < deadline:
                await self._guarded_cycle()
        if scope.cancel_called or anyio.current_time() >= deadline:
            await self._report_cut_short()

    async def _report_cut_short(self) -> None:
        tally = self._cycles.tally
        self._book.cut_short(0 if tally is None else tally.pending, self._stop_timeout)
        await self._store.write_status(self.status())

    async def _guarded_cycle(self) -> None:
        """A cycle of the periodic loop: an unexpected error (the state folder
        removed under us, a bug) is logged once per streak and retried next
        cycle instead of ending the loop; the app never sees it raise."""
        try:
            await self._cycle()
        except Exception as exc:
            if self._lock_lost is not None:
                raise  # another process may run this copy now: stop, never retry
            self._book.cycle_failed(exc)

    async def flush(self) -> CycleResult:
        """Run one cycle now (after any cycle in progress) and return its result."""
        state = self._book.state
        if state in (CopyState.STOPPED, CopyState.FAILED):
            raise CopyError(f"copy operation {self.spec.copy_name!r} is {state}")
        await self.open()
        return await self._cycle()

    async def stop(
        self, *, final_cycle: bool = True, timeout: float | None = FINAL_CYCLE_TIMEOUT
    ) -> None:
        """Request a stop, run the final cycle, wait for :meth:`run` to return.
        Idempotent. ``final_cycle=False`` skips the last cycle when run() is not
        active (a one-shot caller that has just flushed).

        Returns within ``timeout`` seconds (None: no bound) whatever the
        destination does: a cycle in progress makes no more retries, the final
        cycle makes one attempt per file, and what the bound leaves undone is
        reported pending (status, a WARNING). A transfer still blocked in the
        destination's client at the bound is abandoned in its worker thread."""
        if self._book.state in (CopyState.STOPPED, CopyState.FAILED):
            return
        if self._stop_deadline is None:
            # The first stop sets the bound; concurrent stops share it.
            self._stop_timeout = math.inf if timeout is None else timeout
            self._stop_deadline = anyio.current_time() + self._stop_timeout
            if self._cycle_scope is not None:
                self._cycle_scope.deadline = self._stop_deadline
        self._stop_requested.set()
        if self._running or self._stopping:
            # run() or another stop() does the final cycle: wait for it.
            if self._running:
                self._book.state = CopyState.STOPPING
            await self._done.wait()
            return
        self._stopping = True
        if self._opened and final_cycle:
            self._book.state = CopyState.STOPPING
            try:
                await self._final_cycle()
            finally:
                self._finish()
        else:
            self._finish()

    def _finish(self) -> None:
        self._book.next_cycle_at = None
        self._book.state = CopyState.FAILED if self._lock_lost else CopyState.STOPPED
        if self._store.lock_held and self._opened:
            # While the lock is ours: after it, the folder may be another copier's.
            # Blocking but small (no fsync), and it runs even when cancelled.
            self._store.write_status_now(self.status())
        self._store.release()
        self._done.set()

    # ------------------------------------------------------------ status

    def status(self) -> CopyStatus:
        return self._book.status()

    def progress(self) -> Progress:
        """Live counters of the cycle in progress (or the last one)."""
        return self._cycles.progress

    # ------------------------------------------------------------ one cycle

    async def _cycle(self) -> CycleResult:
        return await self._cycles.run()


__all__ = ["CopyEngine", "CopyState", "CopyStatus", "CycleResult"]
