"""Shipping one file: append the new range, or replace through a temporary name.

Everything here except :func:`ship_with_retry` blocks and runs in a worker thread.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import posixpath
import re
import secrets
import threading
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import BinaryIO, TypeVar

import anyio
import anyio.to_thread
import pyarrow
import pyarrow.fs as pafs
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    before_sleep_log,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
    wait_none,
    wait_random,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from .._fs import Destination
from ._encode import Encoder, encoder
from ._manifest import (
    FINGERPRINT_BYTES,
    NO_CRC,
    Entry,
    checksum,
    digest,
    fingerprints,
    prefix_matches,
)
from ._scan import SourceFile
from ._source import SourceChanged, SourceDirs, SourceNotRegular, open_source
from ._spec import Compression
from ._tempwatch import TempWatch

logger = logging.getLogger("aiologship.copy")

CHUNK_SIZE = 8 << 20
# Longest wait between two attempts, whatever retry_delay and max_retries say.
RETRY_CAP = 60.0
TMP_MARK = ".aiologship-tmp-"
_TMP_RE = re.compile(r"^\..*\.aiologship-tmp-(?P<tag>[0-9a-f]{8})-(?P<run>[0-9a-f]{8})-\d+$")
_MAX_NAME = 180


class SourceVanished(Exception):
    """The source disappeared or shrank under us: skip quietly, retry next cycle."""


class SourceUnreadable(Exception):
    """The source cannot be read (reported in the status, not retried this cycle)."""


class DestinationFailure(Exception):
    """The destination failed; retried with backoff."""


@dataclass(frozen=True, slots=True)
class Shipped:
    entry: Entry
    bytes_sent: int  # written to the destination (compressed, for a compressed copy)
    mode: str  # "append", "replace" or "touch" (metadata only)
    bytes_read: int = 0  # source bytes those stand for


class Progress:
    """Byte counter shared with worker threads (a progress bar reads it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.bytes_done = 0
        self.bytes_total = 0
        self.files_done = 0
        self.files_total = 0
        self.planned = False  # totals are known (the scan and the plan are done)

    def add(self, n: int) -> None:
        with self._lock:
            self.bytes_done += n


class TempNames:
    """Names of our temporary files: ``.<name>.aiologship-tmp-<tag>-<run>-<n>``.

    ``tag`` identifies the copy operation (so copies sharing a destination never
    touch each other's files), ``run`` this engine instance (so a later run knows
    which leftovers are from a crashed one).
    """

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.run = secrets.token_hex(4)
        self._seq = itertools.count()
        self._lock = threading.Lock()

    def next_for(self, final: str) -> str:
        parent, name = posixpath.split(final)
        with self._lock:
            n = next(self._seq)
        return posixpath.join(parent, f".{name[:_MAX_NAME]}{TMP_MARK}{self.tag}-{self.run}-{n}")

    def is_stale(self, name: str) -> bool:
        """A temporary file of this copy left by another (dead) run."""
        m = _TMP_RE.match(posixpath.basename(name))
        return m is not None and m.group("tag") == self.tag and m.group("run") != self.run


class DirCache:
    """Destination folders known to exist (saves a create_dir per file)."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, fs: pafs.FileSystem, path: str) -> None:
        if not path or path in self._known:
            return
        fs.create_dir(path, recursive=True)
        with self._lock:
            self._known.add(path)

    def ensure_local(self, path: str) -> None:
        if not path or path in self._known:
            return
        os.makedirs(path, exist_ok=True)
        with self._lock:
            self._known.add(path)

    def forget(self) -> None:
        with self._lock:
            self._known.clear()


def ship_file(
    dest: Destination,
    src: SourceFile,
    prev: Entry | None,
    *,
    temps: TempNames,
    dirs: DirCache,
    watch: TempWatch,
    progress: Progress | None = None,
    chunk_size: int = CHUNK_SIZE,
    sources: SourceDirs | None = None,
    compression: Compression | None = None,
) -> Shipped:
    """Ship ``src`` so the destination holds its current bytes. Blocking.
    ``watch`` gets the temporary name of a replace that failed.
    ``sources``: folder descriptors shared with the other files of a batch.
    ``compression``: each shipped range becomes gzip members or zstd frames
    (see ``_encode``); the destination then decompresses to the source."""
    try:
        f = open_source(src, sources)
    except SourceChanged as exc:
        # Swapped, replaced or moved since the scan: the next scan looks again.
        logger.debug("%s changed since the scan, skipped this cycle: %s", src.path, exc)
        raise SourceVanished(f"{src.path} changed since the scan: {exc}") from None
    except SourceNotRegular as exc:
        raise SourceUnreadable(f"cannot open: {exc}") from None
    except OSError as exc:
        raise SourceUnreadable(f"cannot open: {exc.strerror or exc}") from exc
    with f:
        st = os.fstat(f.fileno())
        size = st.st_size
        final = dest.path_of(src.dest)
        encode = encoder(compression)
        offset = None
        if prev is not None:
            offset = _append_offset(dest, f, size, st, prev, final, src.dest, encode is not None)
        # Taken before the copy: if the file is truncated and rewritten while
        # it is copied, the next cycle sees these no longer match and replaces.
        head, tail = fingerprints(f, size)
        # Compressed: the destination's bytes are not the source's, so the
        # CRC is always kept and the kernel copy never applies.
        local = encode is None and isinstance(dest.filesystem, pafs.LocalFileSystem)
        crc, offset = _content_crc(
            dest, f, final, size, prev, offset, keep=not local, defer=encode is not None
        )
        if encode is not None:
            encode.crc = 0 if offset is None else crc  # the copy goes on from there
        tmp = temps.next_for(final) if offset is None else ""
        try:
            read, sent, dest_size, mode = _write(
                dest, f, final, tmp, (offset, size), prev, encode, dirs, progress, chunk_size
            )
        except BaseException:
            if tmp:
                watch.add(tmp)  # removed already where it could be, but it may appear again
            raise
        dest_tail = ""
        if encode is not None:
            crc = encode.crc
            # Read back rather than kept from the write: the last member may be
            # shorter than FINGERPRINT_BYTES. One small read per shipped file.
            dest_tail = tail_of(dest, final, dest_size)
    entry = Entry(
        src.dest,
        size,
        st.st_mtime_ns,
        st.st_ino,
        st.st_dev,
        head,
        tail,
        st.st_ctime_ns,
        crc,
        dest_size,
        dest_tail,
        src.part,
    )
    return Shipped(entry, sent, mode, read)


def _write(
    dest: Destination,
    f: BinaryIO,
    final: str,
    tmp: str,
    span: tuple[int | None, int],
    prev: Entry | None,
    encode: Encoder | None,
    dirs: DirCache,
    progress: Progress | None,
    chunk_size: int,
) -> tuple[int, int, int, str]:
    """Append source bytes ``[offset, size)`` (``span``), or replace the whole
    file through ``tmp`` when ``offset`` is None. Returns (bytes read, bytes
    written, the destination file's size now, mode)."""
    offset, size = span
    local = encode is None and isinstance(dest.filesystem, pafs.LocalFileSystem)
    if offset is None:
        if local:
            read = sent = _replace_local(dest, f, final, tmp, size, dirs, progress, chunk_size)
        else:
            read, sent = _replace(dest, f, final, tmp, size, dirs, progress, chunk_size, encode)
        return read, sent, sent, "replace"
    # Bytes at the destination now: the append goes on from there.
    have = offset if encode is None or prev is None else prev.dest_size
    if offset == size:
        return 0, 0, have, "touch"
    if local:
        read = sent = _append_local(dest, f, final, offset, size, progress, chunk_size)
    else:
        read, sent = _append(dest, f, final, (offset, size, have), progress, chunk_size, encode)
    return read, sent, have + sent, "append"


def _content_crc(
    dest: Destination,
    f: BinaryIO,
    final: str,
    size: int,
    prev: Entry | None,
    offset: int | None,
    *,
    keep: bool,
    defer: bool = False,
) -> tuple[int, int | None]:
    """The CRC-32 of bytes ``[0, size)`` (``NO_CRC`` unless ``keep``) and the
    append offset, None when the file must be replaced after all. ``defer``
    (compressed copies): the copy computes the CRC of what it ships; this
    returns the value it starts from (the entry's, for an append or a touch).

    Read before the copy, so bytes changed during it make the next cycle's
    check differ rather than agree. Not kept for a local destination: there
    the extra pass cost a third of the big-file copy throughput
    (benchmarks/bench_copy.py --quick: 3,600 -> 2,300 MiB/s), and the
    destination file itself is as cheap to compare."""
    fd = f.fileno()
    crc: int | None = NO_CRC
    if prev is not None and offset is not None and size == prev.size:
        # Same size, yet the scan saw a new mtime or ctime: a touch, or bytes
        # written in place (a preallocated file) that the first and last
        # FINGERPRINT_BYTES do not show. Only all of them tell.
        if prev.crc == NO_CRC:
            if not _dest_range_matches(dest, f, final, 0, size):
                offset = None
        else:
            crc = checksum(fd, 0, size)
            if crc != prev.crc:
                offset = None
                if keep and crc is not None:
                    return crc, offset  # replaced: the CRC just read is the new one
        if offset is not None:
            return prev.crc, offset
    if defer:
        # A pass of its own cost 15% of a zstd copy (0.17 s of 1.2 s for 256 MiB).
        return (0 if prev is None or offset is None else prev.crc), offset
    if not keep:
        return NO_CRC, offset
    if prev is not None and offset is not None and prev.crc != NO_CRC:
        # Grown: only the new bytes are read (the prefix was checked by its
        # fingerprints; reading all of it every cycle would cost O(file)).
        crc = checksum(fd, prev.size, size, prev.crc)
    elif offset is None or prev is None:
        crc = checksum(fd, 0, size)
    else:
        return NO_CRC, offset  # appended to a file whose CRC is not known
    if crc is None:
        raise SourceVanished("shrank while being read")
    return crc, offset


def _append_offset(
    dest: Destination,
    f: BinaryIO,
    size: int,
    st: os.stat_result,
    prev: Entry,
    final: str,
    rel: str,
    compressed: bool = False,
) -> int | None:
    """Where to append from, or None when the file must be replaced."""
    if not dest.can_append or prev.dest != rel or prev.compressed != compressed:
        return None
    if compressed and prev.crc == NO_CRC:
        return None  # nothing to tell a touch from an in-place write: replace
    if (st.st_ino, st.st_dev) != (prev.ino, prev.dev) or size < prev.size:
        return None  # another file under the same name (rotation), or truncated
    if not prefix_matches(f, prev):
        return None  # truncated and rewritten past the old size (copytruncate)
    try:
        info = dest.filesystem.get_file_info(final)
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot stat {final}: {exc}") from exc
    if info.type != pafs.FileType.File:
        return None
    have = int(info.size or 0)
    if compressed:
        # A killed append may have left members past dest_size, whole or cut:
        # telling which would mean decompressing, so the file is replaced.
        return prev.size if have == prev.dest_size and dest_holds(dest, final, prev) else None
    if have != prev.size and not (
        # A copier killed mid-append left complete source bytes past the
        # manifest's size: keep them and go on from there.
        prev.size < have <= size and _dest_range_matches(dest, f, final, prev.size, have)
    ):
        return None
    if not dest_holds(dest, final, prev):
        return None  # replaced or rewritten by someone else: never append onto it
    return have


def dest_holds(dest: Destination, final: str, prev: Entry) -> bool:
    """Do the first and last bytes of the destination file match what was
    shipped? Two small reads: a size alone cannot tell our file from another
    writer's file of the same size. Compressed: its size and last bytes."""
    if prev.compressed:
        try:
            return tail_of(dest, final, prev.dest_size) == prev.dest_tail
        except DestinationFailure as exc:
            if isinstance(exc.__cause__, NotImplementedError):
                return False
            raise
    start = max(0, prev.size - FINGERPRINT_BYTES)
    try:
        with dest.filesystem.open_input_file(final) as remote:
            if remote.size() < prev.size:
                # Shorter to a reader than what was shipped: on HDFS a file a
                # killed writer left under construction reads short until its
                # lease is recovered. It does not hold our bytes: replace it.
                return False
            head = remote.read_at(min(prev.size, FINGERPRINT_BYTES), 0)
            tail = head[start:] if start == 0 else remote.read_at(prev.size - start, start)
    except NotImplementedError:
        return False  # no random access: cannot verify, so replace
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot read {final}: {exc}") from exc
    return digest(head) == prev.head and digest(tail) == prev.tail


def tail_of(dest: Destination, final: str, size: int) -> str:
    """Hash of the last ``FINGERPRINT_BYTES`` of the destination file, which
    must be ``size`` bytes long ("" when it is not: it then matches no entry)."""
    try:
        with dest.filesystem.open_input_file(final) as remote:
            if remote.size() != size:
                return ""
            start = max(0, size - FINGERPRINT_BYTES)
            return digest(remote.read_at(size - start, start))
    except NotImplementedError as exc:
        raise DestinationFailure(f"cannot read {final}: no random access") from exc
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot read {final}: {exc}") from exc


def _dest_range_matches(dest: Destination, f: BinaryIO, final: str, start: int, end: int) -> bool:
    fd = f.fileno()
    try:
        with dest.filesystem.open_input_file(final) as remote:
            pos = start
            while pos < end:
                n = min(CHUNK_SIZE, end - pos)
                theirs = remote.read_at(n, pos)
                if not theirs or os.pread(fd, len(theirs), pos) != theirs:
                    return False
                pos += len(theirs)
            return True
    except (OSError, pyarrow.ArrowException):
        return False  # cannot verify (e.g. no random access): replace instead


def copy_range(
    f: BinaryIO,
    out: pyarrow.NativeFile,
    start: int,
    end: int,
    progress: Progress | None,
    chunk_size: int,
    encode: Encoder | None = None,
) -> tuple[int, int]:
    """Source bytes ``[start, end)`` written to ``out``: (bytes read, bytes
    written). With ``encode`` (a compressed copy) each chunk becomes a
    member/frame and ``encode.crc`` is continued over the bytes as they are read.

    One thread reads, sums, compresses and writes in turn. A helper thread
    compressing chunk k while this one handled chunk k+1 was tried: on this
    2-core machine zstd was no faster (221 against 243 MiB/s, 256 MiB) and the
    loop's worst lag during a gzip copy rose to 13.7 ms (4.6 ms without;
    three runnable threads on two cores: a GIL holder preempted stalls the
    loop), so it was not kept. Summing here instead of in a pass before the
    copy saves that pass (0.17 s of 1.2 s for 256 MiB with zstd)."""
    fd = f.fileno()
    if encode is not None and start == end:
        # An empty file compressed is one empty member: zcat and zstd -d
        # refuse a file of zero bytes.
        return 0, _put(out, encode.compress(memoryview(b"")))
    pos = start
    written = 0
    # One buffer per transfer: a fresh 8 MiB bytes object per chunk costs page
    # faults that showed up as a third of the time in the big-file benchmark.
    view = memoryview(bytearray(max(1, min(chunk_size, end - start))))
    while pos < end:
        n = _read_into(fd, view[: min(len(view), end - pos)], pos)
        if encode is None:
            written += _put(out, view[:n])
        else:
            encode.crc = zlib.crc32(view[:n], encode.crc)
            written += _put(out, encode.compress(view[:n]))
        pos += n
        if progress is not None:
            progress.add(n)
    return pos - start, written


def _read_into(fd: int, view: memoryview, pos: int) -> int:
    try:
        n = os.preadv(fd, [view], pos)
    except OSError as exc:
        raise SourceUnreadable(f"read failed: {exc.strerror or exc}") from exc
    if not n:
        raise SourceVanished("shrank while being read")
    return n


def _put(out: pyarrow.NativeFile, data: bytes | memoryview | pyarrow.Buffer) -> int:
    try:
        out.write(data)
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"write failed: {exc}") from exc
    return len(data)


# ---------------------------------------------------------------- local fast path
#
# A LocalFileSystem destination is written with os calls and copy_file_range
# (the kernel copies, like ``cp``; no bytes cross into Python). Same protocol
# as the pyarrow path: temporary name + rename, or append after verification.

_NO_KERNEL_COPY = frozenset({errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL})


def _kernel_copy(
    src_fd: int,
    dst_fd: int,
    start: int,
    end: int,
    progress: Progress | None,
    chunk_size: int,
) -> int:
    """Copy source bytes [start, end) to the same offsets of ``dst_fd``."""
    pos = start
    kernel = hasattr(os, "copy_file_range")
    view: memoryview | None = None
    while pos < end:
        n = min(chunk_size, end - pos)
        if kernel:
            try:
                done = os.copy_file_range(src_fd, dst_fd, n, pos, pos)
            except OSError as exc:
                if exc.errno not in _NO_KERNEL_COPY:
                    raise
                kernel = False
                continue
        else:
            if view is None:
                view = memoryview(bytearray(min(chunk_size, end - start)))
            done = os.preadv(src_fd, [view[:n]], pos)
            written = 0
            while written < done:
                written += os.pwrite(dst_fd, view[written:done], pos + written)
        if done == 0:
            raise SourceVanished("shrank while being read")
        pos += done
        if progress is not None:
            progress.add(done)
    return pos - start


def _replace_local(
    dest: Destination,
    f: BinaryIO,
    final: str,
    tmp: str,
    size: int,
    dirs: DirCache,
    progress: Progress | None,
    chunk_size: int,
) -> int:
    try:
        dirs.ensure_local(os.path.dirname(final))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        dirs.forget()
        raise DestinationFailure(f"cannot create {tmp}: {exc.strerror or exc}") from exc
    try:
        try:
            sent = _kernel_copy(f.fileno(), fd, 0, size, progress, chunk_size)
            # Confirmed on the open file: the rename below moves this very inode.
            have = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if have != size:
            raise DestinationFailure(f"{tmp} holds {have} bytes, expected {size}")
        os.rename(tmp, final)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # if that fails, the caller's TempWatch retries it
        if isinstance(exc, OSError):
            raise DestinationFailure(f"cannot replace {final}: {exc.strerror or exc}") from exc
        raise
    return sent


def _append_local(
    dest: Destination,
    f: BinaryIO,
    final: str,
    offset: int,
    size: int,
    progress: Progress | None,
    chunk_size: int,
) -> int:
    try:
        # Not O_APPEND: copy_file_range refuses it; offsets are explicit instead.
        fd = os.open(final, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise DestinationFailure(f"cannot append to {final}: {exc.strerror or exc}") from exc
    try:
        sent = _kernel_copy(f.fileno(), fd, offset, size, progress, chunk_size)
    except OSError as exc:
        raise DestinationFailure(f"cannot append to {final}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    _confirm_local(final, size)
    return sent


def _confirm_local(final: str, size: int) -> None:
    try:
        have = os.stat(final).st_size
    except OSError as exc:
        raise DestinationFailure(f"cannot confirm {final}: {exc.strerror or exc}") from exc
    if have != size:
        raise DestinationFailure(f"{final} holds {have} bytes after the transfer, expected {size}")


def _append(
    dest: Destination,
    f: BinaryIO,
    final: str,
    span: tuple[int, int, int],
    progress: Progress | None,
    chunk_size: int,
    encode: Encoder | None,
) -> tuple[int, int]:
    """Source bytes ``[offset, size)`` appended to ``final``, which holds
    ``have`` bytes (``span``): (bytes read, bytes written)."""
    offset, size, have = span
    try:
        # compression=None: pyarrow's default ("detect") gzips what is appended
        # to a file named *.gz (and so on for .zst, .bz2, .lz4), even bytes
        # that are already compressed or a plain copy of such a file.
        out = dest.filesystem.open_append_stream(final, compression=None)
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot append to {final}: {exc}") from exc
    try:
        read, sent = copy_range(f, out, offset, size, progress, chunk_size, encode)
    finally:
        with contextlib.suppress(OSError, pyarrow.ArrowException):
            out.close()
    # A failed close is not trusted: confirm reads back what the destination holds.
    confirm(dest, final, have + sent)
    return read, sent


def _replace(
    dest: Destination,
    f: BinaryIO,
    final: str,
    tmp: str,
    size: int,
    dirs: DirCache,
    progress: Progress | None,
    chunk_size: int,
    encode: Encoder | None,
) -> tuple[int, int]:
    """(bytes read, bytes written)"""
    fs = dest.filesystem
    try:
        dirs.ensure(fs, posixpath.dirname(final))
        out = fs.open_output_stream(tmp, compression=None)
    except (OSError, pyarrow.ArrowException) as exc:
        dirs.forget()
        raise DestinationFailure(f"cannot create {tmp}: {exc}") from exc
    try:
        try:
            read, sent = copy_range(f, out, 0, size, progress, chunk_size, encode)
        except BaseException:
            # Close the failed writer too (an open HDFS file keeps its lease until the
            # writer is collected); its close error would only hide the cause.
            with contextlib.suppress(OSError, pyarrow.ArrowException):
                out.close()
            raise
        out.close()
        try:
            fs.move(tmp, final)
        except (OSError, pyarrow.ArrowException):
            # Some filesystems (HDFS) refuse to rename over an existing file.
            info = fs.get_file_info(final)
            if info.type != pafs.FileType.File:
                raise
            fs.delete_file(final)
            fs.move(tmp, final)
        confirm(dest, final, sent)
    except BaseException as exc:
        discard(fs, tmp)  # if that fails, the caller's TempWatch retries it
        if isinstance(exc, OSError | pyarrow.ArrowException):
            raise DestinationFailure(f"cannot replace {final}: {exc}") from exc
        raise
    return read, sent


def discard(fs: pafs.FileSystem, tmp: str) -> str | None:
    """Remove a temporary file; return its name if that failed too."""
    try:
        info = fs.get_file_info(tmp)
        if info.type == pafs.FileType.File:
            fs.delete_file(tmp)
        return None
    except (OSError, pyarrow.ArrowException):
        return tmp


def confirm(dest: Destination, final: str, size: int) -> None:
    """Only what the destination confirms goes into the manifest."""
    try:
        info = dest.filesystem.get_file_info(final)
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot confirm {final}: {exc}") from exc
    if info.type != pafs.FileType.File or int(info.size or 0) != size:
        raise DestinationFailure(
            f"{final} holds {info.size} bytes after the transfer, expected {size}"
        )


def ship_batch(
    dest: Destination,
    items: list[tuple[SourceFile, Entry | None]],
    *,
    temps: TempNames,
    dirs: DirCache,
    watch: TempWatch,
    progress: Progress | None = None,
    compression: Compression | None = None,
) -> list[Shipped | Exception]:
    """Ship several small files in one worker-thread call (one hop to a thread
    per file was most of the cost of a tree of small files). Each file gets its
    own outcome; a failure never stops the rest of the batch. Blocking."""
    outcomes: list[Shipped | Exception] = []
    with SourceDirs() as sources:
        for src, prev in items:
            try:
                outcomes.append(
                    ship_file(
                        dest,
                        src,
                        prev,
                        temps=temps,
                        dirs=dirs,
                        watch=watch,
                        progress=progress,
                        sources=sources,
                        compression=compression,
                    )
                )
            except (SourceVanished, SourceUnreadable, DestinationFailure) as exc:
                outcomes.append(exc)
    return outcomes


def remove_files(dest: Destination, paths: list[str]) -> list[str]:
    """Delete ``paths``; return those that could not be deleted. Blocking."""
    failed = []
    for path in paths:
        if discard(dest.filesystem, path) is not None:
            failed.append(path)
    return failed


class wait_capped(wait_base):
    """Caps the total of another wait. ``wait_exponential(max=...)`` caps only
    its own term: with ``+ wait_random(0, retry_delay)`` and retry_delay=3600
    the waits measured were 756 s and 3,489 s under a 60 s cap."""

    def __init__(self, inner: wait_base, cap: float) -> None:
        self.inner = inner
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        return max(0.0, min(self.cap, self.inner(retry_state)))


class stop_if(stop_base):
    """Stop retrying once ``check()`` is true (the copy is being stopped)."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self.check = check

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.check()


def retry_wait(retry_delay: float, cap: float = RETRY_CAP) -> wait_base:
    """Exponential backoff from ``retry_delay`` plus up to ``retry_delay`` of
    jitter; every wait, jitter included, at most ``cap`` seconds."""
    if retry_delay <= 0:
        return wait_none()
    # wait_exponential_jitter's ``initial`` is deprecated in tenacity 9.2 and its
    # replacement missing before; this sum is the same policy on every version.
    inner = wait_exponential(multiplier=retry_delay, max=cap) + wait_random(
        0, min(retry_delay, cap)
    )
    return wait_capped(inner, cap)


_T = TypeVar("_T")


async def ship_with_retry(
    ship: Callable[[], _T],
    *,
    max_retries: int,
    retry_delay: float,
    sleep: Callable[[float], Awaitable[None]],
    limiter: anyio.CapacityLimiter,
    give_up: Callable[[], bool] = lambda: False,
) -> _T:
    """Run ``ship`` in a worker thread, retrying destination failures:
    ``max_retries`` retries after the first attempt, exponential backoff from
    ``retry_delay`` with jitter, each wait capped at ``RETRY_CAP`` seconds; no
    retry once ``give_up()`` is true.

    A cancelled caller does not wait for the attempt in progress (a destination
    that hangs would hang it): the worker thread is abandoned and finishes on
    its own. Its result never reaches the manifest, so a later cycle verifies
    or redoes that file.
    """
    retrying = AsyncRetrying(
        stop=stop_after_attempt(max_retries + 1) | stop_if(give_up),
        wait=retry_wait(retry_delay),
        retry=retry_if_exception_type(DestinationFailure),
        sleep=sleep,
        reraise=True,
        before_sleep=before_sleep_log(logger, logging.DEBUG),
    )
    async for attempt in retrying:
        with attempt:
            return await anyio.to_thread.run_sync(ship, limiter=limiter, abandon_on_cancel=True)
    raise AssertionError("unreachable: tenacity reraises the last failure")
