"""The caller's side of the pipeline: a bounded queue and the handler that feeds it.

``SinkHandler.emit`` is the hot path: a length check, one ``deque.append`` and,
only when the pump is asleep, one wake-up call. It takes no lock (``handle`` is
overridden to skip ``logging.Handler``'s per-record lock: the deque is already
thread-safe), does no I/O and never raises.

``emit`` also merges the caller's context (``_context``) into a record made by a
plain stdlib logger, and snapshots its mutable ``extra=`` values, so it is
formatted later as it was at the call.

A call made through ``aiologship.Logger`` whose record would reach only
aiologship sinks (``direct_sinks``) skips the ``LogRecord`` altogether:
``put_captured`` queues the flat tuple of ``_records.capture`` and the pump builds
the record. Same queue, same order, same back-pressure.

Overflow is the slow path, under a lock, and every dropped record is counted.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from .._config import Overflow
from . import _records
from ._accel import speedups
from ._context import add_to_record
from ._formatting import format_filling, needs_of
from ._records import all_immutable, build, capture, snapshot_extras

if TYPE_CHECKING:
    from ._writers import Writer

_yield_gil = time.sleep
_DEFAULT_FORMATTER = logging.Formatter()


class FlushMarker:
    """Put in the queue by ``flush()``: set once every record before it is written.

    ``on_loop`` is for waiters on the runtime loop itself, which must not block it.
    """

    __slots__ = ("done", "on_loop")

    def __init__(self, on_loop: asyncio.Event | None = None) -> None:
        self.done = threading.Event()
        self.on_loop = on_loop

    def set(self) -> None:
        self.done.set()
        if self.on_loop is not None:
            self.on_loop.set()


# A queued item: (handler, record); a call captured by ``_records.capture``, whose
# item[0] is the handler's index in ``RecordQueue.sinks``; or a FlushMarker.
Item = tuple[Any, ...] | FlushMarker


class Stats(NamedTuple):
    """Counters of one manager's pipeline (``LogManager.stats()``)."""

    accepted: int  # records that entered the queue
    written: int  # handed to the file (or stream) successfully
    dropped: int  # refused on a full queue, or evicted by drop_oldest
    queued: int  # waiting in the queue now
    write_errors: int  # records whose write or format failed (reported on stderr)
    after_close: int  # written on the synchronous path after close()


class RecordQueue:
    """A bounded FIFO of ``(handler, record)`` shared by every handler of a manager."""

    def __init__(
        self,
        maxsize: int,
        overflow: Overflow,
        overflow_timeout: float,
        wake: Callable[[], None],
    ) -> None:
        self.items: deque[Item] = deque()
        self.maxsize = maxsize
        self.overflow = overflow
        self.overflow_timeout = overflow_timeout
        self._wake = wake
        # True while a wake-up is scheduled or the pump is awake (or lingering); the
        # pump clears it, then looks at the queue once more, before it sleeps.
        self.wake_pending = False
        # True while the pump lets a trickle gather (Pump.run): a queue past half
        # full, or full, wakes it at once.
        self.lingering = False
        self.closed = False
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._waiters = 0
        self.dropped = 0
        self.evicted = 0
        self.drops_by_handler: dict[SinkHandler, int] = {}
        # Captured calls name their handler by number, so the queued tuple holds no
        # reference the garbage collector would have to follow (see capture).
        self.sinks: dict[int, SinkHandler] = {}
        self._sink_numbers = itertools.count()
        # What a captured call must collect of its caller's context for the
        # formats of these sinks (_records.capture's ``needs``).
        self.needs = 0
        self._needs_lock = threading.Lock()  # two threads changing sinks at once

    def register(self, handler: SinkHandler) -> int:
        index = next(self._sink_numbers)
        self.sinks[index] = handler
        self.update_needs()
        return index

    def unregister(self, handler: SinkHandler) -> None:
        if self.sinks.get(handler.index) is handler:
            del self.sinks[handler.index]
            self.update_needs()

    def update_needs(self) -> None:
        """After a sink came, went or changed its formatter. A call captured just
        before a format that prints more (``%(lineno)d`` where none did) prints
        what the stdlib prints for a context it does not collect: line 0,
        ``None`` for a thread name."""
        with self._needs_lock:
            needs = 0
            for sink in list(self.sinks.values()):
                needs |= sink.needs
            self.needs = needs

    def owner(self, item: tuple[Any, ...]) -> SinkHandler | None:
        """The sink of a queued item; None for a captured call whose sink was removed.
        (The pump does the same inline: it runs per record.)"""
        head = item[0]
        return self.sinks.get(head) if type(head) is int else head

    def unpack(self, item: tuple[Any, ...]) -> tuple[SinkHandler, logging.LogRecord] | None:
        """``(handler, record)`` of a queued item; None for a removed sink."""
        handler = self.owner(item)
        if handler is None:
            return None
        return handler, build(item) if type(item[0]) is int else item[1]

    def request_wake(self) -> None:
        self.wake_pending = True
        self._wake()

    def wake_lingering(self) -> None:
        """The queue is filling while the pump lets records gather: wake it now."""
        if self.lingering:
            self.lingering = False
            self._wake()

    def put_overflow(self, item: tuple[SinkHandler, logging.LogRecord]) -> None:
        """The queue looked full: wait (threads only), evict or drop, and count it."""
        self.wake_lingering()
        policy = self.overflow
        if policy is Overflow.WAIT and asyncio._get_running_loop() is None:
            deadline = time.monotonic() + self.overflow_timeout
            with self._space:
                self._waiters += 1
                try:
                    while len(self.items) >= self.maxsize:
                        if self.closed:
                            break
                        remaining = deadline - time.monotonic()
                        if remaining <= 0 or not self._space.wait(remaining):
                            break
                finally:
                    self._waiters -= 1
                if len(self.items) < self.maxsize or self.closed:
                    self.items.append(item)
                    return
                self._count_drop(item[0])
            return
        with self._lock:
            if len(self.items) < self.maxsize:
                self.items.append(item)
            elif policy is Overflow.DROP_OLDEST:
                oldest = self._pop_oldest_record()
                if oldest is not None:
                    owner = self.owner(oldest)
                    if owner is not None:
                        self._count_drop(owner)
                    else:  # its sink was removed meanwhile: counted, no file to note it in
                        self.dropped += 1
                    self.evicted += 1
                self.items.append(item)
            else:
                # drop_newest, or wait on a thread that runs an event loop: a loop
                # must never block, so it drops instead.
                self._count_drop(item[0])

    def _pop_oldest_record(self) -> tuple[Any, ...] | None:
        markers: list[FlushMarker] = []
        found: tuple[Any, ...] | None = None
        while self.items:
            head = self.items.popleft()
            if isinstance(head, FlushMarker):
                markers.append(head)
                continue
            found = head
            break
        self.items.extendleft(reversed(markers))
        return found

    def _count_drop(self, handler: SinkHandler) -> None:
        self.dropped += 1
        self.drops_by_handler[handler] = self.drops_by_handler.get(handler, 0) + 1

    def take_drop_report(self) -> dict[SinkHandler, int]:
        with self._lock:
            report, self.drops_by_handler = self.drops_by_handler, {}
        return report

    def notify_space(self) -> None:
        if self._waiters:
            with self._space:
                self._space.notify_all()

    def reset_after_fork(self) -> None:
        # The parent writes what was queued at fork time; the child starts empty.
        self.items.clear()
        self.wake_pending = False
        self.lingering = False
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._waiters = 0


class SinkHandler(logging.Handler):
    """A ``logging.Handler`` whose ``emit`` only enqueues; the pump formats and writes.

    Also usable from ``logging.config.dictConfig``: see ``aiologship.AsyncFileHandler``.
    """

    def __init__(
        self,
        queue: RecordQueue,
        writer: Writer,
        formatter: logging.Formatter,
        level: int = logging.NOTSET,
        *,
        after_close: Callable[[SinkHandler, logging.LogRecord], None],
    ) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self.writer = writer
        self._queue = queue
        self._items = queue.items
        self._maxsize = queue.maxsize
        self._high_water = queue.maxsize // 2
        self._after_close = after_close
        self.index = queue.register(self)

    # The formatter is a property so that every way of setting it (setFormatter,
    # dictConfig, a plain assignment) updates what callers capture for it.
    needs = _records.EVERYTHING

    @property
    def formatter(self) -> logging.Formatter | None:
        return self._formatter

    @formatter.setter
    def formatter(self, formatter: logging.Formatter | None) -> None:
        self._formatter = formatter
        self.needs = needs_of(formatter)
        queue: RecordQueue | None = self.__dict__.get("_queue")
        if queue is not None:
            queue.update_needs()

    def handle(self, record: logging.LogRecord) -> bool:
        if self.filters:
            result: Any = self.filter(record)
            if not result:
                return False
            if isinstance(result, logging.LogRecord):  # 3.12+: a filter may replace it
                record = result
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # A record from a plain stdlib logger (uvicorn's, a library's) gets the
            # caller's context here, in the caller's thread; one from
            # aiologship.Logger already has it (add_to_record keeps what is there).
            d = record.__dict__
            add_to_record(d)
            snapshot_extras(d)
            args = record.args
            if args:
                values = args.values() if isinstance(args, dict) else args
                if not all_immutable(values):
                    # A mutable argument could change before the pump formats it.
                    record.msg = record.getMessage()
                    record.args = None
            queue = self._queue
            if queue.closed:
                self._after_close(self, record)
                return
            queued = len(self._items)
            if queued < self._high_water:
                self._items.append((self, record))
            elif queued < self._maxsize:
                self._items.append((self, record))
                if queue.lingering:
                    queue.wake_lingering()
                if not queued & 63:
                    # Soft back-pressure: the pump is falling behind (usually starved
                    # of the GIL by a busy producer), so every 64th record hands it
                    # the GIL. Not a wait, not a lock: a loop thread gets the GIL back
                    # at the pump's next yield (~0.5 ms).
                    _yield_gil(0)
            else:
                queue.put_overflow((self, record))
            if not queue.wake_pending:
                queue.request_wake()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)

    def format(self, record: logging.LogRecord) -> str:
        # A context field of the format that this record lacks prints as "-".
        return format_filling(self.formatter or _DEFAULT_FORMATTER, record)

    def put_captured(self, item: tuple[Any, ...]) -> None:
        """``emit`` for a call captured by ``_records.capture`` (item[0] is
        ``self.index``): the same queue, back-pressure and wake-up, without a
        ``LogRecord`` until the pump formats it."""
        try:
            queue = self._queue
            queued = len(self._items)
            if queue.closed or queued >= self._maxsize:
                # After close, or overflow: the record path handles both.
                self.emit(build(item))
                return
            self._items.append(item)
            if queued >= self._high_water:
                if queue.lingering:
                    queue.wake_lingering()
                if not queued & 63:
                    _yield_gil(0)  # soft back-pressure, as in emit
            if not queue.wake_pending:
                queue.request_wake()
        except RecursionError:
            raise
        except Exception:
            self.handleError(build(item))

    def _put_failed(self, item: tuple[Any, ...]) -> None:
        """``put_captured``'s error report, for the C version's failures."""
        self.handleError(build(item))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.writer.name} ({logging.getLevelName(self.level)})>"


_direct: dict[type, bool] = {}


def _classify(cls: type) -> bool:
    """Whether handlers of ``cls`` queue exactly as ``SinkHandler`` does (cached)."""
    plain = _direct[cls] = issubclass(cls, SinkHandler) and (
        cls.handle is SinkHandler.handle and cls.emit is SinkHandler.emit
    )
    return plain


def direct_sinks(logger: logging.Logger, level: int) -> list[SinkHandler] | None:
    """The aiologship sinks that ``logger.handle`` would hand a record of ``level``
    to, when nothing else would see it: no logger filter, no handler filter, no
    other kind of handler anywhere up the propagation chain (pytest's caplog, a
    StreamHandler...). ``None`` when the record must take the stdlib path."""
    if logger.disabled or logger.filters:
        return None
    sinks: list[SinkHandler] = []
    found = False
    c: logging.Logger | None = logger
    while c is not None:
        for h in c.handlers:
            plain = _direct.get(type(h))
            if plain is None:
                plain = _classify(type(h))
            if not plain or h.filters:
                return None
            found = True
            if level >= h.level:
                sinks.append(h)  # type: ignore[arg-type]
        if not c.propagate:
            break
        c = c.parent
    return sinks if found else None  # no handler at all: stdlib's lastResort


_getframe = sys._getframe


def py_emit_captured(
    logger: logging.Logger,
    level: int,
    msg: str,
    args: tuple[Any, ...],
    fields: tuple[tuple[str, Any], ...],
    extra: dict[str, Any] | None,
) -> bool:
    """Queue a log call of ``aiologship.Logger._emit`` as a captured tuple
    (``_records.capture``) for each sink of ``direct_sinks``. False when the call
    must take the record path: a mutable argument, or something up the chain that
    needs a ``LogRecord``. ``extra`` is a dict of plain values (``_plain_extra``).

    ``_speedups.emit_captured`` is this function in C, used when it was built
    (``emit_captured``, below); ``tests/logging/test_speedups.py`` holds the two
    to the same lines.
    """
    if args and not all_immutable(args):
        return False
    sinks = direct_sinks(logger, level)
    if sinks is None:
        return False
    if sinks:
        if extra:
            fields = fields + tuple(extra.items())
        first = sinks[0]
        needs = first._queue.needs
        for sink in sinks[1:]:
            needs |= sink._queue.needs  # another manager's sinks
        # The caller: above this function, _emit and the level method.
        frame = _getframe(3)
        item = capture(first.index, logger, level, msg, args, frame, fields or None, needs)
        first.put_captured(item)
        for sink in sinks[1:]:
            sink.put_captured((sink.index, *item[1:]))
    return True


if speedups is not None:
    speedups.configure(_direct, _classify, capture, _records._time)
# What aiologship.Logger calls: the C version when there is one.
emit_captured = speedups.emit_captured if speedups is not None else py_emit_captured
