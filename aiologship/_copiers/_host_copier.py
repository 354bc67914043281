"""One copier per ``copy_name`` per host: a copy engine that runs only while its
process holds the host file lock (two processes on one host shipping the same
files would ship every byte twice). A process that finds the lock taken
stands by and polls it; when the holder dies (the kernel drops its flock) the
first poller takes over within one poll interval, reopening the engine from the
manifest the previous holder left.

The same class runs inside the Ray copier actor, so a Ray copier and a plain
process on the same host with the same state dir never copy twice either.

Layer rule: imports ``_coordination``, ``_config``, ``_exceptions`` and the copy
engine's light modules (spec, status); the engine itself only through an
:class:`EngineFactory` (default: ``aiologship._copy``, loaded on first use).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import anyio

from .._config import HdfsDriver, default_state_dir
from .._copy import CopySpec, CopyState, CopyStatus
from .._exceptions import CopyError
from ._coordination import MAX_LOCK_POLL, HostLock

logger = logging.getLogger("aiologship")

DEFAULT_START_TIMEOUT = 120.0


class SpecLike(Protocol):
    """What the coordination layer uses of ``aiologship._copy.CopySpec``."""

    @property
    def copy_name(self) -> str: ...
    @property
    def copy_interval(self) -> Any: ...

    def as_params(self) -> dict[str, Any]: ...
    def differences(self, other: Any) -> dict[str, tuple[Any, Any]]: ...


class EngineLike(Protocol):
    """What the coordination layer uses of ``aiologship._copy.CopyEngine``."""

    async def open(self) -> None: ...
    async def run(self) -> None: ...
    async def flush(self) -> Any: ...
    async def stop(self) -> None: ...
    def status(self) -> Any: ...


class EngineFactory(Protocol):
    """Builds specs and engines. Passed by reference into Ray actors, so
    implementations live at module level in an importable module."""

    def spec(self, params: Mapping[str, Any]) -> SpecLike: ...

    def engine(self, spec: Any, state_dir: Path, hdfs_driver: HdfsDriver) -> EngineLike: ...


class DefaultEngineFactory:
    """The real copy engine from ``aiologship._copy`` (imported on first use)."""

    def spec(self, params: Mapping[str, Any]) -> SpecLike:
        spec: SpecLike = CopySpec.from_params(**params)
        return spec

    def engine(self, spec: Any, state_dir: Path, hdfs_driver: HdfsDriver) -> EngineLike:
        # The engine imports pyarrow (~100 ms holding the GIL): loaded here, where
        # it runs (a worker thread or the copier actor), never at import time.
        from .._copy import CopyEngine

        engine: EngineLike = CopyEngine(spec, state_dir=state_dir, hdfs_driver=hdfs_driver)
        return engine


DEFAULT_ENGINE_FACTORY = DefaultEngineFactory()


class HostState(StrEnum):
    NEW = "new"
    STANDBY = "standby"  # another process on this host holds the lock
    LEADER = "leader"  # this process holds the lock; the engine runs here
    FAILED = "failed"  # the engine could not open or run() raised
    DONE = "done"  # stopped; lock released


def poll_interval_for(copy_interval: Any) -> float:
    """A standby process polls at least once per copy interval (bounded to
    MAX_LOCK_POLL so a long interval does not leave a copy orphaned for an hour)."""
    seconds: float | None
    if copy_interval is None:
        seconds = None
    elif hasattr(copy_interval, "total_seconds"):
        seconds = float(copy_interval.total_seconds())
    else:
        seconds = float(copy_interval)
    if not seconds or seconds <= 0:
        return MAX_LOCK_POLL
    return min(seconds, MAX_LOCK_POLL)


class HostCopier:
    """Runs ``engine`` while holding ``lock``. Drive it with :meth:`run` in a task
    group (or an asyncio task) and wait for :meth:`wait_started`."""

    kind = "host"

    def __init__(
        self,
        copy_name: str,
        engine: EngineLike,
        lock: HostLock,
        *,
        poll_interval: float = MAX_LOCK_POLL,
    ) -> None:
        self.copy_name = copy_name
        self._engine = engine
        self._lock = lock
        self._poll = poll_interval
        self._state = HostState.NEW
        self._error: BaseException | None = None
        self._started = anyio.Event()
        self._stop_requested = anyio.Event()
        self._done = anyio.Event()

    @property
    def state(self) -> HostState:
        return self._state

    @property
    def is_leader(self) -> bool:
        return self._state is HostState.LEADER

    @property
    def error(self) -> BaseException | None:
        return self._error

    def holder(self) -> str:
        """``"host pid"`` of the process that holds (or last held) the lock."""
        return self._lock.holder()

    async def run(self) -> None:
        """The whole life: take the lock (or stand by for it), open the engine, run
        it until :meth:`stop`, release the lock. Never raises (errors are logged,
        kept in :attr:`error` and raised by :meth:`wait_started`), so it can live
        in a task group next to other copies."""
        try:
            try:
                leading = await anyio.to_thread.run_sync(self._lock.try_acquire)
            except Exception as exc:
                self._fail(exc, "cannot take its host lock")
                return
            if not leading:
                self._state = HostState.STANDBY
                self._started.set()
                logger.info(
                    "HDFS copy '%s' runs in another process (%s); standing by",
                    self.copy_name,
                    self._lock.holder() or "unknown",
                )
                try:
                    got = await self._lock.acquire(
                        poll_interval=self._poll, cancel=self._stop_requested
                    )
                except Exception as exc:
                    self._fail(exc, "lost its host lock file")
                    return
                if not got:
                    return
                logger.info("HDFS copy '%s': previous holder gone, taking over", self.copy_name)
            try:
                await self._engine.open()
            except Exception as exc:
                self._fail(exc, "cannot open")
                return
            self._state = HostState.LEADER
            self._started.set()
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._engine.run)
                    await self._stop_requested.wait()
                    # engine.stop() runs the final cycle and waits for run() to return.
                    await self._engine.stop()
            except Exception as exc:
                self._fail(exc, "stopped by an error")
                return
        finally:
            self._lock.release()
            if self._state is not HostState.FAILED:
                self._state = HostState.DONE
            self._started.set()
            self._done.set()

    def _fail(self, exc: BaseException, what: str) -> None:
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]  # the engine's own error, not its task group's wrapper
        self._error = exc
        self._state = HostState.FAILED
        logger.error("HDFS copy '%s' %s: %s", self.copy_name, what, exc, exc_info=exc)

    async def wait_started(self, timeout: float | None = DEFAULT_START_TIMEOUT) -> HostState:
        """Wait until this process leads (engine open) or stands by; raise the
        engine's open error if it failed."""
        with anyio.fail_after(timeout):
            await self._started.wait()
        if self._state is HostState.FAILED and self._error is not None:
            raise self._error
        return self._state

    async def flush(self) -> Any:
        """One copy cycle now (only where this process leads)."""
        if self._state is not HostState.LEADER:
            raise CopyError(
                f"copy operation {self.copy_name!r} is not running in this process "
                f"({self._state}; lock holder: {self._lock.holder() or 'none'})"
            )
        return await self._engine.flush()

    async def stop(self, timeout: float | None = None) -> Any:
        """Final cycle (if leading), release the lock, and return the final status.
        A standby process simply stops waiting."""
        self._stop_requested.set()
        with anyio.fail_after(timeout):
            await self._done.wait()
        return self.status()

    def status(self) -> Any:
        return self._engine.status()


def placeholder_status(spec: Any, state: str, error: str | None = None) -> CopyStatus:
    """A ``CopyStatus`` for an operation whose engine is elsewhere or not there."""
    return CopyStatus(
        name=spec.copy_name,
        state=CopyState(state),
        destination=spec.destination_redacted,
        files_shipped=0,
        bytes_shipped=0,
        pending_files=0,
        last_cycle_at=None,
        next_cycle_at=None,
        last_error=error,
        consecutive_failures=0 if error is None else 1,
    )


class HostLockBackend:
    """Manager backend outside Ray: the engine runs on the manager's runtime loop
    only while this process holds the host lock for the copy_name; otherwise the
    operation stands by (status ``new``) and takes over when the holder dies."""

    def __init__(
        self,
        spec: Any,
        *,
        runtime: Any,
        state_dir: Path | None,
        hdfs_driver: HdfsDriver = HdfsDriver.AUTO,
        factory: EngineFactory = DEFAULT_ENGINE_FACTORY,
    ) -> None:
        self.spec = spec
        self._runtime = runtime
        self._state_dir = Path(state_dir) if state_dir is not None else default_state_dir()
        self._driver = hdfs_driver
        self._factory = factory
        self._copier: HostCopier | None = None

    @property
    def copier(self) -> HostCopier | None:
        return self._copier

    async def start(self, timeout: float | None = DEFAULT_START_TIMEOUT) -> None:
        engine = self._factory.engine(self.spec, self._state_dir, self._driver)
        copier = HostCopier(
            self.spec.copy_name,
            engine,
            HostLock(self._state_dir, self.spec.copy_name),
            poll_interval=poll_interval_for(self.spec.copy_interval),
        )
        self._copier = copier
        self._runtime.spawn(copier.run)
        await copier.wait_started(timeout)

    async def flush(self) -> Any:
        if self._copier is None:
            raise CopyError(f"copy operation {self.spec.copy_name!r} is not started")
        return await self._copier.flush()

    async def stop(self) -> None:
        if self._copier is not None:
            await self._copier.stop()

    async def close(self) -> None:
        """The manager closes: the engine runs in this process, so it stops
        (after its final cycle)."""
        await self.stop()

    async def release(self) -> None:
        """An engine in this process cannot outlive it: releasing it stops it."""
        await self.stop()

    @property
    def skipped(self) -> bool:
        return False

    def status(self) -> Any:
        if self._copier is None:
            return placeholder_status(self.spec, "new")
        return self._copier.status()
