"""``LogManager``: composes the config, the pipeline, the sinks and the copies.

Parts, each with one job: ``Pipeline`` (queue, pump, runtime, stats) and
``FileSinks`` (handlers and writers by real path) in ``_logging``, and
``CopyRegistry`` (copy operations by name, the role gate). The manager keeps the
lifecycle and the process-wide hooks (exit drain, fork).

Lifecycle: open -> closing -> closed. ``close()`` is idempotent, drains every
accepted record and runs a final copy cycle; ``aclose()`` / ``__aexit__`` do the
same without blocking the caller's loop. There is no reopen after close.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Iterable, Mapping
from datetime import timedelta
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from ._config import (
    ManagerConfig,
    SinkConfig,
    load_config,
)
from ._copy import CopySpec  # light: the engine (pyarrow) loads on first use
from ._copy_registry import CopyRegistry
from ._exceptions import ClosedError
from ._logging._capture import ProcessCapture
from ._logging._logger import Logger
from ._logging._pipeline import Pipeline, after_close_total
from ._logging._queue import Stats
from ._logging._sinks import FileSinks
from ._logging._sources import hold_sources
from ._metrics import (
    PipelineFigures,
    Sample,
    copy_samples,
    pipeline_samples,
    process_figures,
    push_interval,
    reporter,
    retire,
)
from ._operation import CopyOperation, in_event_loop

if TYPE_CHECKING:
    from ._copy import CopyStatus

_log = logging.getLogger("aiologship")
_CLOSE_TIMEOUT = 60.0


class _State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class LogManager:
    """Loggers with async file sinks, and periodic copies of log files.

    ``LogManager(config_path=None, timezone=None, **overrides)``; settings merge as
    YAML file < keyword arguments < ``AIOLOGSHIP_*`` environment variables.
    Use it as ``with LogManager() as lm:`` or ``async with LogManager() as lm:``,
    or call ``close()`` / ``await aclose()``; at interpreter exit it drains itself.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str] | None = None,
        timezone: str | None = None,
        **overrides: Any,
    ) -> None:
        self._config: ManagerConfig = load_config(config_path, {"timezone": timezone, **overrides})
        self._lock = threading.RLock()
        self._state = _State.OPEN
        self._pipeline = Pipeline(self._config, f"{id(self):x}")
        # The pump's runtime also hosts the copy operations.
        self._runtime = self._pipeline.runtime
        # The one seam AsyncFileHandler (``_stdlib``) uses: a writer and the pipeline.
        self._sinks = FileSinks(self._config, self._pipeline)
        self._copies = CopyRegistry(self._config, self._runtime)
        # Whole-process mode (``capture``): foreign StreamHandlers replaced until close.
        self._capture = ProcessCapture(self._config, self._sinks)
        self._pipeline.start()
        # Automatic fields (Ray ids, trace ids) while this manager is open.
        self._sources = hold_sources(self._config)
        self._ray_push: anyio.CancelScope | None = None
        with _live_lock:
            _live.add(self)
        if "ray" in sys.modules:  # a Ray process (or one about to be): see _push_to_ray
            self._runtime.submit(self._push_to_ray)
        try:
            for sink in self._config.sinks:
                self._sinks.attach(sink)
            self._capture.start()
            for params in self._config.copies:
                self.start_hdfs_copy(**params)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- properties

    @property
    def config(self) -> ManagerConfig:
        return self._config

    @property
    def closed(self) -> bool:
        return self._state is _State.CLOSED

    @property
    def hdfs_copy_enabled(self) -> bool:
        """False on a Ray worker node or with ``RAY_DISABLE_HDFS_COPY=true``.

        Decided once per manager (the first time in a process it may ask Ray's GCS
        which node carries ``node:__internal_head__``) and logged:
        ``Ray head node detected: HDFS copy enabled`` or
        ``Ray worker node detected: HDFS copy disabled``.
        """
        return self._copies.gate().enabled

    @property
    def _ray_hdfs_enabled(self) -> bool:
        # Kept because existing user code reads it (the guide's troubleshooting).
        return self.hdfs_copy_enabled

    # ------------------------------------------------------- loggers and sinks

    def get_logger(self, name: str | None = None) -> Logger:
        """A stdlib-compatible logger at the configured level (INFO by default)."""
        std = logging.getLogger(name)
        std.setLevel(self._config.level)
        return Logger(std, self)

    def add_sink(
        self,
        logger_name: str,
        path: str | os.PathLike[str] | IO[str] | int,
        *,
        level: int | str = logging.NOTSET,
        fmt: str | None = None,
        json: bool | None = None,
        rotation: int | str | timedelta | None = None,
        retention: int | None = None,
        color: bool | None = None,
    ) -> int:
        """Attach a file or stream sink to ``logging.getLogger(logger_name)``; returns its id."""
        self._check_open("add a sink")
        sink = SinkConfig.from_call(
            logger_name,
            path,
            level=level,
            fmt=fmt,
            json=json,
            rotation=rotation,
            retention=retention,
            color=color,
        )
        return self._sinks.attach(sink)

    def remove_sink(self, sink_id: int) -> None:
        """Detach a sink; its queued records are written first."""
        self._sinks.remove(sink_id, drain=self._state is _State.OPEN)

    # --------------------------------------------------------------- pipeline

    def stats(self) -> Stats:
        return self._pipeline.stats()

    def _figures(self) -> PipelineFigures:
        stats = self._pipeline.stats()
        queue_full, evicted, stream = self._pipeline.drops()
        return PipelineFigures(
            accepted=stats.accepted,
            written=stats.written,
            dropped_queue_full=queue_full,
            dropped_evicted=evicted,
            dropped_stream=stream,
            write_errors=stats.write_errors,
            queued=stats.queued,
            capacity=self._config.queue_size,
        )

    async def _push_to_ray(self) -> None:
        """On the runtime loop until close: this process's figures to Ray's
        metrics agent, while Ray is initialized here (``aiologship.metrics``)."""
        if self._state is not _State.OPEN:
            return  # started after the close began (it runs on the same loop)
        with anyio.CancelScope() as scope:
            self._ray_push = scope
            while True:
                await anyio.sleep(push_interval())
                self._push_once()

    @staticmethod
    def _push_once() -> None:
        try:
            reporter.push(process_samples())
        except Exception:  # a metric must never take logging down
            _log.debug("pushing metrics to Ray failed", exc_info=True)

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record accepted so far is written; False on timeout."""
        return self._pipeline.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for async code: waits in a worker thread, not on the loop."""
        return await anyio.to_thread.run_sync(self.flush, timeout, abandon_on_cancel=True)

    # ------------------------------------------------------------------ copies

    def start_hdfs_copy(
        self,
        copy_name: str,
        path_patterns: Iterable[str] | str,
        hdfs_destination: str,
        root_dir: str | os.PathLike[str] | None = None,
        copy_interval: float | timedelta | None = 60,
        create_dest_dirs: bool = True,
        preserve_structure: bool = False,
        max_retries: int = 3,
        retry_delay: float | timedelta = 5,
        *,
        scope: str = "cluster",
        compression: str | None = None,
        rollup: bool | Mapping[str, Any] | None = None,
    ) -> CopyOperation:
        """Start copying files matched by ``path_patterns`` to ``hdfs_destination``
        every ``copy_interval`` seconds (``None``: once).

        Returns a ``CopyOperation`` at once; in async code ``await`` it to wait until
        the operation has started. Starting a running ``copy_name`` again with the
        same parameters returns its handle; with others raises ``CopyConflictError``.
        ``compression="gzip"`` or ``"zstd"`` ships each file compressed, as
        ``NAME.gz`` / ``NAME.zst`` (a member or frame per cycle's new bytes).
        ``hdfs_destination`` may hold template fields (``{date:%Y/%m/%d}``,
        ``{hostname}``, ``{node_id}``, ``{copy_name}``); ``{date}`` is the day a
        file was first seen, in this manager's ``timezone``.
        ``rollup=True`` or ``{"size": "256 MiB", "interval": "1 h", "settle": "1 min"}``
        (either limit or both) concatenates sealed files (not modified for
        ``settle``) into one roll file per partition and roll size or interval,
        instead of one destination file per source; live files wait until sealed.
        """
        self._check_open("start a copy")
        spec = CopySpec.from_params(
            copy_name=copy_name,
            path_patterns=path_patterns,
            hdfs_destination=hdfs_destination,
            root_dir=root_dir,
            copy_interval=copy_interval,
            create_dest_dirs=create_dest_dirs,
            preserve_structure=preserve_structure,
            max_retries=max_retries,
            retry_delay=retry_delay,
            scope=scope,
            compression=compression,
            rollup=rollup,
            timezone=self._config.timezone,
        )
        return self._copies.start(spec)

    def list_hdfs_copy_operations(self) -> list[CopyStatus]:
        """The status of each copy operation: this manager's, and in a Ray cluster
        every copier actor's, from any node (one bounded round trip to each)."""
        return self._copies.statuses()

    async def alist_hdfs_copy_operations(self) -> list[CopyStatus]:
        """``list_hdfs_copy_operations`` for async code (Ray calls in a thread)."""
        return await anyio.to_thread.run_sync(self.list_hdfs_copy_operations)

    def stop_hdfs_copy(self, copy_name: str) -> Any:
        """Run a final copy cycle, then stop the operation.

        Blocks until done in sync code; on a running event loop it returns an
        awaitable instead (``await lm.stop_hdfs_copy(name)``). In a Ray cluster it
        also stops a copier another process started.
        """
        if in_event_loop():
            return self.astop_hdfs_copy(copy_name)
        self._copies.stop(copy_name)
        return None

    async def astop_hdfs_copy(self, copy_name: str) -> None:
        await self._copies.astop(copy_name)

    # --------------------------------------------------------------- lifecycle

    def _check_open(self, action: str) -> None:
        if self._state is not _State.OPEN:
            raise ClosedError(f"cannot {action}: the LogManager is {self._state.value}")

    def close(self) -> None:
        """Stop copies after a final cycle, drain every record, stop the thread."""
        if not self._begin_close():
            return
        try:
            if self._runtime.running:
                self._runtime.call(self._shutdown_on_runtime)
                self._runtime.stop(_CLOSE_TIMEOUT)
        finally:
            self._finish_close()

    async def aclose(self) -> None:
        """``close()`` for async code: the caller's loop keeps running meanwhile."""
        if not self._begin_close():
            return
        try:
            if self._runtime.running:
                await self._runtime.acall(self._shutdown_on_runtime)
                await anyio.to_thread.run_sync(self._runtime.stop, _CLOSE_TIMEOUT)
        finally:
            await anyio.to_thread.run_sync(self._finish_close)

    def _begin_close(self) -> bool:
        with self._lock:
            if self._state is not _State.OPEN:
                return False
            self._state = _State.CLOSING
        return True

    async def _shutdown_on_runtime(self) -> None:
        # 1. Every record accepted so far reaches its file, 2. the final copy cycles
        # ship those files, 3. the pump drains what the cycles themselves logged.
        await self._pipeline.drain()
        await self._copies.close_all()
        await self._pipeline.stop_pump()
        await self._sinks.aclose_writers()
        if self._ray_push is not None:
            self._ray_push.cancel()
            self._push_once()

    def _finish_close(self) -> None:
        self._sources.release()
        self._pipeline.finish()
        # After the last record went out through them: put the replaced handlers back.
        self._capture.restore()
        with self._lock:
            self._state = _State.CLOSED
        with _live_lock:
            # Its counts stay in the process's metrics, never counted twice.
            retire(self._figures())
            _live.discard(self)

    def __enter__(self) -> LogManager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> LogManager:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return (
            f"<LogManager {self._state.value} sinks={len(self._sinks)} copies={len(self._copies)}>"
        )

    # -------------------------------------------------------------------- fork

    def _after_fork_in_child(self) -> None:
        """Only the forking thread exists here: forget the parent's threads, queue,
        descriptors and copies; the first record starts a runtime of the child's
        own. That new thread imports nothing (see ``_runtime``), so no import lock
        the fork copied mid-import can stop it."""
        self._lock = threading.RLock()
        self._ray_push = None  # the parent's task; the child pushes nothing
        self._pipeline.reset_after_fork()
        self._sinks.reset_after_fork()
        self._copies.reset_after_fork()


# ------------------------------------------------------ process-wide hooks

_live: weakref.WeakSet[LogManager] = weakref.WeakSet()
_live_lock = threading.Lock()


def process_samples() -> list[Sample]:
    """The metrics of this process (``aiologship.metrics``): the pipelines of
    its open managers (and what closed ones counted), and the copies whose
    engine runs here (a Ray copier actor reports its own)."""
    with _live_lock:
        managers = list(_live)
        figures = process_figures(m._figures() for m in managers)
    statuses: list[CopyStatus] = []
    for manager in managers:
        statuses += manager._copies.local_statuses()
    return pipeline_samples(figures, after_close_total()) + copy_samples(statuses)


def _drain_all_at_exit() -> None:
    for manager in list(_live):
        try:
            manager.close()
        except Exception:
            sys.stderr.write("--- aiologship: draining a LogManager at exit failed ---\n")
            traceback.print_exc(file=sys.stderr)


def _after_fork_in_child() -> None:
    global _live_lock
    _live_lock = threading.Lock()  # the fork may have copied it held
    for manager in list(_live):
        manager._after_fork_in_child()


# Runs before the interpreter joins threads and shuts executors down, so the pump
# and the worker threads still work while we drain (atexit would be too late).
# concurrent.futures.thread registers its own exit hook on import; importing it
# first puts ours after it in the list, and the list runs in reverse. Python 3.12
# starts no new thread here (3.11 and 3.13 do): writers then write in place.
import concurrent.futures.thread  # noqa: E402, F401

_register_exit = getattr(threading, "_register_atexit", None)
if _register_exit is not None:
    _register_exit(_drain_all_at_exit)
else:  # pragma: no cover - other interpreters
    import atexit

    atexit.register(_drain_all_at_exit)
os.register_at_fork(after_in_child=_after_fork_in_child)


_default_lock = threading.Lock()
_default_manager: LogManager | None = None


def default_manager() -> LogManager:
    """The process-wide manager behind handlers made by ``logging.config`` (lazy)."""
    global _default_manager
    with _default_lock:
        if _default_manager is None or _default_manager.closed:
            _default_manager = LogManager()
        return _default_manager
