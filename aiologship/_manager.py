"""``LogManager``: composes the config, the pipeline, the sinks and the copies.

Lifecycle: open -> closing -> closed. ``close()`` is idempotent, drains every
accepted record and runs a final copy cycle; ``aclose()`` / ``__aexit__`` do the
same without blocking the caller's loop. There is no reopen after close.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import sys
import threading
import traceback
import weakref
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from ._config import (
    ManagerConfig,
    Rotation,
    SinkConfig,
    default_state_dir,
    load_config,
    parse_level,
    parse_retention,
    parse_rotation,
)
from ._copiers import Backend, CoordinatedBackend, CopyGate, copy_gate, list_copies, stop_copy
from ._copy import CopySpec  # light: the engine (pyarrow) loads on first use
from ._exceptions import ClosedError, ConfigError, CopyConflictError
from ._logging._formatting import make_formatter
from ._logging._logger import Logger
from ._logging._pump import Pump
from ._logging._queue import FlushMarker, RecordQueue, SinkHandler, Stats
from ._logging._writers import FileWriter, Writer
from ._operation import CopyOperation, in_event_loop
from ._runtime import Runtime

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
        self._runtime = Runtime(f"{id(self):x}")
        self._queue = RecordQueue(
            self._config.queue_size,
            self._config.overflow,
            self._config.overflow_timeout,
            self._wake,
        )
        self._pump = Pump(self._queue)
        self._pump_exited = asyncio.Event()
        self._written_before = 0  # counters of pumps replaced after a fork
        self._errors_before = 0
        self._writers: dict[Path, tuple[Writer, int]] = {}
        self._sinks: dict[int, tuple[logging.Logger, SinkHandler]] = {}
        self._sink_ids = itertools.count(1)
        self._after_close = 0
        self._after_close_warned = False
        self._copies: dict[str, CopyOperation] = {}
        self._gate: CopyGate | None = None
        self._ensure_started()
        _live.add(self)
        try:
            for sink in self._config.sinks:
                self._attach_config_sink(sink)
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
        return self._copy_gate().enabled

    def _copy_gate(self) -> CopyGate:
        gate = self._gate
        if gate is None:
            with self._lock:
                if self._gate is None:
                    self._gate = copy_gate()
                gate = self._gate
        return gate

    @property
    def _ray_hdfs_enabled(self) -> bool:
        # Kept because existing user code reads it (the guide's troubleshooting).
        return self.hdfs_copy_enabled

    # ---------------------------------------------------------------- loggers

    def get_logger(self, name: str | None = None) -> Logger:
        """A stdlib-compatible logger at the configured level (INFO by default)."""
        std = logging.getLogger(name)
        std.setLevel(self._config.level)
        return Logger(std, self)

    def add_sink(
        self,
        logger_name: str,
        path: str | os.PathLike[str],
        *,
        level: int | str = logging.NOTSET,
        fmt: str | None = None,
        json: bool | None = None,
        rotation: int | str | timedelta | None = None,
        retention: int | None = None,
    ) -> int:
        """Attach a file sink to ``logging.getLogger(logger_name)``; returns its id."""
        self._check_open("add a sink")
        sink = SinkConfig(
            path=Path(os.fspath(path)).expanduser(),
            logger=logger_name,
            level=parse_level(level, "level"),
            format=None if json is None else ("json" if json else "text"),  # type: ignore[arg-type]
            fmt=fmt,
            rotation=parse_rotation(rotation, "rotation"),
            retention=parse_retention(retention, "retention"),
        )
        return self._attach_config_sink(sink)

    def _attach_config_sink(self, sink: SinkConfig) -> int:
        fmt_kind = sink.format if sink.format is not None else self._config.format
        formatter = make_formatter(
            json=str(fmt_kind) == "json", fmt=sink.fmt or self._config.fmt, tz=self._config.timezone
        )
        with self._lock:
            writer = self._writer_for(sink)
            handler = SinkHandler(
                self._queue, writer, formatter, sink.level, after_close=self._write_after_close
            )
            std = logging.getLogger(sink.logger or None)
            std.addHandler(handler)
            sink_id = next(self._sink_ids)
            self._sinks[sink_id] = (std, handler)
        return sink_id

    def _writer_for(self, sink: SinkConfig) -> Writer:
        return self._writer_for_path(sink.path, sink.rotation, sink.retention)

    def _writer_for_path(
        self, path: Path, rotation: Rotation | None, retention: int | None
    ) -> Writer:
        # The real path: a file reached through a symlinked folder (or a symlink)
        # is one file with one writer, or two writers would rotate it under each
        # other. Writers in other managers and processes share it through
        # FileWriter's lock.
        key = Path(os.path.realpath(path))
        with self._lock:
            try:
                return self._shared_writer(key, rotation, retention)
            except ConfigError as exc:
                if exc.key != "path" or exc.value == str(path):
                    raise
                # Name the path the user gave, and where it leads.
                raise ConfigError("path", str(path), f"{exc.reason} (real path {key})") from exc

    def _shared_writer(self, key: Path, rotation: Rotation | None, retention: int | None) -> Writer:
        entry = self._writers.get(key)
        if entry is not None:
            writer, refs = entry
            if isinstance(writer, FileWriter) and (
                writer.rotation != rotation or writer.retention != retention
            ):
                raise ConfigError(
                    "rotation",
                    rotation,
                    f"{key} is already a sink with rotation={writer.rotation}"
                    f" and retention={writer.retention}; one file has one rotation policy",
                )
            self._writers[key] = (writer, refs + 1)
            return writer
        writer = FileWriter(key, rotation=rotation, retention=retention, tz=self._config.timezone)
        self._writers[key] = (writer, 1)
        return writer

    def remove_sink(self, sink_id: int) -> None:
        """Detach a sink; its queued records are written first."""
        with self._lock:
            entry = self._sinks.pop(sink_id, None)
        if entry is None:
            raise ConfigError("sink_id", sink_id, "no such sink (already removed?)")
        std, handler = entry
        std.removeHandler(handler)
        if self._state is _State.OPEN and not self._runtime.in_runtime_thread():
            self.flush()
            # Queued records name their sink by number until the pump writes them.
            self._queue.unregister(handler)
        with self._lock:
            key = next((k for k, (w, _) in self._writers.items() if w is handler.writer), None)
            if key is None:
                return
            writer, refs = self._writers[key]
            if refs > 1:
                self._writers[key] = (writer, refs - 1)
                return
            del self._writers[key]
        if self._runtime.running and not self._runtime.in_runtime_thread():
            self._runtime.call(writer.aclose)

    # --------------------------------------------------------------- pipeline

    def _ensure_started(self) -> None:
        with self._lock:
            if self._runtime.running or self._state is _State.CLOSED:
                return
            self._pump_exited = asyncio.Event()
            self._runtime.start(self._run_pump)

    async def _run_pump(self) -> None:
        exited = self._pump_exited
        try:
            await self._pump.run()
        finally:
            exited.set()

    def _wake(self) -> None:
        # Called by the first record after the pump went to sleep (any thread).
        if not self._runtime.running:
            self._ensure_started()
        self._runtime.call_soon_threadsafe(self._pump.wake)

    def stats(self) -> Stats:
        pump, queue = self._pump, self._queue
        queued = len(queue.items)
        written = pump.written + self._written_before
        errors = pump.write_errors + self._errors_before
        return Stats(
            accepted=written + errors + queued + pump.in_flight + queue.evicted,
            written=written,
            dropped=queue.dropped,
            queued=queued,
            write_errors=errors,
            after_close=self._after_close,
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record accepted so far is written; False on timeout."""
        if self._state is _State.CLOSED or not self._runtime.running:
            return True
        marker = FlushMarker()
        self._queue.items.append(marker)
        self._queue.request_wake()
        return marker.done.wait(timeout)

    async def _drain_on_runtime(self) -> None:
        marker = FlushMarker(asyncio.Event())
        self._queue.items.append(marker)
        self._pump.wake()
        assert marker.on_loop is not None
        await marker.on_loop.wait()

    async def aflush(self, timeout: float | None = None) -> bool:
        """``flush()`` for async code: waits in a worker thread, not on the loop."""
        return await anyio.to_thread.run_sync(self.flush, timeout, abandon_on_cancel=True)

    def _write_after_close(self, handler: SinkHandler, record: logging.LogRecord) -> None:
        # The slow synchronous path: formats and appends in the caller's thread.
        handler.writer.write_sync([handler.format(record) + "\n"])
        self._after_close += 1
        if not self._after_close_warned:
            self._after_close_warned = True
            _log.warning(
                "a record was logged after LogManager.close(); it was written synchronously "
                "(slow path); close the manager after the last log call"
            )

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
    ) -> CopyOperation:
        """Start copying files matched by ``path_patterns`` to ``hdfs_destination``
        every ``copy_interval`` seconds (``None``: once).

        Returns a ``CopyOperation`` at once; in async code ``await`` it to wait until
        the operation has started. Starting a running ``copy_name`` again with the
        same parameters returns its handle; with others raises ``CopyConflictError``.
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
        )
        with self._lock:
            existing = self._copies.get(spec.copy_name)
            if existing is not None:
                differences = existing.spec.differences(spec)
                if differences:
                    raise CopyConflictError(spec.copy_name, differences)
                return existing
            backend, runtime = self._copy_backend(spec)
            op = CopyOperation(spec, backend, runtime)
            self._copies[spec.copy_name] = op
        op._begin(wait=not in_event_loop())
        return op

    def _copy_backend(self, spec: Any) -> tuple[Backend, Runtime]:
        state_dir = self._config.state_dir or default_state_dir()
        backend = CoordinatedBackend(
            spec,
            gate=self._copy_gate,
            runtime=self._runtime,
            state_dir=state_dir,
            hdfs_driver=self._config.hdfs_driver,
        )
        return backend, self._runtime

    def list_hdfs_copy_operations(self) -> list[CopyStatus]:
        """The status of each copy operation: this manager's, and in a Ray cluster
        every copier actor's, from any node (one bounded round trip to each)."""
        with self._lock:
            ops = list(self._copies.values())
        statuses = {op.name: op.status() for op in ops}
        if self._copy_gate().role != "standalone":
            for status in list_copies():
                if statuses.get(status.name) is None or str(statuses[status.name].state) in (
                    "skipped",
                    "new",
                ):
                    statuses[status.name] = status
        return list(statuses.values())

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
        with self._lock:
            op = self._copies.pop(copy_name, None)
        if op is not None and not _skipped(op):
            op.stop()
            return None
        self._stop_in_cluster(copy_name, found_here=op is not None)
        return None

    async def astop_hdfs_copy(self, copy_name: str) -> None:
        with self._lock:
            op = self._copies.pop(copy_name, None)
        if op is not None and not _skipped(op):
            await op.astop()
            return
        await anyio.to_thread.run_sync(self._stop_in_cluster, copy_name, op is not None)

    def _stop_in_cluster(self, copy_name: str, found_here: bool) -> None:
        if self._copy_gate().role != "standalone":
            stop_copy(copy_name)
            return
        if not found_here:
            raise ConfigError("copy_name", copy_name, "no copy operation of that name")

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
        await self._drain_on_runtime()
        with self._lock:
            ops = list(self._copies.values())
            self._copies.clear()
        async with anyio.create_task_group() as tg:
            for op in ops:
                tg.start_soon(_stop_quietly, op)
        # Records logged during the final cycles are still queued; from here on a new
        # record takes the synchronous path, and the pump drains what was accepted.
        self._queue.closed = True
        self._queue.notify_space()
        self._pump.request_stop()
        await self._pump_exited.wait()
        for writer, _ in list(self._writers.values()):
            await writer.aclose()

    def _finish_close(self) -> None:
        self._queue.closed = True
        # A record that passed the closed check just before it flipped is still here.
        leftovers = []
        while self._queue.items:
            item = self._queue.items.popleft()
            if isinstance(item, FlushMarker):
                item.set()
            else:
                leftovers.append(item)
        for item in leftovers:
            unpacked = self._queue.unpack(item)
            if unpacked is None:  # its sink was removed meanwhile
                self._pump.write_errors += 1
                continue
            handler, record = unpacked
            try:
                handler.writer.write_sync([handler.format(record) + "\n"])
                self._pump.written += 1
            except Exception:
                self._pump.write_errors += 1
                handler.handleError(record)
        with self._lock:
            self._state = _State.CLOSED
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
        """Only the forking thread exists here: forget the parent's threads, queue
        and descriptors; the first record starts a runtime of the child's own. That
        new thread imports nothing (see ``_runtime``), so no import lock the fork
        copied mid-import can stop it."""
        self._lock = threading.RLock()
        self._runtime.reset_after_fork()
        self._queue.reset_after_fork()
        self._written_before += self._pump.written
        self._errors_before += self._pump.write_errors
        self._pump = Pump(self._queue)
        for writer, _ in self._writers.values():
            writer.forget()
        # The parent keeps running its copies; a child starts its own if it asks.
        self._copies = {}
        self._gate = None


async def _stop_quietly(op: CopyOperation) -> None:
    try:
        await op._backend.close()
    except Exception:
        _log.exception("final copy cycle of %r failed", op.name)


def _skipped(op: CopyOperation) -> bool:
    return op._backend.skipped


# ------------------------------------------------------ process-wide hooks

_live: weakref.WeakSet[LogManager] = weakref.WeakSet()


def _drain_all_at_exit() -> None:
    for manager in list(_live):
        try:
            manager.close()
        except Exception:
            sys.stderr.write("--- aiologship: draining a LogManager at exit failed ---\n")
            traceback.print_exc(file=sys.stderr)


def _after_fork_in_child() -> None:
    for manager in list(_live):
        manager._after_fork_in_child()


# Runs before the interpreter joins threads and shuts executors down, so the pump
# and aiofiles' executor still work while we drain (atexit would be too late).
# concurrent.futures.thread registers its own exit hook on import; importing it
# first puts ours after it in the list, and the list runs in reverse.
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
