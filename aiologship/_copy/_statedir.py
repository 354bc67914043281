"""Every name a copy puts in the state directory, and the locks that keep one
copier per copy.

::

    <state_dir>/
      <slug>-<name hash>-<destination hash>/  one folder per copy_name and destination
        manifest.json                          what is shipped (``_manifest``)
        status.json                            last status, for ``aiologship status``
      locks/
        <percent-encoded copy_name>.lock       host lock (``aiologship._copiers._coordination``)
        engine/<folder name>.lock              the engine's lock on that folder
      nodes/<Ray node id>/                     the same layout, per node, for the
                                               Ray copiers of ``scope="node"``

The engine's lock lives outside the folder it guards: removing a copy's folder
(a careless ``rm -rf``) must not free the lock while its copier still runs. The
engine never deletes a lock file, and checks before each cycle that the file it
holds is still the one at the path (see :class:`StateLock`).

Imports nothing heavy: ``aiologship status`` reads the state through this module
without loading pyarrow.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from .._exceptions import CopyError

logger = logging.getLogger("aiologship.copy")

MANIFEST_NAME = "manifest.json"
STATUS_NAME = "status.json"
LOCKS_DIR = "locks"
ENGINE_LOCKS_DIR = "engine"  # under LOCKS_DIR
NODES_DIR = "nodes"
LEGACY_LOCK_NAME = "lock"  # inside the copy's folder, before the lock moved out
_PROBE_NAME = ".probe"
_SLUG_CHARS = 80
# 64 bits: two names meet in one folder only by a deliberate collision of blake2b.
_NAME_HASH_BYTES = 8
# Longest percent-encoded copy_name kept whole in a host lock name (NAME_MAX is
# 255 bytes on Linux and macOS).
_LOCK_NAME_CHARS = 160
# A lock found taken is tried this many more times, this far apart (seconds).
_BUSY_RETRIES = 3
_BUSY_PAUSE = 0.02


# ------------------------------------------------------------------ names


def _exact(copy_name: str) -> bytes:
    # A name decoded with surrogateescape (os.fsdecode) holds lone surrogates;
    # surrogatepass encodes every str, and distinct strs to distinct bytes.
    return copy_name.encode("utf-8", "surrogatepass")


def _slug(copy_name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", copy_name).strip("._") or "copy"


def _destination_digest(destination_redacted: str) -> str:
    # Of the redacted destination, so a rotated password keeps the same folder.
    return hashlib.sha256(destination_redacted.encode()).hexdigest()[:12]


def state_key(copy_name: str, destination_redacted: str) -> str:
    """Folder name of one copy's state: a readable slug of ``copy_name``, a hash of
    its exact text (so "日志" and "ログ", "a/b" and "a b" never share a folder) and
    a hash of the redacted destination."""
    name_hash = hashlib.blake2b(_exact(copy_name), digest_size=_NAME_HASH_BYTES).hexdigest()
    return (
        f"{_slug(copy_name)[:_SLUG_CHARS]}-{name_hash}-{_destination_digest(destination_redacted)}"
    )


def legacy_state_key(copy_name: str, destination_redacted: str) -> str:
    """The folder name older versions used (slug and destination hash only, so
    distinct names could share it); read only to adopt such a folder."""
    return f"{_slug(copy_name)[:_SLUG_CHARS]}-{_destination_digest(destination_redacted)}"


def node_state_dir(state_dir: Path, node_id: str) -> Path:
    """Per-node state of ``scope="node"`` copiers: on one machine all Ray nodes
    share the disk and the state dir."""
    return state_dir / NODES_DIR / node_id


def engine_lock_path(state_dir: Path, key: str) -> Path:
    return Path(state_dir) / LOCKS_DIR / ENGINE_LOCKS_DIR / f"{key}.lock"


def host_lock_path(state_dir: Path, copy_name: str) -> Path:
    """One host lock per copy_name. Percent-encoded, so ``a/b`` or ``..`` cannot
    escape the folder and distinct names never share a file; a long name keeps a
    prefix and a hash ("%" followed by "~" never comes out of ``quote``)."""
    safe = quote(copy_name, safe="-_.", errors="surrogatepass")
    if safe.strip(".") == "":
        safe = safe.replace(".", "%2E")
    if len(safe) > _LOCK_NAME_CHARS:
        digest = hashlib.blake2b(_exact(copy_name), digest_size=16).hexdigest()
        safe = f"{safe[: _LOCK_NAME_CHARS - 40]}%~{digest}"
    return Path(state_dir) / LOCKS_DIR / f"{safe}.lock"


# ------------------------------------------------------------------ folder


def prepare_folder(folder: Path) -> None:
    """Create ``folder``, prove a file can be written there, and remove the
    half-written replacements (``.manifest.json.XXXX.tmp``) of a process killed
    while it saved. Called by the engine lock's holder only: no other process is
    writing one now. Raises OSError."""
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / _PROBE_NAME
    fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    os.close(fd)
    os.unlink(probe)
    for name in (MANIFEST_NAME, STATUS_NAME):
        for stale in folder.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()


def adopt_legacy_folder(state_dir: Path, copy_name: str, destination_redacted: str) -> bool:
    """Rename the folder an older version kept for this copy to its current name,
    so an upgrade does not ship everything again. Only a folder whose manifest
    names exactly ``copy_name`` is taken (distinct names could share the old
    name). Call it holding the engine lock. Raises ``CopyError`` when an older
    version still runs this copy (it holds the old folder's lock)."""
    new = Path(state_dir) / state_key(copy_name, destination_redacted)
    old = Path(state_dir) / legacy_state_key(copy_name, destination_redacted)
    if new.exists() or not old.is_dir():
        return False
    try:
        owner = json.loads((old / MANIFEST_NAME).read_bytes()).get("copy_name")
    except (OSError, ValueError, AttributeError):
        return False
    if owner != copy_name:
        return False
    try:
        fd = os.open(old / LEGACY_LOCK_NAME, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        fd = None
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CopyError(
                    f"copy operation {copy_name!r} is already running in a process of an "
                    f"older aiologship (it holds {old / LEGACY_LOCK_NAME})"
                ) from None
        os.rename(old, new)
    finally:
        if fd is not None:
            os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(new / LEGACY_LOCK_NAME)
    logger.info("copy %r: state folder %s renamed to %s", copy_name, old, new)
    return True


def write_status_file(path: Path, payload: bytes) -> None:
    """Replace ``path`` atomically, without fsync: status.json only informs a
    reader; after a power loss it may be stale or missing, never half written
    by this process. Blocking; raises OSError."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# ------------------------------------------------------------------ engine lock


class StateLock:
    """``fcntl.flock`` on ``<state_dir>/locks/engine/<key>.lock``: one engine per
    copy folder per host. The kernel drops it when the holder dies.

    A flock belongs to a file, not to a path: once the file is unlinked (the
    state dir removed), another process creates a new file at the same path and
    locks it too. :meth:`verify` notices this (the inode at the path is not the
    one held) and takes the lock on the new file if it is free, else reports it
    lost. Not for NFS state dirs (flock there is local to each client)."""

    def __init__(self, path: Path, copy_name: str) -> None:
        self.path = path
        self.copy_name = copy_name
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise ``CopyError`` naming the holder; OSError when the
        file cannot be created."""
        fd = self._take()
        if fd is None:
            raise CopyError(
                f"copy operation {self.copy_name!r} is already running in another process "
                f"({self._holder() or 'unknown'}; {self.path} is locked)"
            )
        self._fd = fd

    def verify(self) -> None:
        """Check that the file locked is still the one at :attr:`path`. When it was
        removed or replaced, lock the new file if nobody holds it (with a
        WARNING); otherwise release and raise ``CopyError``: another copier of
        this copy may be running. OSError when the lock cannot be checked."""
        if self._fd is None:
            raise CopyError(f"copy operation {self.copy_name!r} does not hold its lock")
        if self._same_file(self._fd):
            return
        self.release()
        try:
            fd = self._take()
        except OSError as exc:
            raise CopyError(
                f"copy operation {self.copy_name!r}: its lock file {self.path} was removed "
                f"or replaced and cannot be locked again ({exc.strerror or exc}); this "
                "copier stops rather than risk running beside another one"
            ) from exc
        if fd is None:
            raise CopyError(
                f"copy operation {self.copy_name!r}: its lock file {self.path} was removed "
                f"or replaced, and another process ({self._holder() or 'unknown'}) now "
                "holds it; this copier stops rather than run beside it"
            )
        self._fd = fd
        logger.warning(
            "copy %r: lock file %s was removed or replaced while this copier ran; "
            "nobody else held it, so it is locked again",
            self.copy_name,
            self.path,
        )

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing drops the flock

    def _take(self) -> int | None:
        """A locked fd whose file is the one at the path, or None if another
        process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        busy = 0
        # Another process may replace the file between our open and our flock;
        # locking a file no longer at the path proves nothing, so look again.
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                same = self._same_file(fd)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                busy += 1
                if busy > _BUSY_RETRIES:
                    return None
                # ``aiologship status`` holds a shared flock for a few microseconds
                # to look: not a copier, so look again before giving up.
                time.sleep(_BUSY_PAUSE)
                continue
            except BaseException:
                os.close(fd)
                raise
            if same:
                # Who holds it, for the message of the next one; the lock is the flock.
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)
        raise OSError(errno.EAGAIN, f"{self.path} keeps being replaced")

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        held = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    def _holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""


def lock_held(path: Path) -> bool:
    """Does a process on this host hold the flock on ``path``? (Readers only.)"""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


# ------------------------------------------------------------------ writer identity


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """An identity of process ``pid`` that a later process reusing the pid does not
    share: boot id and start time (field 22 of ``/proc/<pid>/stat``, clock ticks
    since boot). None without /proc or when there is no such process."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # Field 2 is the command in parentheses and may itself hold ") ": the fields
    # after it start after the last ")".
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        start = fields[19].decode()
    except IndexError:
        return None
    return f"{_boot_id()}:{start}"


@functools.lru_cache(maxsize=1)
def _identity_of(pid: int) -> tuple[str, str | None]:
    return socket.gethostname(), process_start(pid)


def writer_identity() -> dict[str, object]:
    """What status.json records of the process writing it (looked up once per
    process, a forked child included: a status is written every cycle)."""
    pid = os.getpid()
    host, start = _identity_of(pid)
    return {"pid": pid, "host": host, "pid_start": start}


def writer_alive(pid: object, host: object, pid_start: object) -> bool | None:
    """Is the process that wrote a status still running? None when that cannot be
    told from here (another host, or no pid recorded)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    if host != socket.gethostname():
        return None
    now = process_start(pid)
    if now is not None:
        return pid_start is None or now == pid_start
    if os.path.isdir("/proc"):
        return False  # /proc lists every process: this one is gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
