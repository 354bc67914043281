"""Roll-up of sealed files (``rollup=``): the blocking parts.

A source is *sealed* once it has not been modified for ``settle`` seconds (its
mtime, against the engine's clock). Its bytes not yet rolled, ``[rolled, size)``,
are then appended to the open roll file of its partition, as gzip members / zstd
frames when compressed (RFC 1952 2.2, RFC 8878 3: they concatenate). A file
that grows again after that (a quiet live log) is rolled again from where it
stopped; one rewritten (copytruncate: its first or last rolled bytes differ)
is a new version, rolled from 0. Renamed files are followed by inode and
fingerprints, as the mirroring copy does. Live files wait: the point is few
large destination files, and a mirrored live file is one more small file.

One append at a time is *pending*: saved (manifest and ledger) before its first
byte is written, committed after the destination confirms it. After a crash,
:func:`recover` finds the roll file either at its committed size (the append
is dropped and planned again), or longer and holding exactly the pending
append (adopted), or anything else (cut back to the committed size through a
temporary copy: pyarrow cannot truncate). No range is ever in a roll twice.

Everything here blocks: it runs in worker threads while the cycle lock is held.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow
import pyarrow.fs as pafs

from .._exceptions import CopyError
from .._fs import Destination
from ._encode import encoder
from ._manifest import FINGERPRINT_BYTES, ManifestCorrupt, digest, fingerprints, load_rollup
from ._rollstate import LEDGER_SUFFIX, Pending, Retired, Roll, Rolled, RollState, Seen, Span
from ._scan import SourceFile
from ._source import SourceChanged, SourceNotRegular, open_source
from ._spec import Compression, RollUp
from ._tempwatch import TempWatch
from ._transfer import (
    CHUNK_SIZE,
    DestinationFailure,
    DirCache,
    SourceUnreadable,
    SourceVanished,
    TempNames,
    confirm,
    copy_range,
    discard,
    tail_of,
)

_REPAIR_MARK = ".aiologship-repair"
# The ledger's layout (``"version"``; a ledger without one is version 1). One
# of another version is refused, never taken for "no ledger".
LEDGER_VERSION = 1
_SLUG_RE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class RollIO:
    """What writing and settling roll files needs: the destination, the codec,
    the copy's temporary names, its cache of destination folders, and the watch
    on temporary files that failed writes may leave."""

    dest: Destination
    compression: Compression | None
    temps: TempNames
    dirs: DirCache
    watch: TempWatch


class LedgerUnusable(CopyError):
    """The ledger, needed after a lost manifest, cannot be used (corrupt, or of
    another version): each cycle fails with this until it is dealt with."""


class RollChanged(Exception):
    """The roll file is not what the state says (someone else wrote, cut or
    removed it): it is closed, never appended to, and a new one is opened."""


@dataclass(frozen=True, slots=True)
class Claim:
    """Bytes ``[start, f.size)`` of the sealed source ``f`` are to be rolled."""

    f: SourceFile
    start: int


@dataclass(slots=True)
class RollPlan:
    claims: list[Claim]  # oldest first
    waiting: list[SourceFile]  # new bytes, not sealed yet
    changed: bool  # records moved or dropped: save


# ---------------------------------------------------------------- planning


def plan_rollup(
    state: RollState, files: Sequence[SourceFile], now: float, settle: float
) -> RollPlan:
    """What to roll this cycle; follows renames and prunes ``state`` in place.

    Every file is judged against the records as they were before this cycle,
    and the moves are applied after: with numbered rotation (``app.log.1`` ->
    ``app.log.2``, ``app.log`` -> ``app.log.1``) one file's new name is another's
    old one, whatever order they are looked at in. A file no record follows is
    looked at last, against the retired records (a truncated source's old
    version, a source gone from the scans), whose bytes it may hold already."""
    out = RollPlan([], [], False)
    live = {f.path: f for f in files}
    by_ident: dict[tuple[int, int], list[str]] = {}
    for path, known in state.sources.items():
        g = live.get(path)
        if g is None or (g.dev, g.ino) != (known.dev, known.ino):
            by_ident.setdefault((known.dev, known.ino), []).append(path)
    moved_from: list[str] = []
    updated: dict[str, Rolled] = {}
    changed = False
    ordered = sorted(files, key=lambda g: (g.mtime_ns, g.path))
    starts: dict[str, int | None] = {}
    for f in ordered:
        rec: Rolled | None = state.sources.get(f.path)
        if rec is None or (rec.dev, rec.ino) != (f.dev, f.ino):
            old, rec = _follow_rename(state, f, by_ident)
            if old is not None and rec is not None:
                moved_from.append(old)
                updated[f.path] = rec
        if rec is None:
            continue  # judged below
        start, touched = _rolled_up_to(f, rec)
        if touched is not None:
            updated[f.path] = touched
        if start == 0 and rec.size:
            # Truncated or rewritten in place (copytruncate): its copy, a new
            # file, may hold the rolled bytes. Followed on as a new version.
            state.retire(Retired(f.path, rec, now, same_file=False))
            updated[f.path] = _new_version(f, rec)
        starts[f.path] = start
    for f in ordered:
        if f.path not in starts:
            taken = _take_up_retired(state, f)
            if taken is _UNSURE:
                starts[f.path] = None  # could not be read: judged next cycle
            elif taken is None:
                starts[f.path] = 0
            else:
                starts[f.path] = taken.size
                updated[f.path] = taken
                changed = True
        start = starts[f.path]
        if start is None or start >= f.size:
            continue
        if now - f.mtime_ns / 1e9 >= settle:
            out.claims.append(Claim(f, start))
        else:
            out.waiting.append(f)
    for old in moved_from:
        del state.sources[old]
    # Records no file follows any more, kept retired (same file: device, inode):
    # back again, each resumes where it stopped.
    retiring: list[Retired] = []
    for path, rec in list(state.sources.items()):
        g = live.get(path)
        if g is not None and (g.dev, g.ino) != (rec.dev, rec.ino):
            # Another file holds the path now, and no file here is the old one
            # renamed: it was moved out of the pattern or deleted. Kept retired,
            # as a file gone from the scans is, so back under a matching name
            # it resumes where it stopped instead of being rolled again.
            del state.sources[path]
            if rec.size:
                retiring.append(Retired(path, rec, now, same_file=True))
            changed = True
    state.sources.update(updated)
    out.changed = bool(changed or moved_from or updated)
    absent = {path for path in state.sources if path not in live}
    for path in sorted(absent & state.absent):  # absent two cycles in a row: gone
        rec = state.sources.pop(path)
        if rec.size:
            retiring.append(Retired(path, rec, now, same_file=True))
        out.changed = True
    state.retire_all(retiring)
    if state.absent != absent - state.absent:
        state.absent = absent - state.absent
        out.changed = True
    if _note_seen(state, files):
        out.changed = True
    if state.prune_retired(now):
        out.changed = True
    if state.prune():
        out.changed = True
    return out


def _note_seen(state: RollState, files: Sequence[SourceFile]) -> bool:
    """Keep the partition of each file of a templated copy that no record
    follows (one being written: placed again each cycle, it would take the
    partition of the day it is rolled); forget it once a record does or the
    file is gone. True when changed."""
    seen: dict[str, Seen] = {}
    for f in files:
        rec = state.sources.get(f.path)
        if f.part and (rec is None or (rec.dev, rec.ino) != (f.dev, f.ino)):
            seen[f.path] = Seen(f.dev, f.ino, f.part)
    if seen == state.seen:
        return False
    state.seen = seen
    return True


def _new_version(f: SourceFile, rec: Rolled) -> Rolled:
    """The record of ``f`` rewritten in place: nothing of it rolled yet."""
    empty = digest(b"")
    return dataclasses.replace(
        rec, size=0, mtime_ns=-1, ctime_ns=-1, head=empty, tail=empty, part=f.part
    )


_UNSURE: Any = object()  # _take_up_retired could not read a candidate


def _take_up_retired(state: RollState, f: SourceFile) -> Rolled | None:
    """The record for ``f``, which no record follows, if it holds a retired
    record's bytes (that record is then used up); None otherwise; ``_UNSURE``
    when a file that may hold them could not be read (starting it at 0 could
    roll its bytes twice).

    A truncated file's record goes only to a file of the same folder whose name
    starts with its name (``app.log.1``, ``app.log-20270115``: what logrotate's
    copytruncate makes): any other file that merely starts with the same bytes
    (a fixed banner or CSV header as a whole small file) must not skip them."""
    for item in reversed(state.retired):  # the newest first
        rec = item.rec
        if rec.size > f.size:
            continue
        if item.same_file:
            if (rec.dev, rec.ino) != (f.dev, f.ino):
                continue
        elif not _copy_of(item.path, f.path):
            continue
        held = _holds_prefix(f, rec)
        if held is None:
            return _UNSURE  # type: ignore[no-any-return]
        if not held:
            continue
        state.retired.remove(item)
        same = f.size == rec.size
        return dataclasses.replace(
            rec,
            mtime_ns=f.mtime_ns if same else -1,
            ctime_ns=f.ctime_ns if same else -1,
            ino=f.ino,
            dev=f.dev,
            part=f.part,
        )
    return None


def _follow_rename(
    state: RollState, f: SourceFile, by_ident: dict[tuple[int, int], list[str]]
) -> tuple[str | None, Rolled | None]:
    """(old path, record) of the source ``f`` was before a rename, if any."""
    for old in by_ident.get((f.dev, f.ino), ()):
        rec = state.sources.get(old)
        if rec is None or old == f.path or not _holds_prefix(f, rec):
            continue
        by_ident[(f.dev, f.ino)].remove(old)
        return old, rec
    return None, None


def _rolled_up_to(f: SourceFile, rec: Rolled | None) -> tuple[int | None, Rolled | None]:
    """Where ``f``'s bytes not yet rolled start (None: unreadable now), and its
    record with new times when it was only touched."""
    if rec is None or (rec.dev, rec.ino) != (f.dev, f.ino):
        return 0, None
    if (f.size, f.mtime_ns, f.ctime_ns) == (rec.size, rec.mtime_ns, rec.ctime_ns):
        return f.size, None
    if f.size < rec.size:
        return 0, None  # truncated: a new version
    held = _holds_prefix(f, rec)
    if held is None:
        return None, None
    if not held:
        return 0, None  # rewritten (copytruncate): a new version
    if f.size == rec.size:  # touched: only the times changed
        return rec.size, dataclasses.replace(rec, mtime_ns=f.mtime_ns, ctime_ns=f.ctime_ns)
    return rec.size, None


def _copy_of(original: str, candidate: str) -> bool:
    """Could ``candidate`` be a rotated copy of ``original`` (same folder, its
    name plus a suffix)?"""
    folder, name = os.path.split(original)
    other_folder, other = os.path.split(candidate)
    return folder == other_folder and other != name and other.startswith(name)


def _holds_prefix(f: SourceFile, rec: Rolled) -> bool | None:
    if f.size < rec.size:
        return False
    try:
        with open_source(f) as fh:
            return fingerprints(fh, rec.size) == (rec.head, rec.tail)
    except (OSError, SourceChanged, SourceNotRegular):
        return None


# ---------------------------------------------------------------- the next append


def roll_name(copy_name: str, part: str, now: float, seq: int, suffix: str) -> str:
    """``<part><copy_name>-<UTC time opened>-<seq>.log<.gz|.zst>``: sorts by age."""
    stamp = datetime.fromtimestamp(now, UTC).strftime("%Y%m%dT%H%M%SZ")
    slug = _SLUG_RE.sub("_", copy_name).strip("._") or "copy"
    return f"{part}{slug}-{stamp}-{seq:06d}.log{suffix}"


def budget(rollup: RollUp, roll: Roll) -> int:
    """Source bytes the next append to ``roll`` may take. Compressed, the ratio
    the roll has shown so far estimates what fits (1:1 before its first append)."""
    if rollup.size is None:
        return 1 << 62
    room = max(0, rollup.size - roll.dest_size)
    ratio = roll.source_bytes / roll.dest_size if roll.dest_size else 1.0
    return max(1, int(room * ratio))


def take(claims: list[Claim], limit: int) -> tuple[list[tuple[Claim, int]], list[Claim]]:
    """The claims (with the end each is cut at) fitting ``limit`` source bytes,
    and what is left; the last one taken may be cut."""
    taken: list[tuple[Claim, int]] = []
    left = limit
    for i, c in enumerate(claims):
        n = c.f.size - c.start
        if n <= left:
            taken.append((c, c.f.size))
            left -= n
            continue
        if left > 0:
            cut = c.start + left
            taken.append((c, cut))
            return taken, [Claim(c.f, cut), *claims[i + 1 :]]
        return taken, claims[i:]
    return taken, []


# How far back from a size cut a line end is looked for: a longer line is cut.
LINE_SEARCH = 1 << 20


def cut_at_line(
    taken: list[tuple[Claim, int]], rest: list[Claim], may_leave: bool
) -> tuple[list[tuple[Claim, int]], list[Claim]]:
    """:func:`take`'s result with its cut (if any) moved back to just after the
    last ``\\n`` before it (within ``LINE_SEARCH`` bytes). Without one, the cut
    claim is left for the next roll when something else is taken or
    ``may_leave`` (the roll holds bytes already: it is closed rather than a line
    split); else (a line longer than a roll) it stays cut mid-line."""
    if not taken or not rest:
        return taken, rest
    claim, end = taken[-1]
    if end >= claim.f.size or rest[0].f is not claim.f:
        return taken, rest
    low = max(claim.start, end - LINE_SEARCH)
    try:
        with open_source(claim.f) as fh:
            data = os.pread(fh.fileno(), end - low, low)
    except (OSError, SourceChanged, SourceNotRegular):
        return taken, rest  # build_pending tells
    nl = data.rfind(b"\n")
    if nl >= 0:
        cut = low + nl + 1
        return [*taken[:-1], (claim, cut)], [Claim(claim.f, cut), *rest[1:]]
    if len(taken) > 1 or may_leave:
        return taken[:-1], [claim, *rest[1:]]
    return taken, rest


def build_pending(roll: Roll, taken: Sequence[tuple[Claim, int]]) -> Pending:
    """The pending append of ``taken`` to ``roll``: spans, and each source's
    record after it (fingerprints of the bytes rolled by then). Raises
    ``SourceVanished`` when a source changed since the plan."""
    spans: list[Span] = []
    sources: list[tuple[str, Rolled]] = []
    for claim, end in taken:
        f = claim.f
        try:
            with open_source(f) as fh:
                st = os.fstat(fh.fileno())
                if (st.st_ino, st.st_dev) != (f.ino, f.dev) or st.st_size < end:
                    raise SourceVanished(f"{f.path} changed since the scan")
                head, tail = fingerprints(fh, end)
        except (OSError, SourceChanged, SourceNotRegular) as exc:
            raise SourceVanished(f"{f.path}: {exc}") from exc
        whole = end == f.size
        spans.append(Span(f.path, f.ino, claim.start, end))
        sources.append(
            (
                f.path,
                # A cut record must never look unchanged: -1 keeps its rest planned.
                Rolled(
                    size=end,
                    mtime_ns=f.mtime_ns if whole else -1,
                    ctime_ns=f.ctime_ns if whole else -1,
                    ino=f.ino,
                    dev=f.dev,
                    head=head,
                    tail=tail,
                    part=f.part,
                ),
            )
        )
    return Pending(roll, tuple(spans), tuple(sources))


# ---------------------------------------------------------------- writing


def append(
    io: RollIO,
    pending: Pending,
    files: Mapping[str, SourceFile],
) -> tuple[int, str, int]:
    """Write ``pending`` to its roll file: (its size now, its tail hash, bytes
    written). A new roll, or a destination that cannot append, is written
    whole through a temporary name. Raises ``RollChanged`` when the roll file
    is not as committed (nothing written), ``DestinationFailure``,
    ``SourceVanished`` / ``SourceUnreadable`` (then part of the append may be
    at the destination: :func:`recover` it)."""
    dest, compression = io.dest, io.compression
    roll = pending.roll
    fs = dest.filesystem
    final = dest.path_of(roll.name)
    base = roll.dest_size
    if base == 0:
        if _size_of(fs, final) is not None:
            raise RollChanged(f"{roll.name} exists already")
    elif not _holds_committed(fs, final, roll):
        raise RollChanged(f"{roll.name} is not as committed ({base} bytes)")
    if base == 0 or not dest.can_append:
        sent = _rewrite(io, final, base, pending, files)
    else:
        try:
            out = fs.open_append_stream(final, compression=None)
        except (OSError, pyarrow.ArrowException) as exc:
            raise DestinationFailure(f"cannot append to {final}: {exc}") from exc
        try:
            sent = _write_spans(out, pending.spans, _sources_of(pending, files), compression)
        finally:
            with contextlib.suppress(OSError, pyarrow.ArrowException):
                out.close()
    confirm(dest, final, base + sent)
    return base + sent, tail_of(dest, final, base + sent), sent


def _rewrite(
    io: RollIO,
    final: str,
    base: int,
    pending: Pending,
    files: Mapping[str, SourceFile] | None,
    tmp: str | None = None,
) -> int:
    """The first ``base`` bytes of ``final`` then the spans (none when
    ``files`` is None: a repair) into ``tmp``, moved over ``final``."""
    fs = io.dest.filesystem
    watched = tmp is None  # a repair's copy is recover()'s to settle, never swept
    tmp = tmp or io.temps.next_for(final)
    try:
        io.dirs.ensure(fs, posixpath.dirname(final))
        out = fs.open_output_stream(tmp, compression=None)
        try:
            if base:
                with fs.open_input_stream(final, compression=None) as src:
                    left = base
                    while left:
                        chunk = src.read(min(CHUNK_SIZE, left))
                        if not chunk:
                            raise DestinationFailure(f"{final} is shorter than {base} bytes")
                        out.write(chunk)
                        left -= len(chunk)
            sent = (
                0
                if files is None
                else _write_spans(out, pending.spans, _sources_of(pending, files), io.compression)
            )
        finally:
            with contextlib.suppress(OSError, pyarrow.ArrowException):
                out.close()
        tail = _tail_hash(fs, tmp, base + sent)
        if tail is None:
            raise DestinationFailure(f"{tmp} is not {base + sent} bytes after the write")
        _move_over(fs, tmp, final, base + sent, tail)
    except BaseException as exc:
        # Past the delete of _move_over only ``tmp`` holds the committed bytes.
        with contextlib.suppress(OSError, pyarrow.ArrowException):
            if base == 0 or _size_of(fs, final) is not None:
                discard(fs, tmp)
                if watched:
                    io.watch.add(tmp)  # the delete may have failed, or it may appear again
        if isinstance(exc, OSError | pyarrow.ArrowException):
            raise DestinationFailure(f"cannot write {final}: {exc}") from exc
        raise
    return sent


def _move_over(fs: pafs.FileSystem, tmp: str, final: str, size: int, tail: str) -> None:
    """Move ``tmp`` (``size`` bytes ending in bytes hashing to ``tail``) over
    ``final``. A move that raised but happened (an RPC timeout, a failover
    reporting its source missing) is done: ``final`` is deleted only while
    ``tmp`` still holds the bytes, never when it may be the only copy."""
    try:
        fs.move(tmp, final)
    except (OSError, pyarrow.ArrowException):
        if _moved(fs, tmp, final, size, tail):
            return
        # HDFS refuses to rename over a file. Between the two calls only the
        # temporary file holds the bytes: a repair uses a name that the sweep
        # of stale temporary files leaves alone, and recover() finishes it.
        if _size_of(fs, tmp) is None or _size_of(fs, final) is None:
            raise
        fs.delete_file(final)
        try:
            fs.move(tmp, final)
        except (OSError, pyarrow.ArrowException):
            if not _moved(fs, tmp, final, size, tail):
                raise


def _moved(fs: pafs.FileSystem, tmp: str, final: str, size: int, tail: str) -> bool:
    """Is ``tmp`` gone and ``final`` what it held (size and tail hash)?"""
    try:
        return _size_of(fs, tmp) is None and _tail_hash(fs, final, size) == tail
    except (OSError, pyarrow.ArrowException, DestinationFailure):
        return False


def _tail_hash(fs: pafs.FileSystem, path: str, size: int) -> str | None:
    """Hash of the last ``FINGERPRINT_BYTES`` of ``path`` if it is ``size`` bytes."""
    if _size_of(fs, path) != size:
        return None
    try:
        with fs.open_input_file(path) as remote:
            if remote.size() != size:
                return None
            start = max(0, size - FINGERPRINT_BYTES)
            return digest(remote.read_at(size - start, start))
    except NotImplementedError as exc:
        raise DestinationFailure(f"cannot read {path}: no random access") from exc


def _write_spans(
    out: Any,
    spans: Sequence[Span],
    sources: Sequence[SourceFile | None],
    compression: Compression | None,
) -> int:
    """Each span's bytes (members/frames when compressed) from its source
    (``sources[i]`` for ``spans[i]``) to ``out``: bytes written."""
    encode = encoder(compression)
    written = 0
    for span, f in zip(spans, sources, strict=True):
        if f is None:
            raise SourceVanished(f"{span.source} is gone")
        try:
            fh = open_source(f)
        except (SourceChanged, SourceNotRegular) as exc:
            raise SourceVanished(f"{span.source}: {exc}") from exc
        except OSError as exc:
            raise SourceUnreadable(f"cannot open {span.source}: {exc.strerror or exc}") from exc
        with fh:
            if os.fstat(fh.fileno()).st_ino != span.ino:
                raise SourceVanished(f"{span.source} is another file now")
            written += copy_range(fh, out, span.start, span.end, None, CHUNK_SIZE, encode)[1]
    return written


def _sources_of(pending: Pending, files: Mapping[str, SourceFile]) -> list[SourceFile | None]:
    """The scanned file each span of ``pending`` is read from (same device and
    inode as when it was planned), or None."""
    recs = dict(pending.sources)
    out: list[SourceFile | None] = []
    for span in pending.spans:
        f = source_of(span, files)
        rec = recs.get(span.source)
        out.append(None if f is None or (rec is not None and rec.dev != f.dev) else f)
    return out


def _verified_sources(pending: Pending, files: Mapping[str, SourceFile]) -> list[SourceFile | None]:
    """As :func:`_sources_of`, after a crash: a file counts only while it still
    holds what the append read (its fingerprints at the span's end are the
    ones the pending record took), else None (gone: an inode reused by a new
    file, or the file rewritten). Raises ``SourceUnreadable``."""
    recs = dict(pending.sources)
    out = _sources_of(pending, files)
    for i, (span, f) in enumerate(zip(pending.spans, out, strict=True)):
        rec = recs.get(span.source)
        if f is None or rec is None:
            out[i] = None
            continue
        held = _holds_prefix(f, rec)
        if held is None:
            raise SourceUnreadable(f"cannot read {f.path} to check it")
        if not held:
            out[i] = None
    return out


def append_settled(
    io: RollIO,
    pending: Pending,
    files: Mapping[str, SourceFile],
) -> tuple[int, str, int]:
    """One attempt of the retry policy: whatever an earlier attempt left is
    settled first (one stat and one small read when nothing was written), then
    ``pending`` is appended, or adopted if an earlier attempt wrote it whole
    (0 bytes written then). Raises as :func:`append`."""
    outcome, size, tail = recover(io, pending, files)
    if outcome == "adopted":
        return size, tail, 0
    if outcome == "changed":
        raise RollChanged(f"{pending.roll.name} is not as committed")
    return append(io, pending, files)


# ---------------------------------------------------------------- recovery


def recover(
    io: RollIO,
    pending: Pending,
    files: Mapping[str, SourceFile],
) -> tuple[str, int, str]:
    """Settle a pending append left by a crash or a failed write: ``("adopted",
    size, tail)`` when the roll file holds exactly it (commit it),
    ``("dropped", ...)`` when the roll file is as committed (or was never
    made), ``("changed", ...)`` when it is not ours (any more): it is closed
    and left alone. Cuts the roll file back to its committed bytes where needed."""
    dest = io.dest
    roll = pending.roll
    fs = dest.filesystem
    final = dest.path_of(roll.name)
    base = roll.dest_size
    repair = _repair_name(final)
    try:
        size = _size_of(fs, final)
        if size is None:
            if base and _holds_committed(fs, repair, roll):
                fs.move(repair, final)  # a repair stopped between its delete and move
                return "dropped", base, roll.dest_tail
            return ("dropped", 0, "") if base == 0 else ("changed", 0, "")
        if _size_of(fs, repair) is not None:
            fs.delete_file(repair)  # a repair cut short before its delete: not needed
        ours = size >= base and _holds_committed(fs, final, roll)
        if ours and size > base and _is_append(io, final, base, size, pending, files):
            return "adopted", size, tail_of(dest, final, size)
        if ours and size == base:
            return "dropped", base, roll.dest_tail
        if not ours or base == 0:
            # Shorter or other bytes: not ours any more. A new roll file appears
            # whole or not at all (written under a temporary name, then moved),
            # so one that is not the pending append is someone else's. Left alone.
            return "changed", size, ""
        _rewrite(io, final, base, pending, None, tmp=repair)
        return "dropped", base, roll.dest_tail
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"cannot recover {final}: {exc}") from exc


class _Differs(Exception):
    pass


class _Compare:
    """A write sink that compares what it is given with a remote file from ``pos``."""

    def __init__(self, remote: Any, pos: int) -> None:
        self.remote = remote
        self.pos = pos
        # Never read past what a reader sees: hdfs-native panics on a seek
        # beyond it (a file under construction reads shorter than its status).
        self.end = int(remote.size())

    def write(self, data: Any) -> None:
        n = len(data)
        if self.pos + n > self.end or self.remote.read_at(n, self.pos) != bytes(data):
            raise _Differs
        self.pos += n


def source_of(span: Span, files: Mapping[str, SourceFile]) -> SourceFile | None:
    """The scanned file a span was read from: by its path, or (renamed since)
    by its inode."""
    f = files.get(span.source)
    if f is not None and f.ino == span.ino:
        return f
    return next((g for g in files.values() if g.ino == span.ino), None)


def _is_append(
    io: RollIO,
    final: str,
    base: int,
    size: int,
    pending: Pending,
    files: Mapping[str, SourceFile],
) -> bool:
    """Are bytes ``[base, size)`` of ``final`` exactly the pending append?
    Encoded again and compared (the encoders are deterministic for one
    library version; a newer one only costs a repair). A source gone since:
    the bytes must decode whole to as many bytes as the append's ranges.
    Raises ``DestinationFailure`` when it cannot be told (a source unreadable
    or changing meanwhile, no random reads): "no" would roll ranges twice, or
    cut away a whole append."""
    fs = io.dest.filesystem
    try:
        # Not decoding whole to as many bytes is proof enough, sources or not.
        with fs.open_input_file(final) as remote:
            if _decoded_size(remote, base, io.compression) != pending.source_bytes:
                return False
        sources = _verified_sources(pending, files)
        if any(f is None for f in sources):
            return True
        with fs.open_input_file(final) as remote:
            sink = _Compare(remote, base)
            _write_spans(sink, pending.spans, sources, io.compression)
            return sink.pos == size
    except _Differs:
        return False
    except (SourceVanished, SourceUnreadable, NotImplementedError) as exc:
        raise DestinationFailure(
            f"cannot tell whether {final} holds the append interrupted before its "
            f"commit ({exc or type(exc).__name__}): retried later"
        ) from exc


def _decoded_size(remote: Any, base: int, compression: Compression | None) -> int | None:
    """Bytes that ``remote`` from ``base`` decodes to; None for a cut member/frame."""
    if compression is None:
        return int(remote.size()) - base
    remote.seek(base)
    total = 0
    try:
        with pyarrow.CompressedInputStream(remote, str(compression)) as stream:
            while chunk := stream.read(CHUNK_SIZE):
                total += len(chunk)
    except (OSError, pyarrow.ArrowException):
        return None
    return total


def _holds_committed(fs: pafs.FileSystem, path: str, roll: Roll) -> bool:
    """Does ``path`` start with the roll's committed bytes (size, tail hash)?
    Raises ``DestinationFailure`` while it reads shorter than its status says:
    on HDFS, a file a killed writer left under construction reads only its
    complete blocks until the NameNode recovers the lease (about a minute);
    the committed bytes are there, so it is neither closed nor repaired yet."""
    try:
        with fs.open_input_file(path) as remote:
            if remote.size() < roll.dest_size:
                status = _size_of(fs, path)
                if status is not None and status >= roll.dest_size:
                    _nudge_lease_recovery(fs, path)
                    raise DestinationFailure(
                        f"{path} reads {remote.size()} of its {status} bytes (left under "
                        "construction by a writer that died?): retried later"
                    )
                return False
            start = max(0, roll.dest_size - FINGERPRINT_BYTES)
            got = digest(remote.read_at(roll.dest_size - start, start))
    except FileNotFoundError:
        return False
    except NotImplementedError:
        return False
    return got == roll.dest_tail if roll.dest_size else True


def _nudge_lease_recovery(fs: pafs.FileSystem, path: str) -> None:
    """Open ``path`` for append and close it, writing nothing. Once the dead
    writer's soft lease limit (60 s) has passed, an append attempt is what
    makes the NameNode recover the lease and close the file; without one it
    waits for the hard limit (20 min to 1 h). Refused meanwhile: ignored."""
    with contextlib.suppress(OSError, pyarrow.ArrowException):
        fs.open_append_stream(path, compression=None).close()


def _size_of(fs: pafs.FileSystem, path: str) -> int | None:
    info = fs.get_file_info(path)
    return int(info.size or 0) if info.type == pafs.FileType.File else None


def _repair_name(final: str) -> str:
    parent, name = posixpath.split(final)
    return posixpath.join(parent, f".{name}{_REPAIR_MARK}")


# ---------------------------------------------------------------- the ledger


def ledger_path(dest: Destination, key: str) -> str:
    """The write-ahead copy of the roll state beside the rolls (a dot name:
    Hadoop's input formats skip it)."""
    return dest.path_of(f".{key}{LEDGER_SUFFIX}")


def write_ledger(
    dest: Destination, key: str, state: RollState, temps: TempNames, watch: TempWatch
) -> None:
    final = ledger_path(dest, key)
    tmp = temps.next_for(final)
    fs = dest.filesystem
    data = {"version": LEDGER_VERSION, **state.to_json()}
    payload = json.dumps(data, separators=(",", ":")).encode()
    try:
        with fs.open_output_stream(tmp, compression=None) as out:
            out.write(payload)
        _move_over(fs, tmp, final, len(payload), digest(payload[-FINGERPRINT_BYTES:]))
    except (OSError, pyarrow.ArrowException) as exc:
        discard(fs, tmp)
        watch.add(tmp)  # the delete may have failed, or it may appear again
        raise DestinationFailure(f"cannot write {final}: {exc}") from exc


def read_ledger(dest: Destination, key: str) -> RollState | None:
    """The ledger's roll state; None when there is none. Raises
    ``LedgerUnusable`` (a ``CopyError``) naming it when it cannot be used
    (corrupt, another version): "no ledger" would roll every source again."""
    final = ledger_path(dest, key)
    try:
        with dest.filesystem.open_input_stream(final, compression=None) as src:
            raw = src.read()
    except FileNotFoundError:
        return None
    except (OSError, pyarrow.ArrowException) as exc:
        if _size_of(dest.filesystem, final) is None:
            return None
        raise DestinationFailure(f"cannot read {final}: {exc}") from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise _unusable(dest, final, f"not JSON ({exc})") from exc
    if isinstance(data, dict):
        version = data.pop("version", 1)
        if version != LEDGER_VERSION or isinstance(version, bool):
            raise _unusable(
                dest, final, f"format version {version!r} (this version reads {LEDGER_VERSION})"
            )
    try:
        return load_rollup(data)
    except ManifestCorrupt as exc:
        raise _unusable(dest, final, str(exc)) from exc


def _unusable(dest: Destination, final: str, reason: str) -> LedgerUnusable:
    return LedgerUnusable(
        f"roll-up ledger {posixpath.basename(final)} at {dest.uri} cannot be used: {reason}; "
        "with the manifest lost, the copy waits: restore the manifest, or repair or remove "
        "the ledger (removed, every source is rolled again from its start)"
    )
