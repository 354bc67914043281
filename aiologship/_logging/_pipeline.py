"""``Pipeline``: the record queue, the pump that drains it on the runtime loop,
and the counters ``LogManager.stats()`` reports.

The pipeline owns the manager's ``Runtime``: the pump is its main task, and it
starts the runtime again on the first record after a fork. Copy operations run
on the same runtime; the manager hands it to them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time

from .._config import ManagerConfig
from .._runtime import Runtime
from ._pump import Pump
from ._queue import FlushMarker, RecordQueue, SinkHandler, Stats
from ._streams import StreamWriter
from ._writers import Writer

_log = logging.getLogger("aiologship")

# Records logged after their manager closed, by every manager of the process
# (a metric: a closed manager is no longer asked).
_after_close_lock = threading.Lock()
_after_close_total = 0


def after_close_total() -> int:
    return _after_close_total


class Pipeline:
    """caller -> ``RecordQueue`` -> ``Pump`` (on the runtime loop) -> writers."""

    def __init__(self, config: ManagerConfig, name: str) -> None:
        self.runtime = Runtime(name)
        self._lock = threading.RLock()
        self._closed = False
        self.queue = RecordQueue(
            config.queue_size, config.overflow, config.overflow_timeout, self._wake
        )
        self._pump = Pump(self.queue)
        self._pump_exited = asyncio.Event()
        self._written_before = 0  # counters of pumps replaced after a fork
        self._errors_before = 0
        self._after_close = 0
        self._after_close_warned = False
        # Stream writers buffer what the pump handed them (the pump counted it as
        # written): stats() subtracts what they have not written yet, or lost.
        self._streams: list[StreamWriter] = []
        self._streams_gone = (0, 0)  # (dropped, errors) of stream writers removed

    # ----------------------------------------------------------------- sinks

    def make_handler(self, writer: Writer, formatter: logging.Formatter, level: int) -> SinkHandler:
        """A handler that feeds this pipeline and writes through ``writer``."""
        return SinkHandler(self.queue, writer, formatter, level, after_close=self.write_after_close)

    def write_after_close(self, handler: SinkHandler, record: logging.LogRecord) -> None:
        """The slow synchronous path: formats and appends in the caller's thread."""
        handler.writer.write_sync([handler.format(record) + "\n"])
        self._after_close += 1
        global _after_close_total
        with _after_close_lock:
            _after_close_total += 1
        if not self._after_close_warned:
            self._after_close_warned = True
            _log.warning(
                "a record was logged after LogManager.close(); it was written synchronously "
                "(slow path); close the manager after the last log call"
            )

    def track_stream(self, writer: StreamWriter) -> None:
        with self._lock:
            self._streams.append(writer)

    def untrack_stream(self, writer: StreamWriter) -> None:
        """A removed stream sink's writer, closed: keep its losses in the counts."""
        with self._lock:
            if writer in self._streams:
                self._streams.remove(writer)
                dropped, errors = self._streams_gone
                self._streams_gone = (dropped + writer.dropped, errors + writer.errors)

    def in_runtime_thread(self) -> bool:
        return self.runtime.in_runtime_thread()

    # ----------------------------------------------------------------- pump

    def start(self) -> None:
        """Start the runtime and the pump, unless running or closed."""
        with self._lock:
            if self.runtime.running or self._closed:
                return
            self._pump_exited = asyncio.Event()
            self.runtime.start(self._run_pump)

    async def _run_pump(self) -> None:
        exited = self._pump_exited
        try:
            await self._pump.run()
        finally:
            exited.set()

    def _wake(self) -> None:
        # Called by the first record after the pump went to sleep (any thread).
        if not self.runtime.running:
            self.start()
        self.runtime.call_soon_threadsafe(self._pump.wake)

    def stats(self) -> Stats:
        pump, queue = self._pump, self.queue
        queued = len(queue.items)
        written = pump.written + self._written_before
        errors = pump.write_errors + self._errors_before
        accepted = written + errors + queued + pump.in_flight + queue.evicted
        dropped = queue.dropped
        s_dropped, s_errors = self._streams_gone
        for writer in self._streams:
            buffered = writer.buffered
            queued += buffered
            s_dropped += writer.dropped
            s_errors += writer.errors
            written -= buffered
        return Stats(
            accepted=accepted,
            written=written - s_dropped - s_errors,
            dropped=dropped + s_dropped,
            queued=queued,
            write_errors=errors + s_errors,
            after_close=self._after_close,
        )

    def drops(self) -> tuple[int, int, int]:
        """Records dropped so far by reason: refused by the full queue, evicted
        from it (drop_oldest), refused or lost by a stream sink's buffer."""
        queue = self.queue
        streams = self._streams_gone[0] + sum(writer.dropped for writer in self._streams)
        return queue.dropped - queue.evicted, queue.evicted, streams

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record accepted so far is written; False on timeout."""
        if self._closed or not self.runtime.running:
            return True
        deadline = None if timeout is None else time.monotonic() + timeout
        marker = FlushMarker()
        self.queue.items.append(marker)
        self.queue.request_wake()
        if not marker.done.wait(timeout):
            return False
        # The pump handed every record over; stream writers write on their own threads.
        for writer in list(self._streams):
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            if not writer.wait_written(writer.accepted, left):
                return False
        return True

    # ---------------------------------------------------------------- close

    async def drain(self) -> None:
        """On the runtime loop: wait until every record accepted so far is written."""
        marker = FlushMarker(asyncio.Event())
        self.queue.items.append(marker)
        self._pump.wake()
        assert marker.on_loop is not None
        await marker.on_loop.wait()

    async def stop_pump(self) -> None:
        """On the runtime loop: from here on a new record takes the synchronous
        path, and the pump drains what was accepted, then exits."""
        self.queue.closed = True
        self.queue.notify_space()
        self._pump.request_stop()
        await self._pump_exited.wait()

    def finish(self) -> None:
        """After the runtime stopped: write what is left in the caller's thread."""
        self.queue.closed = True
        # A record that passed the closed check just before it flipped is still here.
        leftovers = []
        while self.queue.items:
            item = self.queue.items.popleft()
            if isinstance(item, FlushMarker):
                item.set()
            else:
                leftovers.append(item)
        for item in leftovers:
            unpacked = self.queue.unpack(item)
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
            self._closed = True

    # ----------------------------------------------------------------- fork

    def reset_after_fork(self) -> None:
        """In a forked child: forget the parent's thread and queue; the first
        record starts a runtime of the child's own."""
        self._lock = threading.RLock()
        self.runtime.reset_after_fork()
        self.queue.reset_after_fork()
        self._written_before += self._pump.written
        self._errors_before += self._pump.write_errors
        self._pump = Pump(self.queue)
