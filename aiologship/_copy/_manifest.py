"""The durable record of what is shipped, one per copy_name and destination.

Lives in the copy's folder of the state dir (``_statedir`` names it), never at
the destination. Written atomically (temp file, fsync, rename, fsync of
the folder): a crash leaves the previous or the next version, never half of one.
If it is lost or corrupt, :func:`rebuild` recovers it from the destination.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import tempfile
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow.fs as pafs

from .._fs import Destination
from ._rollstate import RollState, RollStateCorrupt
from ._scan import SourceFile
from ._source import SourceChanged, SourceNotRegular, open_source
from ._statedir import MANIFEST_NAME as MANIFEST_NAME  # the name lives with the others

# 2: entries carry ctime_ns and crc. A version-1 manifest is rebuilt from the
# destination (a read, no upload). 3: entries carry dest_size and dest_tail
# (compressed copies); a version-2 entry reads as uncompressed. 4: "rollup",
# the roll files of a roll-up copy (``_rollstate``); absent, nothing is rolled.
# Format 4 is written only with a "rollup" section: a copy without roll-up
# writes format 3, which releases before roll-up read (downgrade-safe).
FORMAT_VERSION = 4
_FORMAT_WITHOUT_ROLLUP = 3
_OLDEST_USABLE = 2
# Bytes hashed at each end of the shipped range: enough to tell a truncated and
# rewritten log (copytruncate) from one that only grew, at O(1) cost per cycle.
FINGERPRINT_BYTES = 4096
_COMPARE_CHUNK = 1 << 20
NO_CRC = -1


@dataclass(frozen=True, slots=True)
class Entry:
    """One source file as last shipped: bytes ``[0, size)`` are at ``dest``."""

    dest: str
    size: int
    mtime_ns: int
    ino: int
    dev: int
    head: str  # hash of the first min(size, FINGERPRINT_BYTES) bytes
    tail: str  # hash of the FINGERPRINT_BYTES bytes ending at size
    ctime_ns: int
    # CRC-32 of bytes [0, size), extended by each append (zlib.crc32 takes a
    # running value): an in-place write that keeps the size, the first and the
    # last bytes (a preallocated file) is still told from a touch without
    # reading the destination back. NO_CRC where the destination is local:
    # the destination file is compared instead.
    crc: int
    # The destination file's size: ``size`` when shipped as is; for a
    # compressed copy, the compressed bytes (a gzip member or zstd frame per
    # shipped range). -1 at construction means ``size``.
    dest_size: int = -1
    # Compressed copies only ("" otherwise): hash of the destination file's last
    # min(dest_size, FINGERPRINT_BYTES) bytes. With dest_size it tells our file
    # from one someone else wrote, without decompressing it.
    dest_tail: str = ""
    # The partition of a templated destination that ``dest`` starts with
    # (``{date:...}`` rendered when the source was first seen), kept for the
    # file's life and across renames; "" without a template.
    part: str = ""

    def __post_init__(self) -> None:
        if self.dest_size < 0:
            object.__setattr__(self, "dest_size", self.size)

    @property
    def compressed(self) -> bool:
        return bool(self.dest_tail)

    def unchanged(self, f: SourceFile) -> bool:
        # ctime too: a writer can put the mtime back with utime(), not the ctime.
        return (
            f.dest == self.dest
            and f.size == self.size
            and f.mtime_ns == self.mtime_ns
            and f.ctime_ns == self.ctime_ns
            and f.ino == self.ino
            and f.dev == self.dev
        )


# ``dataclasses.asdict`` deep-copies every value through a recursive walk: with
# 5,000 entries it was about a sixth of a first cycle's CPU (py-spy, 5,000 files of
# 8 KiB). Entry holds only str and int, so its fields are read directly.
_ENTRY_FIELDS = tuple(f.name for f in fields(Entry))
_entry_values = operator.attrgetter(*_ENTRY_FIELDS)


class ManifestCorrupt(Exception):
    """The manifest file exists but cannot be used (reason in the message)."""


class ManifestOutdated(ManifestCorrupt):
    """The manifest was written by an older version: rebuilt, nothing is wrong."""


class Manifest:
    """The entries of one copy, keyed by source path. Not thread-safe: the
    engine mutates it on its event loop and saves snapshots in a thread."""

    def __init__(self, path: Path, *, copy_name: str, destination: str) -> None:
        self.path = path
        self.copy_name = copy_name
        self.destination = destination  # redacted
        self.entries: dict[str, Entry] = {}
        # Sources absent from the last scan: their entries are dropped if they
        # are still absent next cycle (kept across restarts, so a copier run
        # once a minute by cron prunes too).
        self.absent: set[str] = set()
        self.rollup = RollState()

    @classmethod
    def load(cls, path: Path, *, copy_name: str, destination: str) -> Manifest | None:
        """The stored manifest, ``None`` if there is none; raises ``ManifestCorrupt``."""
        manifest = cls(path, copy_name=copy_name, destination=destination)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw)
            version = data.get("version")
            if version not in range(1, FORMAT_VERSION + 1) or isinstance(version, bool):
                raise ManifestCorrupt(f"unknown format version {version!r}")
            if data.get("destination") != destination:
                other = data.get("destination")
                raise ManifestCorrupt(f"written for another destination {other!r}")
            if version < _OLDEST_USABLE:
                raise ManifestOutdated(f"format version {version} predates content checksums")
            entries = data["files"]
            if not isinstance(entries, dict):
                raise ManifestCorrupt("'files' is not a mapping")
            for source, item in entries.items():
                manifest.entries[source] = _entry(source, item)
            absent = data.get("absent", [])
            if not isinstance(absent, list) or not all(isinstance(p, str) for p in absent):
                raise ManifestCorrupt("'absent' is not a list of paths")
            manifest.absent = set(absent) & manifest.entries.keys()
            if "rollup" in data:
                manifest.rollup = load_rollup(data["rollup"])
        except ManifestCorrupt:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ManifestCorrupt(f"unreadable: {type(exc).__name__}: {exc}") from exc
        return manifest

    def snapshot(self) -> bytes:
        data = {
            "version": FORMAT_VERSION if self.rollup else _FORMAT_WITHOUT_ROLLUP,
            "copy_name": self.copy_name,
            "destination": self.destination,
            "files": {
                k: dict(zip(_ENTRY_FIELDS, _entry_values(v), strict=True))
                for k, v in sorted(self.entries.items())
            },
            "absent": sorted(self.absent),
        }
        if self.rollup:
            data["rollup"] = self.rollup.to_json()
        return json.dumps(data, separators=(",", ":")).encode()

    def owners(self) -> dict[str, str]:
        """destination path -> source path."""
        return {e.dest: source for source, e in self.entries.items()}


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` atomically and durably. Blocking."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


_HASH_RE = re.compile(r"[0-9a-f]{32}")
_INT_FIELDS = ("size", "mtime_ns", "ino", "dev", "ctime_ns", "crc")


def _entry(source: Any, item: Any) -> Entry:
    """An entry read from JSON, checked so that a valid-JSON manifest with
    nonsense in it is rebuilt instead of failing every cycle."""
    if not isinstance(source, str) or not os.path.isabs(source):
        raise ManifestCorrupt(f"source {source!r} is not an absolute path")
    if not isinstance(item, Mapping):
        raise ManifestCorrupt(f"the entry of {source!r} is not a mapping")
    fields: dict[str, Any] = {}
    for name in ("dest", "head", "tail", *_INT_FIELDS):
        value = item[name]
        kind = int if name in _INT_FIELDS else str
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ManifestCorrupt(f"{source!r}: field {name!r} has the wrong type")
        fields[name] = value
    dest = fields["dest"]
    if not dest_name_ok(dest):
        raise ManifestCorrupt(f"{source!r}: destination name {dest!r} is not a relative path")
    for name in ("size", "ino", "dev"):
        if fields[name] < 0:
            raise ManifestCorrupt(f"{source!r}: {name} {fields[name]} is negative")
    fields["part"] = part = item.get("part", "")
    if not isinstance(part, str) or (
        part and not (part.endswith("/") and dest_name_ok(part[:-1]) and dest.startswith(part))
    ):
        raise ManifestCorrupt(f"{source!r}: partition {part!r} is not a folder of {dest!r}")
    fields["dest_size"] = item.get("dest_size", fields["size"])
    fields["dest_tail"] = item.get("dest_tail", "")
    if isinstance(fields["dest_size"], bool) or not isinstance(fields["dest_size"], int):
        raise ManifestCorrupt(f"{source!r}: field 'dest_size' has the wrong type")
    if fields["dest_size"] < 0:
        raise ManifestCorrupt(f"{source!r}: dest_size {fields['dest_size']} is negative")
    if fields["dest_tail"] != "" and not (
        isinstance(fields["dest_tail"], str) and _HASH_RE.fullmatch(fields["dest_tail"])
    ):
        raise ManifestCorrupt(f"{source!r}: dest_tail {fields['dest_tail']!r} is not a fingerprint")
    if not NO_CRC <= fields["crc"] < 1 << 32:
        raise ManifestCorrupt(f"{source!r}: crc {fields['crc']} is not a CRC-32")
    for name in ("head", "tail"):
        if not _HASH_RE.fullmatch(fields[name]):
            raise ManifestCorrupt(f"{source!r}: {name} {fields[name]!r} is not a fingerprint")
    return Entry(**fields)


def load_rollup(data: Any) -> RollState:
    """The ``rollup`` section (of a manifest or the ledger); raises ``ManifestCorrupt``."""
    try:
        state = RollState.from_json(data)
    except RollStateCorrupt as exc:
        raise ManifestCorrupt(f"rollup: {exc}") from exc
    rolls = [*state.rolls.values(), *([state.pending.roll] if state.pending else [])]
    for roll in rolls:
        if not dest_name_ok(roll.name):
            raise ManifestCorrupt(f"rollup: roll name {roll.name!r} is not a relative path")
    return state


def dest_name_ok(name: str) -> bool:
    """A ``/``-separated path below the destination base, nothing else."""
    if not name or name.startswith("/") or "\x00" in name:
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


# ---------------------------------------------------------------- fingerprints


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprints(f: BinaryIO, size: int) -> tuple[str, str]:
    """(head, tail) hashes of bytes ``[0, size)`` of the open file ``f``."""
    fd = f.fileno()
    head = os.pread(fd, min(size, FINGERPRINT_BYTES), 0)
    start = max(0, size - FINGERPRINT_BYTES)
    tail = head[start:] if size <= FINGERPRINT_BYTES else os.pread(fd, size - start, start)
    return digest(head), digest(tail)


def checksum(fd: int, start: int, end: int, crc: int = 0) -> int | None:
    """CRC-32 of bytes ``[start, end)`` of ``fd``, continued from ``crc``;
    None when the file ends first. zlib.crc32 releases the GIL on large buffers."""
    view = memoryview(bytearray(max(1, min(_COMPARE_CHUNK, end - start))))
    pos = start
    while pos < end:
        n = os.preadv(fd, [view[: min(len(view), end - pos)]], pos)
        if not n:
            return None
        crc = zlib.crc32(view[:n], crc)
        pos += n
    return crc


def prefix_matches(f: BinaryIO, entry: Entry) -> bool:
    """Do bytes ``[0, entry.size)`` of ``f`` still look like what was shipped?"""
    head, tail = fingerprints(f, entry.size)
    return head == entry.head and tail == entry.tail


# ---------------------------------------------------------------- rebuild


def list_destination(dest: Destination) -> dict[str, int]:
    """Every file under the destination base: relative path -> size. Blocking."""
    selector = pafs.FileSelector(dest.base_path, recursive=True, allow_not_found=True)
    prefix = dest.base_path.rstrip("/") + "/" if dest.base_path else ""
    found: dict[str, int] = {}
    for info in dest.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File:
            rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
            found[rel] = int(info.size or 0)
    return found


def rebuild(
    dest: Destination, sources: Iterable[SourceFile], listing: Mapping[str, int]
) -> dict[str, Entry]:
    """Entries for sources whose destination file holds a prefix of their bytes.

    The destination file is compared byte for byte with the source (a read, no
    upload): an identical file is recorded as shipped, a shorter prefix as
    partly shipped (the next cycle appends the rest), anything else is left out
    and replaced. Not used for compressed copies (their destination bytes are
    not the source's): there a file without an entry is replaced. Blocking.
    """
    entries: dict[str, Entry] = {}
    for src in sources:
        size = listing.get(src.dest)
        if size is None:
            continue
        try:
            # Opened as a transfer opens it: a path swapped for a symlink or a
            # FIFO since the scan is neither followed nor allowed to block.
            with open_source(src) as f:
                st = os.fstat(f.fileno())
                if size > st.st_size:
                    continue
                crc = _same_prefix(dest, src.dest, f, size)
                if crc is None:
                    continue
                head, tail = fingerprints(f, size)
        except (OSError, SourceChanged, SourceNotRegular):
            continue  # unreadable, vanished or changed: the cycle reports or skips it
        entries[src.path] = Entry(
            dest=src.dest,
            size=size,
            # A partial prefix must not look unchanged: -1 forces the append path.
            mtime_ns=st.st_mtime_ns if size == st.st_size else -1,
            ino=st.st_ino,
            dev=st.st_dev,
            head=head,
            tail=tail,
            ctime_ns=st.st_ctime_ns,
            crc=crc,
            part=src.part,
        )
    return entries


def _same_prefix(dest: Destination, rel: str, f: BinaryIO, size: int) -> int | None:
    """CRC-32 of the destination file if it holds bytes ``[0, size)`` of ``f``, else None."""
    fd = f.fileno()
    offset = 0
    crc = 0
    # compression=None: pyarrow's default ("detect") would decompress a file
    # named *.gz on the fly and compare the wrong bytes.
    with dest.filesystem.open_input_stream(dest.path_of(rel), compression=None) as remote:
        while offset < size:
            want = min(_COMPARE_CHUNK, size - offset)
            theirs = remote.read(want)
            if not theirs or os.pread(fd, len(theirs), offset) != theirs:
                return None
            crc = zlib.crc32(theirs, crc)
            offset += len(theirs)
    return crc if offset == size else None
