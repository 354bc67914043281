"""The consumer side: drain the queue in batches, format, write one batch per file.

Runs as a task on the manager's runtime loop (never on a caller's loop). Order is
the queue's order; a record is counted ``written`` only once its writer returned.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
import traceback
from typing import TYPE_CHECKING, Any

import anyio.lowlevel

from ._formatting import captured_formatter
from ._queue import FlushMarker, RecordQueue, SinkHandler
from ._records import build

if TYPE_CHECKING:
    from ._writers import Writer

MAX_BATCH = 4096
YIELD_MASK = 511  # yield the GIL every 512 formatted records (~1 ms of work)
# After a drain of fewer than LINGER_BELOW records (a trickle, not a burst), the
# pump lets records gather for LINGER_SECONDS before it drains again, instead of
# waking for every few records: at 5,000 records/s from a 1 ms-paced producer,
# that cut the process's CPU for logging by about half and the threads'
# context switches by about two thirds (benchmarks/, stall-stdout). A record
# waits at most that long more before its write; flush(), close and a queue past
# half full end the wait at once.
LINGER_SECONDS = 0.005
LINGER_BELOW = 256
IDLE_WAKE_SECONDS = 1.0  # a lost wake-up (should not happen) costs at most this much latency

_log = logging.getLogger("aiologship")
_DEFAULT_FORMATTER = logging.Formatter()
_yield_gil = time.sleep  # sleep(0) releases the GIL and lets a waiting thread take it


class Pump:
    def __init__(self, queue: RecordQueue) -> None:
        self._queue = queue
        self._woken = False  # wake() was called since the pump last looked
        self._waiter: asyncio.Future[None] | None = None
        self._stopping = False
        self.written = 0
        self.write_errors = 0
        self.in_flight = 0
        self._episode_drops = 0

    def wake(self) -> None:
        """Called on the runtime loop (through ``call_soon_threadsafe``)."""
        self._woken = True
        if self._waiter is not None:
            _resolve(self._waiter)

    def request_stop(self) -> None:
        self._stopping = True
        self.wake()

    async def _wait(self, timeout: float) -> None:
        """Until ``wake()`` or ``timeout``. A bare future and a timer: the pump
        waits once per drain, and an anyio cancel scope whose deadline passes
        (every linger) cost a third of the pump's CPU at 5,000 records/s."""
        if self._woken:
            return
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def run(self) -> None:
        queue = self._queue
        items = queue.items
        try:
            while True:
                if not items and not self._stopping:
                    # Say "asleep", then look once more: a record queued after
                    # this look sees wake_pending False and wakes us.
                    queue.wake_pending = False
                    if not items:
                        await self._wait(IDLE_WAKE_SECONDS)
                    queue.wake_pending = True
                self._woken = False
                drained = 0
                while items:
                    drained += await self._drain_batch()
                    await anyio.lowlevel.checkpoint()
                await self._report_drops()
                if self._stopping and not items:
                    return
                if drained < LINGER_BELOW and not self._stopping:
                    # A trickle: let records gather (callers do not signal while
                    # wake_pending is True; flush, close and a filling queue do).
                    queue.lingering = True
                    try:
                        await self._wait(LINGER_SECONDS)
                    finally:
                        queue.lingering = False
        finally:
            self._woken = False

    async def _drain_batch(self) -> int:
        count = min(len(self._queue.items), MAX_BATCH)
        self.in_flight = count
        groups, markers = self._format_batch(count)
        self._queue.notify_space()
        await self._write_groups(groups)
        self.in_flight = 0
        for marker in markers:
            marker.set()
        return count

    def _format_batch(self, count: int) -> tuple[dict[Writer, list[str]], list[FlushMarker]]:
        """Take ``count`` items off the queue: their lines grouped by writer, in
        queue order, and the flush markers among them."""
        items = self._queue.items
        pop = items.popleft
        sinks = self._queue.sinks
        groups: dict[Writer, list[str]] = {}
        markers: list[FlushMarker] = []
        # Consecutive records usually share a handler: keep its formatter and its
        # writer's line list at hand instead of looking them up per record.
        last: SinkHandler | None = None
        last_index = -1  # last's number when it takes captured calls, else -1
        fmt: Any = None
        fmt_captured: Any = None
        lines: list[str] = []
        for i in range(count):
            if i & YIELD_MASK == YIELD_MASK:
                # Hand the GIL over: a caller's event loop waiting for it would
                # otherwise wait out the whole 5 ms switch interval (benchmarks/,
                # loop-stall scenario).
                _yield_gil(0)
            item = pop()
            record: logging.LogRecord | None = None
            if type(item) is tuple and item[0] == last_index:
                pass  # the usual item: a captured call for the same sink as the last
            elif type(item) is not tuple:
                assert isinstance(item, FlushMarker)
                markers.append(item)
                self.in_flight -= 1
                continue
            else:
                head = item[0]
                if type(head) is int:  # a captured call (_records.capture)
                    sink = sinks.get(head)
                    if sink is None:
                        self._lost_to_removed_sink()
                        continue
                    handler = sink
                else:
                    handler, record = item
                if handler is not last:
                    last = handler
                    formatter = handler.formatter or _DEFAULT_FORMATTER
                    fmt = formatter.format
                    fmt_captured = captured_formatter(formatter)
                    # Only ever compared with a captured call's int head.
                    last_index = handler.index if fmt_captured is not None else -1
                    lines = groups.setdefault(handler.writer, [])
            if record is None:
                if fmt_captured is not None:
                    try:  # the line without a LogRecord
                        line = fmt_captured(item)
                    except Exception:  # the record path reports it
                        line = None
                    if line is not None:
                        lines.append(line)
                        continue
                record = build(item)
            try:
                lines.append(fmt(record) + "\n")
            except Exception:
                self._format_again(handler, record, lines)
        return groups, markers

    def _format_again(
        self, handler: SinkHandler, record: logging.LogRecord, lines: list[str]
    ) -> None:
        """The formatter raised: ``SinkHandler.format`` prints a missing field as
        ``-``; anything else is the handler's error to report."""
        try:
            lines.append(handler.format(record) + "\n")
            return
        except Exception:
            pass
        self.write_errors += 1
        self.in_flight -= 1
        handler.handleError(record)

    async def _write_groups(self, groups: dict[Writer, list[str]]) -> None:
        for writer, lines in groups.items():
            try:
                await writer.awrite(lines)
                self.written += len(lines)
            except Exception:
                # Accepted records are not given up on one failure: the synchronous
                # path reopens the file (this loop is ours, blocking it is fine here).
                try:
                    writer.write_sync(lines)
                    self.written += len(lines)
                except Exception as exc:
                    # A file writer says how many whole lines of the batch the two
                    # tries left on disk (a disk that filled up mid-batch).
                    done = getattr(exc, "lines_written", 0)
                    self.written += done
                    self.write_errors += len(lines) - done
                    _report_write_error(writer, len(lines) - done)
            self.in_flight -= len(lines)

    def _lost_to_removed_sink(self) -> None:
        # Only a call racing remove_sink() on another thread gets here: it chose the
        # sink just before the removal and enqueued just after the removal's flush.
        self.write_errors += 1
        self.in_flight -= 1
        sys.stderr.write("--- aiologship: a record for a removed sink was not written ---\n")

    async def _report_drops(self) -> None:
        """One warning per overflow episode: once the queue has room again."""
        queue = self._queue
        if not queue.drops_by_handler or len(queue.items) >= queue.maxsize // 2:
            return
        report = queue.take_drop_report()
        total = sum(report.values())
        for handler, count in report.items():
            record = logging.LogRecord(
                "aiologship", logging.WARNING, __file__, 0,
                "aiologship dropped %d records for this sink: queue full "
                "(queue_size=%d, overflow=%s)",
                (count, queue.maxsize, queue.overflow.value), None,
            )  # fmt: skip
            # Written straight to the file (not counted as an accepted record), so the
            # gap is visible where the records are missing.
            try:
                await handler.writer.awrite([handler.format(record) + "\n"])
            except Exception:
                _report_write_error(handler.writer, 1)
        _log.warning(
            "dropped %d records: logging queue full (queue_size=%d, overflow=%s); "
            "see LogManager.stats()",
            total,
            queue.maxsize,
            queue.overflow.value,
        )


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _report_write_error(writer: Writer, count: int) -> None:
    # Not through logging: the failing sink may be where that record would go.
    sys.stderr.write(f"--- aiologship: could not write {count} records to {writer.name} ---\n")
    traceback.print_exc(file=sys.stderr)
