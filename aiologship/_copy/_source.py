"""Opening a scanned source file so that what is read is what the scan checked.

The scan resolves each match and checks it lies under ``root_dir``; a plain
``open(path)`` later would follow whatever the path has become since (a file
or a folder on the way swapped for a symlink to ``../secret``, a FIFO that
blocks the open forever). So the open walks from the resolved root one
component at a time with ``O_NOFOLLOW`` (a symlink anywhere on the way fails
with ``ELOOP``/``ENOTDIR`` instead of being followed), opens the file itself
with ``O_NONBLOCK`` (a FIFO opens at once instead of waiting for a writer),
and checks with ``fstat`` that the opened file is a regular file and the very
inode the scan saw. Blocking: runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from typing import BinaryIO

from ._scan import SourceFile, describe_kind

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# What openat reports when a component is no longer what the scan resolved:
# a symlink (ELOOP, or ENOTDIR/EMLINK for O_DIRECTORY|O_NOFOLLOW on some
# kernels), a non-directory, a missing entry, or a socket (ENXIO).
_CHANGED = frozenset(
    {errno.ELOOP, errno.ENOTDIR, errno.EMLINK, errno.ENOENT, errno.ENXIO, errno.EISDIR}
)


class SourceChanged(Exception):
    """The path no longer leads to the file the scan checked (swapped for a
    symlink, replaced, moved): skipped this cycle, the next scan sees it anew."""


class SourceNotRegular(Exception):
    """The path leads to the scanned location but holds a FIFO, socket or
    device now; never read."""


class SourceDirs:
    """Folder descriptors opened by the safe walk, shared by the opens of one
    batch of files (``ship_batch``): a tree of small files shares a few folders,
    and walking each path anew was about a third of a small file's shipping
    time (5,000 files of 8 KiB, measured with py-spy). A descriptor keeps naming
    the folder the walk checked even if its path is swapped afterwards, and the
    file itself is still opened with ``O_NOFOLLOW`` and checked by inode."""

    MAX_OPEN = 64

    def __init__(self) -> None:
        self._fds: dict[tuple[str, tuple[str, ...]], int] = {}

    def fd(self, anchor: str, folders: tuple[str, ...], shown: str) -> int:
        key = (anchor, folders)
        fd = self._fds.get(key)
        if fd is None:
            if len(self._fds) >= self.MAX_OPEN:
                self.close()
            fd = self._fds[key] = _walk(anchor, folders, shown)
        return fd

    def close(self) -> None:
        fds, self._fds = self._fds, {}
        for fd in fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> SourceDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_source(src: SourceFile, dirs: SourceDirs | None = None) -> BinaryIO:
    """Open the regular file the scan found at ``src.real``, reached from
    ``src.real_root`` (``/`` without a root_dir) without following a symlink.
    ``dirs`` shares folder descriptors between the opens of one batch.

    Raises :class:`SourceChanged` or :class:`SourceNotRegular` (the caller maps
    them), ``OSError`` for any other failure (permissions, I/O).
    """
    real = src.real or os.path.abspath(src.path)
    anchor = src.real_root or os.sep
    # Both are resolved, normalised paths: a prefix test is exact (and several
    # times cheaper than os.path.relpath, per file).
    prefix = anchor if anchor.endswith(os.sep) else anchor + os.sep
    if not real.startswith(prefix) or len(real) == len(prefix):
        raise SourceChanged(f"{src.path} is not a file under {anchor}")
    parts = real[len(prefix) :].split(os.sep)
    if os.pardir in parts or os.curdir in parts or "" in parts:
        raise SourceChanged(f"{src.path} is not a file under {anchor}")
    if dirs is None:
        with SourceDirs() as own:
            fd = _open_leaf(own.fd(anchor, tuple(parts[:-1]), src.path), parts[-1], src.path)
    else:
        fd = _open_leaf(dirs.fd(anchor, tuple(parts[:-1]), src.path), parts[-1], src.path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise SourceNotRegular(f"{describe_kind(st.st_mode)}, not a regular file")
        if (st.st_dev, st.st_ino) != (src.dev, src.ino):
            raise SourceChanged(f"{src.path} was replaced by another file")
        # Reads are pread/copy_file_range at explicit offsets; O_NONBLOCK has
        # no effect on a regular file, so it stays set.
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _walk(anchor: str, folders: tuple[str, ...], shown: str) -> int:
    """Open the folder ``anchor/folders...`` component by component, never
    following a symlink; returns its descriptor."""
    try:
        dir_fd = os.open(anchor, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise SourceChanged(f"{anchor}: {exc.strerror}") from exc
        raise
    try:
        for part in folders:
            try:
                fd = os.open(part, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                if exc.errno in _CHANGED:
                    raise SourceChanged(f"{shown}: {part!r} on its way changed") from exc
                raise
            os.close(dir_fd)
            dir_fd = fd
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(dir_fd)
        raise
    return dir_fd


def _open_leaf(dir_fd: int, name: str, shown: str) -> int:
    """Open the regular file ``name`` in ``dir_fd`` without following a symlink
    and without blocking."""
    # Checked before the open so a device node never even sees an open();
    # the fstat after the open closes the window between the two.
    try:
        lst = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise SourceChanged(f"{shown}: {exc.strerror}") from exc
        raise
    if stat.S_ISLNK(lst.st_mode):
        raise SourceChanged(f"{shown} is a symlink now")
    if not stat.S_ISREG(lst.st_mode):
        raise SourceNotRegular(f"{describe_kind(lst.st_mode)}, not a regular file")
    try:
        return os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in _CHANGED:
            raise SourceChanged(f"{shown}: {exc.strerror}") from exc
        raise
