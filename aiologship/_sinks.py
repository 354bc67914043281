"""Where formatted records go: files (with rotation and retention) and streams.

A writer is driven by the pump: ``await writer.awrite(lines)`` once per batch,
one aiofiles ``write`` per batch (or per rotation segment). ``write_sync`` is the
slow path used after the manager closed; it opens, appends and closes under a lock.

Files are opened with ``O_APPEND`` so processes sharing a file (a forked child, a
second manager) never overwrite each other's lines.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime, tzinfo
from pathlib import Path
from typing import IO, Any, Protocol

import aiofiles
import anyio.to_thread

from ._config import Rotation
from ._exceptions import ConfigError

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

    Rotated files are renamed once, to ``<name>.<YYYYmmdd-HHMMSS>`` (``-NNN``
    added on a clash), and never renamed again, so a copier that ships
    ``app.log*`` ships each rotated file once.
    """

    def __init__(
        self,
        path: Path,
        *,
        rotation: Rotation | None = None,
        retention: int | None = None,
        tz: tzinfo,
    ) -> None:
        self.path = path
        self.name = str(path)
        self.rotation = rotation
        self.retention = retention
        self._tz = tz
        self._lock = threading.Lock()
        self._afile: Any = None
        self._size = 0
        self._next_rollover: float | None = None
        _check_writable(path)

    # -------------------------------------------------------------- async path

    async def awrite(self, lines: Sequence[str]) -> None:
        if not lines:
            return
        if self.rotation is None:
            await self._awrite_bytes("".join(lines).encode(_ENCODING, _ERRORS))
            return
        for part in self._segments(lines):
            if self._due(len(part)):
                await self._aclose_file()
                await anyio.to_thread.run_sync(self._rollover)
            await self._awrite_bytes(part)

    async def _awrite_bytes(self, data: bytes) -> None:
        if self._afile is None:
            self._afile = await aiofiles.open(self.path, "ab", buffering=0)
            self._size = os.fstat(self._afile.fileno()).st_size
            self._schedule_rollover()
        await self._afile.write(data)
        self._size += len(data)

    async def aclose(self) -> None:
        await self._aclose_file()

    async def _aclose_file(self) -> None:
        afile, self._afile = self._afile, None
        if afile is not None:
            await afile.close()

    def forget(self) -> None:
        """After fork: drop the parent's handle without touching the parent's file."""
        self._afile = None
        self._lock = threading.Lock()

    # --------------------------------------------------------------- sync path

    def write_sync(self, lines: Sequence[str]) -> None:
        with self._lock:
            if self.rotation is None:
                with open(self.path, "ab") as f:
                    f.write("".join(lines).encode(_ENCODING, _ERRORS))
                return
            for part in self._segments(lines):
                if self._afile is None:
                    try:
                        self._size = os.stat(self.path).st_size
                    except FileNotFoundError:
                        self._size = 0
                    if self._next_rollover is None:
                        self._schedule_rollover()
                if self._due(len(part)):
                    self._rollover()
                with open(self.path, "ab") as f:
                    f.write(part)
                self._size += len(part)

    # ---------------------------------------------------------------- rotation

    def _segments(self, lines: Sequence[str]) -> list[bytes]:
        """Split a batch so no file grows past ``max_bytes`` (one line at least each)."""
        assert self.rotation is not None
        limit = self.rotation.max_bytes
        if limit is None:
            return ["".join(lines).encode(_ENCODING, _ERRORS)]
        parts: list[bytes] = []
        current: list[bytes] = []
        room = limit - self._size
        for line in lines:
            data = line.encode(_ENCODING, _ERRORS)
            if current and len(data) > room:
                parts.append(b"".join(current))
                current, room = [], limit
            current.append(data)
            room -= len(data)
        if current:
            parts.append(b"".join(current))
        return parts

    def _due(self, incoming: int) -> bool:
        assert self.rotation is not None
        if self._size == 0:
            return False
        limit = self.rotation.max_bytes
        if limit is not None and self._size + incoming > limit:
            return True
        return self._next_rollover is not None and time.time() >= self._next_rollover

    def _schedule_rollover(self) -> None:
        interval = self.rotation.interval if self.rotation else None
        if interval is None:
            return
        # Align to the interval in local time of the configured zone: "1 day" rolls
        # at midnight, "1 hour" on the hour, as TimedRotatingFileHandler users expect.
        step = interval.total_seconds()
        now = time.time()
        offset = datetime.fromtimestamp(now, self._tz).utcoffset()
        shift = offset.total_seconds() if offset else 0.0
        self._next_rollover = ((now + shift) // step + 1) * step - shift

    def _rollover(self) -> None:
        stamp = datetime.now(self._tz).strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.{stamp}")
        n = 0
        while target.exists():
            n += 1
            target = self.path.with_name(f"{self.path.name}.{stamp}-{n:03d}")
        try:
            os.rename(self.path, target)
        except FileNotFoundError:
            pass
        self._size = 0
        self._schedule_rollover()
        if self.retention is not None:
            self._enforce_retention()

    def _enforce_retention(self) -> None:
        assert self.retention is not None
        prefix = self.path.name + "."
        rotated = sorted(
            p
            for p in self.path.parent.iterdir()
            if p.name.startswith(prefix) and p.name[len(prefix) : len(prefix) + 8].isdigit()
        )
        excess = len(rotated) - self.retention
        for old in rotated[: max(excess, 0)]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass


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


def _check_writable(path: Path) -> None:
    """Create the parent folder and check we may append; ``ConfigError`` otherwise.

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
