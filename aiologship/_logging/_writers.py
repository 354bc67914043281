"""Where formatted records go: files (with rotation and retention) and streams.

A writer is driven by the pump: ``await writer.awrite(lines)`` once per batch,
one worker-thread hop (``anyio.to_thread``) and one ``write`` per batch (or per
rotation segment). ``write_sync`` is the slow path used after the manager closed,
and the fallback when ``awrite`` raised: so ``awrite`` raises only when it wrote
nothing of the batch (see ``FileWriter.awrite``).

Files are opened with ``O_APPEND`` so processes sharing a file (a forked child, a
second manager) never overwrite each other's lines; a file with rotation is also
shared safely (see ``FileWriter``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import IO, Protocol

import anyio.to_thread

from .._config import Rotation
from .._exceptions import ConfigError

_ENCODING = "utf-8"
_ERRORS = "backslashreplace"


class Writer(Protocol):
    name: str

    async def awrite(self, lines: Sequence[str]) -> None: ...
    def write_sync(self, lines: Sequence[str]) -> None: ...
    async def aclose(self) -> None: ...
    def forget(self) -> None: ...


class FileWriter:
    """Appends to ``path``; rotates by size or by time; keeps ``retention`` old files.

    Rotated files are renamed once, to ``<name>.<YYYYmmdd-HHMMSS>[-N]`` (see
    ``RotatedNames``), and never renamed again, so a copier that ships ``app.log*``
    ships each rotated file once. Names are unique and ordered by age at any rate;
    retention deletes the oldest by that order, never a newer file.

    A file with rotation may be shared: by sinks of two managers, by a manager in
    another process, by a forked child. Each write batch then runs under an
    exclusive ``flock`` on ``.<name>.lock`` next to the file: the writer checks that
    its descriptor is still the file at ``path`` (reopening when another writer
    rotated it), takes the real size from the file, and rotates under the same
    lock, so no writer appends to a file another one already renamed or deleted.
    Without rotation no lock is taken: ``O_APPEND`` alone keeps writers apart.
    """

    def __init__(
        self,
        path: Path,
        *,
        rotation: Rotation | None = None,
        retention: int | None = None,
        tz: tzinfo,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.rotation = rotation
        self.retention = retention
        self._clock = clock or _wall_clock
        self._names = RotatedNames(path, tz, self._clock)
        self._lock = threading.Lock()  # one batch at a time in this process
        self._fd: int | None = None  # the live file (opened on the first write)
        self._shared = _SharedLock(path.with_name(f".{path.name}.lock"))
        self._next_rollover: float | None = None
        self._closed = False
        # After a failed write: how far its batch got. The pump's fallback
        # (write_sync of the same batch) writes only the rest; see _Progress.
        self._failed: _Progress | None = None
        _check_writable(path, self._shared.path if rotation is not None else None)

    # -------------------------------------------------------------- async path

    async def awrite(self, lines: Sequence[str]) -> None:
        """One worker-thread hop per batch (with rotation: lock, check, rotate,
        write, unlock).

        The pump writes a batch again with ``write_sync`` when this raises, so this
        raises only when the batch was not handed to a thread. anyio queues the call
        only after its worker started; ``run_in_executor`` queues it before starting
        a thread, and at interpreter exit (Python 3.12 refuses new threads) raised
        for a batch that an idle executor thread then wrote anyway: twice on disk.
        """
        if not lines:
            return
        if self.rotation is not None:
            await anyio.to_thread.run_sync(self._write_rotating, lines)
        else:
            await anyio.to_thread.run_sync(self._append, lines)

    async def aclose(self) -> None:
        # Not in a worker thread: at interpreter exit a new one may not start, and
        # the pump has stopped, so no batch holds the lock for long.
        self._closed = True
        self._close_files()

    def forget(self) -> None:
        """After fork: drop the parent's handles without touching the parent's file.

        Closing the child's copies of the descriptors releases nothing the parent
        holds (an ``flock`` lives until every copy of its descriptor is closed), and
        the child then takes the lock through a descriptor of its own."""
        fd, self._fd = self._fd, None
        if fd is not None:
            _close_quietly(fd)
        self._shared.forget()
        self._lock = threading.Lock()

    # --------------------------------------------------------------- sync path

    def write_sync(self, lines: Sequence[str]) -> None:
        """Also the pump's fallback for a batch ``awrite`` failed: then only what
        did not reach the file is written (a disk that filled up mid-batch took a
        prefix of it), so no line is written twice."""
        if self.rotation is not None:
            self._write_rotating(lines)
            if self._closed:  # after close: do not keep files open for the rare late record
                self._close_files()
            return
        with self._lock:
            # Opened anew: the fallback after a failed batch must not reuse the
            # descriptor that failed.
            fd = os.open(self.path, _APPEND_FLAGS, 0o666)
            try:
                self._append_lines(fd, lines)
            finally:
                os.close(fd)

    def _append(self, lines: Sequence[str]) -> None:
        with self._lock:
            fd = self._fd
            if fd is None:
                fd = self._fd = os.open(self.path, _APPEND_FLAGS, 0o666)
            try:
                self._append_lines(fd, lines)
            except OSError:
                # The next batch opens the file again (the write_sync fallback does too).
                self._fd = None
                _close_quietly(fd)
                raise

    def _append_lines(self, fd: int, lines: Sequence[str]) -> None:
        """Under ``_lock``: the lines (or what a failed write of them left) appended."""
        progress = self._resume(lines)
        chunks = progress.rest()
        try:
            _write_all(fd, b"".join(chunks))
        except OSError as exc:
            progress.advance(chunks, getattr(exc, "written", 0))
            self._failed = progress
            exc.lines_written = progress.index  # type: ignore[attr-defined]
            raise

    def _resume(self, lines: Sequence[str]) -> _Progress:
        """Where writing ``lines`` starts: after what a failed write of this very
        batch left on disk; for another batch after a torn line (the fallback failed
        too), on a new line, so the torn one does not swallow the next record."""
        failed, self._failed = self._failed, None
        if failed is not None and failed.lines is lines:
            return failed
        return _Progress(lines, 0, 0, newline=failed is not None and failed.torn)

    # ---------------------------------------------------------------- rotation

    def _write_rotating(self, lines: Sequence[str]) -> None:
        assert self.rotation is not None
        limit = self.rotation.max_bytes
        with self._lock, self._shared:
            progress = self._resume(lines)
            done = progress.copy()  # on disk before this call's first write
            pending: list[bytes] = []
            try:
                fd = self._live_fd()
                size = os.fstat(fd).st_size  # the real size: other writers append too
                # The rest of a torn line goes where its start is: no rotation first.
                if (
                    size
                    and not progress.torn
                    and self._next_rollover is not None
                    and self._clock() >= self._next_rollover
                ):
                    fd, size = self._rollover(), 0
                continuing = progress.torn
                for i, data in enumerate(progress.rest()):
                    # A line that would push a non-empty file past the limit starts a
                    # new file; a line longer than the limit gets a file of its own.
                    if (
                        not (i == 0 and continuing)
                        and limit is not None
                        and size
                        and size + len(data) > limit
                    ):
                        _write_all(fd, b"".join(pending))
                        progress.advance(pending, sum(map(len, pending)))
                        done, pending = progress.copy(), []
                        fd, size = self._rollover(), 0
                    pending.append(data)
                    size += len(data)
                _write_all(fd, b"".join(pending))
            except OSError as exc:
                if pending:
                    progress.advance(pending, getattr(exc, "written", 0))
                    done = progress
                self._failed = done
                exc.lines_written = done.index  # type: ignore[attr-defined]
                raise

    def _live_fd(self) -> int:
        """Our descriptor of the file now at ``path`` (called under the shared lock)."""
        fd = self._fd
        if fd is not None:
            if _same_file(fd, self.path):
                return fd
            # Another writer rotated (or someone moved the file away): follow the
            # path. Its new file started a new rotation period.
            self._fd = None
            _close_quietly(fd)
            self._next_rollover = None
        fd = self._fd = os.open(self.path, _APPEND_FLAGS, 0o666)
        if self._next_rollover is None:
            self._schedule_rollover()
        return fd

    def _rollover(self) -> int:
        """Rename the live file to its rotated name, apply retention, open a new file."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        existing = self._names.existing()
        key = self._names.next_key(existing, self._shared.read_last())
        target = self._names.path_of(key)
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            pass  # nothing to rotate: the key stays unused, which is harmless
        else:
            self._shared.write_last(key)
            existing.append((key, target))
        if self.retention is not None:
            # ``existing`` is sorted by key, the new file last: the oldest go first.
            for _, old in existing[: max(len(existing) - self.retention, 0)]:
                with contextlib.suppress(FileNotFoundError):
                    old.unlink()
        self._next_rollover = None
        return self._live_fd()

    def _schedule_rollover(self) -> None:
        interval = self.rotation.interval if self.rotation else None
        if interval is None:
            return
        # Align to the interval in local time of the configured zone: "1 day" rolls
        # at midnight, "1 hour" on the hour, as TimedRotatingFileHandler users expect.
        step = interval.total_seconds()
        now = self._clock()
        offset = datetime.fromtimestamp(now, self._names.tz).utcoffset()
        shift = offset.total_seconds() if offset else 0.0
        self._next_rollover = ((now + shift) // step + 1) * step - shift

    def _close_files(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is not None:
                _close_quietly(fd)
            self._shared.close()


RotatedKey = tuple[str, int]  # ("YYYYmmdd-HHMMSS", N): compares in age order


class RotatedNames:
    """Names of a sink's rotated files: ``NAME.YYYYmmdd-HHMMSS``, then
    ``NAME.YYYYmmdd-HHMMSS-001``, ``-002`` ... for more rotations in that second.

    Age order is the order of the parsed ``(stamp, N)`` key, not of the names as
    strings (``-1000`` sorts before ``-999`` as text). A new key is always greater
    than every key used before: than the files present, and than the last key the
    lock file remembers (retention may have deleted that file, and a reused name
    would look, to a copier, like a file it already shipped). When the clock went
    back (or the configured zone left summer time), the new file keeps the last
    stamp and takes the next N: the stamp is then earlier than the true time, but
    the order stays true.
    """

    def __init__(self, path: Path, tz: tzinfo, clock: Callable[[], float]) -> None:
        self.path = path
        self.tz = tz
        self._clock = clock
        self._pattern = re.compile(re.escape(path.name) + r"\.(\d{8}-\d{6})(?:-(\d+))?")

    def key(self, name: str) -> RotatedKey | None:
        match = self._pattern.fullmatch(name)
        if match is None:
            return None
        return match.group(1), int(match.group(2) or 0)

    def existing(self) -> list[tuple[RotatedKey, Path]]:
        """The rotated files present now, oldest first."""
        found = []
        with os.scandir(self.path.parent) as entries:
            for entry in entries:
                key = self.key(entry.name)
                if key is not None:
                    found.append((key, self.path.parent / entry.name))
        found.sort()
        return found

    def next_key(
        self, existing: list[tuple[RotatedKey, Path]], last: RotatedKey | None
    ) -> RotatedKey:
        stamp = datetime.fromtimestamp(self._clock(), self.tz).strftime("%Y%m%d-%H%M%S")
        newest = max(existing[-1][0] if existing else ("", -1), last or ("", -1))
        if stamp > newest[0]:
            return stamp, 0
        return newest[0], newest[1] + 1

    def path_of(self, key: RotatedKey) -> Path:
        stamp, n = key
        suffix = stamp if n == 0 else f"{stamp}-{n:03d}"
        return self.path.with_name(f"{self.path.name}.{suffix}")


class _SharedLock:
    """``.<name>.lock`` next to a rotated file: an exclusive ``flock`` around each
    write batch of every writer of the file, in any process, and the last rotated
    key (so names never repeat, even after retention deleted the newest one)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def __enter__(self) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        # Blocking: a holder holds it for one batch (a few writes and perhaps a
        # rename); a holder that dies releases it with its descriptors.
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def read_last(self) -> RotatedKey | None:
        assert self._fd is not None
        text = os.pread(self._fd, 64, 0).decode("ascii", "replace").strip()
        stamp, _, n = text.partition("/")
        if len(stamp) != 15 or not n.isdigit():
            return None  # new or foreign content: the files present decide alone
        return stamp, int(n)

    def write_last(self, key: RotatedKey) -> None:
        assert self._fd is not None
        data = f"{key[0]}/{key[1]}\n".encode("ascii")
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))

    def forget(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            _close_quietly(fd)

    def close(self) -> None:
        self.forget()


_APPEND_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def _wall_clock() -> float:
    return time.time()  # looked up per call, so a test may patch time.time


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    fst = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (fst.st_dev, fst.st_ino)


class PartialWriteError(OSError):
    """A write failed after ``written`` bytes of it reached the file (a disk that
    filled up, a file size limit)."""

    written: int = 0


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except OSError as exc:
            written = len(data) - len(view)
            if not written:
                raise
            partial = PartialWriteError(exc.errno, exc.strerror)
            partial.written = written
            raise partial from exc


class _Progress:
    """How far a batch of lines got to the file: lines ``[0, index)`` whole, and
    ``offset`` bytes of line ``index`` (a torn line)."""

    def __init__(self, lines: Sequence[str], index: int, offset: int, newline: bool = False):
        self.lines = lines
        self.index = index
        self.offset = offset
        self._newline = newline

    def rest(self) -> list[bytes]:
        """What is left to write, one chunk per line (the first may be a line's end)."""
        chunks = [line.encode(_ENCODING, _ERRORS) for line in self.lines[self.index :]]
        if chunks and self.offset:
            chunks[0] = chunks[0][self.offset :]
        if self._newline:
            chunks.insert(0, b"\n")
        return chunks

    def advance(self, chunks: Sequence[bytes], written: int) -> None:
        """``written`` bytes of ``chunks`` (the next ones ``rest()`` gave) reached
        the file."""
        for chunk in chunks:
            if self._newline:  # the separator is not a line of the batch
                if written < len(chunk):
                    return
                self._newline = False
                written -= len(chunk)
                continue
            if written < len(chunk):
                self.offset += written
                return
            written -= len(chunk)
            self.index += 1
            self.offset = 0

    @property
    def torn(self) -> bool:
        """The file ends inside a line (its start written, or the newline that ends
        an earlier torn line still owed)."""
        return bool(self.offset) or self._newline

    def copy(self) -> _Progress:
        return _Progress(self.lines, self.index, self.offset, self._newline)


def _close_quietly(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


class StreamWriter:
    """Writes to a text stream (``sys.stderr`` by default) in a worker thread."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream
        self.name = "<stderr>" if stream is None else getattr(stream, "name", repr(stream))
        self._lock = threading.Lock()

    def _target(self) -> IO[str]:
        return self._stream if self._stream is not None else sys.stderr

    async def awrite(self, lines: Sequence[str]) -> None:
        await anyio.to_thread.run_sync(self.write_sync, lines)

    def write_sync(self, lines: Sequence[str]) -> None:
        with self._lock:
            target = self._target()
            target.write("".join(lines))
            target.flush()

    async def aclose(self) -> None:
        return None

    def forget(self) -> None:
        self._lock = threading.Lock()


def _check_writable(path: Path, lock: Path | None = None) -> None:
    """Create the parent folder and check we may append (and use the lock file of
    a rotated file); ``ConfigError`` otherwise.

    No ``open()`` here: a FIFO's open would block until a reader comes.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            "path", str(path), f"cannot create folder {path.parent}: {exc.strerror}"
        ) from exc
    if path.is_dir():
        raise ConfigError("path", str(path), "is a directory, not a file")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ConfigError("path", str(path), "file is not writable")
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError("path", str(path), f"folder {path.parent} is not writable")
    if lock is not None and lock.exists() and not os.access(lock, os.R_OK | os.W_OK):
        raise ConfigError("path", str(path), f"rotation lock file {lock} is not writable")
