"""``StreamWriter``: a sink on ``sys.stdout``, ``sys.stderr``, any text stream or a
file descriptor, whose stalled reader never stalls anyone else.

The pump hands a batch over in O(1) (one lock, one ``deque.extend``) and goes on
with the other sinks; a thread of the writer's own does the blocking writes. Its
buffer is bounded (the manager's ``queue_size`` lines); when the reader stalls
long enough to fill it (``app | (sleep 5; cat)``, a paused ``kubectl logs``), the
manager's overflow policy applies: ``drop_oldest`` evicts the oldest waiting
lines, ``drop_newest`` and ``wait`` refuse the new ones (the pump is an event
loop, and a loop never waits: the queue's own rule). Every line lost is counted
in ``stats().dropped`` and noted in the stream once it is read again.

Why a thread and not ``O_NONBLOCK``: the flag belongs to the open file
description, which ``dup()`` shares and a shell pipeline shares with every other
process writing to the same pipe; set on stdout it makes the application's own
``print()`` (and its neighbours') fail with ``BlockingIOError`` (measured on
Linux 2026-12-01: the flag set on a ``dup`` shows on the original and in a child
sharing the pipe, and ``print`` then raises on a full pipe). Reopening
``/proc/self/fd/N`` gives a private description for a pipe or a terminal but not
for a socket (``ENXIO``), which is what Docker and systemd hand a service.

Writes go to a descriptor of our own (``os.dup`` of the stream's ``fileno()``),
after flushing the stream's Python-level buffer, so text the application
``print()``-ed before a record was handed over comes out before it. Streams
without a descriptor (``io.StringIO``, pytest's ``capsys``) are written through
their ``write``/``flush`` on the same thread.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import sys
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import IO, Any

from .._config import Overflow
from .._exceptions import ConfigError
from .._runtime import in_worker_thread

CLOSE_TIMEOUT = 10.0  # s: how long close() waits for a stream nobody reads
MAX_WRITE = 512  # lines per write(): ~60 KiB of typical lines, a pipe's capacity
_STANDARD_NAMES = {0: "<stdin>", 1: "<stdout>", 2: "<stderr>"}


def resolve_stream(target: Any) -> IO[str] | int:
    """``"stdout"`` / ``"stderr"`` (YAML) to the stream object of this moment."""
    if target == "stdout":
        return sys.stdout
    if target == "stderr":
        return sys.stderr
    return target  # type: ignore[no-any-return]


def stream_key(target: IO[str] | int) -> tuple[str, int]:
    """One writer per stream object (or per descriptor number): two sinks on
    ``sys.stdout`` share its order; ``sys.stdout`` and ``sys.stderr`` on one
    terminal are two streams."""
    if isinstance(target, int):
        return ("fd", target)
    return ("stream", id(target))


def check_stream(target: Any) -> tuple[IO[str] | None, int | None]:
    """``(stream, fd)`` to write to, or ``ConfigError`` naming what is wrong.

    ``fd`` is the stream's descriptor when it has one (``None``: write through the
    stream's own methods)."""
    if isinstance(target, bool) or (not isinstance(target, int) and not hasattr(target, "write")):
        raise ConfigError(
            "sink", target, "expected a file path, a text stream (sys.stdout) or a descriptor"
        )
    if isinstance(target, int):
        _check_fd(target, target)
        return None, target
    if getattr(target, "closed", False):
        raise ConfigError("sink", target, "the stream is closed")
    writable = getattr(target, "writable", None)
    try:
        ok = True if writable is None else writable()
    except ValueError as exc:  # io raises ValueError on a closed file
        raise ConfigError("sink", target, f"the stream is not usable: {exc}") from exc
    if not ok:
        raise ConfigError("sink", target, "the stream is not open for writing (read-only?)")
    try:
        fd = target.fileno()
    except (AttributeError, OSError, ValueError):
        return target, None  # io.StringIO, pytest's capsys: written through write()
    _check_fd(fd, target)
    return target, fd


def _check_fd(fd: int, shown: Any) -> None:
    if fd < 0:
        raise ConfigError("sink", shown, "a file descriptor is never negative")
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError as exc:
        raise ConfigError("sink", shown, f"descriptor {fd} is not open ({exc.strerror})") from exc
    if flags & os.O_ACCMODE not in (os.O_WRONLY, os.O_RDWR):
        raise ConfigError("sink", shown, f"descriptor {fd} is open for reading only")


def stream_name(target: IO[str] | int) -> str:
    if isinstance(target, int):
        return _STANDARD_NAMES.get(target, f"<fd {target}>")
    name = getattr(target, "name", None)
    return name if isinstance(name, str) else repr(target)


class StreamWriter:
    """Writes batches to a stream or descriptor from a thread of its own."""

    def __init__(
        self,
        target: IO[str] | int,
        *,
        capacity: int,
        overflow: Overflow,
        drop_note: Callable[[int], str] | None = None,
    ) -> None:
        self._stream, fd = check_stream(target)
        self.target = target
        self.name = stream_name(target)
        self._encoding = str(getattr(self._stream, "encoding", None) or "utf-8")
        # Our own descriptor: a number the application closes (and the kernel hands
        # to another file) can never make us write there.
        self._fd = None if fd is None else os.dup(fd)
        self._capacity = capacity
        self._overflow = overflow
        self.drop_note = drop_note
        self._cond = threading.Condition(threading.Lock())
        self._lines: deque[str] = deque()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._abandoned = False
        # Counters, changed under _cond. accepted == done + buffered + in_flight.
        self.accepted = 0  # lines handed over by the pump
        self.done = 0  # lines written, failed or dropped
        self.in_flight = 0  # taken by the thread, being written
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self._unreported_drops = 0
        self._error_streak = False

    @property
    def buffered(self) -> int:
        return len(self._lines) + self.in_flight

    # ------------------------------------------------------------ the pump's side

    async def awrite(self, lines: Sequence[str]) -> None:
        self.put(lines)

    def put(self, lines: Sequence[str]) -> None:
        """Buffer ``lines`` for the thread (never blocks); overflow per policy."""
        if not lines:
            return
        with self._cond:
            self.accepted += len(lines)
            buf = self._lines
            room = self._capacity - len(buf)
            if len(lines) <= room:
                buf.extend(lines)
            elif self._overflow is Overflow.DROP_OLDEST:
                keep = lines[-self._capacity :] if len(lines) > self._capacity else lines
                evict = len(buf) + len(keep) - self._capacity
                for _ in range(evict):
                    buf.popleft()
                self._count_drops(evict + len(lines) - len(keep))
                buf.extend(keep)
            else:
                buf.extend(lines[: max(room, 0)])
                self._count_drops(len(lines) - max(room, 0))
            started = self._thread is not None or self._start_thread()
            if started:
                self._cond.notify()
        if not started:
            self._write_here()

    def _count_drops(self, n: int) -> None:
        self.dropped += n
        self.done += n
        self._unreported_drops += n

    def _start_thread(self) -> bool:
        """Start the writing thread; False if no thread can start (interpreter exit).

        Started by the pump on the first batch: nothing here imports (fork rule of
        _runtime), and a sink that never writes never costs a thread."""
        thread = threading.Thread(
            target=self._run, name=f"aiologship-stream-{self.name}", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # Python 3.12 at exit: "can't create new thread"
            return False
        self._thread = thread
        return True

    def _write_here(self) -> None:
        """Without a thread: write what is buffered in the calling thread."""
        while self._take_batch():
            pass

    def wait_written(self, upto: int, timeout: float | None) -> bool:
        """Block until the first ``upto`` accepted lines are written (or lost)."""
        with self._cond:
            return self._cond.wait_for(lambda: self.done >= upto or self._abandoned, timeout)

    # ------------------------------------------------------------ the thread

    def _run(self) -> None:
        cond = self._cond
        while True:
            with cond:
                while not self._lines and not self._closing:
                    cond.wait()
            if not self._take_batch():
                return

    def _take_batch(self) -> bool:
        """Write up to MAX_WRITE buffered lines; False when there was nothing to write."""
        cond = self._cond
        with cond:
            if self._abandoned or not self._lines:
                return False
            # At most MAX_WRITE lines per write: after a stall the buffer may
            # hold 100,000 lines, and joining them all would hold the GIL
            # (which the caller's loop may be waiting for) for tens of ms.
            lines = self._lines
            batch = [lines.popleft() for _ in range(min(len(lines), MAX_WRITE))]
            self.in_flight = len(batch)
            note = self._take_note()
        if note:
            batch.append(note)
        ok = self._write_batch(batch)
        with cond:
            n = self.in_flight
            self.in_flight = 0
            self.done += n
            if ok:
                self.written += n
            else:
                self.errors += n
            cond.notify_all()
        return True

    def _take_note(self) -> str | None:
        """The line that says how many records were lost, once the reader came
        back (the buffer has room again)."""
        n = self._unreported_drops
        if not n or len(self._lines) >= self._capacity // 2 or self.drop_note is None:
            return None
        self._unreported_drops = 0
        try:
            return self.drop_note(n)
        except Exception:
            return None

    def _write_batch(self, lines: Sequence[str]) -> bool:
        try:
            self._emit("".join(lines))
        except Exception as exc:
            if not self._error_streak:
                self._error_streak = True
                _report(self.name, len(lines), exc)
            return False
        self._error_streak = False
        return True

    def _emit(self, text: str) -> None:
        stream, fd = self._stream, self._fd
        if fd is None and isinstance(self.target, int):
            fd = self.target  # after close: the user's descriptor, for a late record
        if fd is None:
            assert stream is not None  # a stream without a descriptor, or closed
            stream.write(text)
            stream.flush()
            return
        if stream is not None:
            # What the application print()-ed before this batch goes first.
            with contextlib.suppress(ValueError, OSError):
                stream.flush()
        data = text.encode(self._encoding, "backslashreplace")
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except InterruptedError:  # pragma: no cover - PEP 475 retries for us
                continue
            except BlockingIOError:
                # Someone else set O_NONBLOCK on this pipe: wait until it drains.
                _wait_writable(fd)

    # ------------------------------------------------------------ slow paths

    def write_sync(self, lines: Sequence[str]) -> None:
        """After close (or when the thread is gone): write in the caller's thread."""
        if lines:
            with self._cond:
                self.accepted += len(lines)
                self.done += len(lines)
            self._emit("".join(lines))
            with self._cond:
                self.written += len(lines)

    async def aclose(self) -> None:
        await in_worker_thread(self.close, CLOSE_TIMEOUT)

    def close(self, timeout: float) -> None:
        """Let the thread write what it holds (up to ``timeout``), then stop it.
        What a reader that never came back left unwritten is counted as dropped."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        with self._cond:
            if thread is not None and thread.is_alive():
                # Blocked in write(): it stops after this write. Its descriptor stays
                # open (closing it under a blocked write could hand the number to a
                # file opened meanwhile, and the thread's next write would land there).
                self._abandoned = True
                left = len(self._lines)
                self._lines.clear()
                self._count_drops(left)
                self._cond.notify_all()
                _report(self.name, left, TimeoutError(f"not read for {timeout:g} s"))
                return
            self._thread = None
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def forget(self) -> None:
        """After fork: the parent's thread and buffer are the parent's; the
        descriptor is ours too (a forked child writes to the same stdout)."""
        self._cond = threading.Condition(threading.Lock())
        self._lines.clear()
        self._thread = None
        self.in_flight = 0
        self.done = self.accepted


def _wait_writable(fd: int) -> None:
    select.select([], [fd], [], 1.0)


def _report(name: str, count: int, exc: BaseException) -> None:
    # Not through logging (the stream may be where that record would go), and
    # never blocking on it: stderr may be the stream that is not read.
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE:
        reason = "the reader closed the pipe"
    message = f"--- aiologship: could not write {count} records to {name}: {reason} ---\n"
    with contextlib.suppress(Exception):
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        # One write of a short line: it lands in the pipe buffer unless that is full
        # too; then it is skipped rather than waited for.
        if select.select([], [fd], [], 0)[1]:
            os.write(fd, message.encode("utf-8", "backslashreplace"))
