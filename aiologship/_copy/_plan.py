"""What a cycle ships: the plan over a scan, and the checks before it.

Blocking, plain functions: the engine runs them in worker threads while it holds
its cycle lock (only the cycle mutates the manifest).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pyarrow
import pyarrow.fs as pafs

from .._exceptions import ConfigError
from .._fs import Destination
from ._manifest import Entry, Manifest, list_destination, rebuild
from ._scan import ScanResult, SourceFile, describe_kind
from ._spec import CopySpec
from ._tempwatch import TempWatch
from ._transfer import DestinationFailure, TempNames, remove_files


def plan(
    result: ScanResult,
    manifest: Manifest,
    dest_prefix: str | None,
    file_errors: dict[str, str],
) -> list[SourceFile]:
    """Changed files, oldest first; base-name collisions reported, not shipped."""
    groups: dict[str, list[SourceFile]] = {}
    for f in result.files:
        if dest_prefix is not None and f.path.startswith(dest_prefix):
            continue
        groups.setdefault(f.dest, []).append(f)
    todo: list[SourceFile] = []
    entries = manifest.entries
    owners: dict[str, str] | None = None  # built only when a name is contested
    for name, group in groups.items():
        if len(group) == 1:
            f = group[0]
            entry = entries.get(f.path)
            if entry is not None and entry.dest == name:
                # The usual case: a file this copy already owns at the destination.
                if not entry.unchanged(f):
                    todo.append(f)
                continue
        if owners is None:
            owners = manifest.owners()
        owner = owners.get(name)
        if len(group) == 1 and owner in (None, group[0].path):
            todo.append(group[0])
            continue
        group.sort(key=lambda f: (f.path != owner, f.path))
        winner = group[0] if owner is None or group[0].path == owner else None
        keeper = owner if winner is None else winner.path
        for loser in group if winner is None else group[1:]:
            file_errors[loser.path] = (
                f"collision: {loser.path} and {keeper} both map to {name!r} at the "
                "destination (preserve_structure=False keeps base names); "
                f"{loser.path} is not shipped"
            )
        if winner is not None:
            entry = entries.get(winner.path)
            if entry is None or not entry.unchanged(winner):
                todo.append(winner)
    todo.sort(key=lambda f: (f.mtime_ns, f.path))
    return todo


def sent_before(f: SourceFile, manifest: Manifest, dest: Destination | None) -> int:
    """Bytes of ``f`` already at the destination that an append keeps."""
    entry = manifest.entries.get(f.path)
    if entry is None or entry.ino != f.ino or not dest or not dest.can_append:
        return 0
    return entry.size if entry.size <= f.size else 0


def bytes_to_send(todo: list[SourceFile], manifest: Manifest, dest: Destination | None) -> int:
    return sum(max(0, f.size - sent_before(f, manifest, dest)) for f in todo)


def lag(
    planned: Sequence[tuple[SourceFile, Entry | None]], entries: Mapping[str, Entry]
) -> list[tuple[str, int, float]]:
    """``(path, bytes not at the destination, mtime in seconds)`` of each planned
    file after the cycle. A file whose entry changed was shipped (as the scan saw
    it); the others still miss what their old entry lacks: the bytes past it,
    or the whole file when it is another file now or was truncated."""
    out: list[tuple[str, int, float]] = []
    for f, old in planned:
        if entries.get(f.path) is not old:
            continue
        if old is not None and (old.dev, old.ino) == (f.dev, f.ino) and old.size <= f.size:
            missing = f.size - old.size
        else:
            missing = f.size
        out.append((f.path, missing, f.mtime_ns / 1e9))
    return out


def prepare_destination(
    dest: Destination,
    result: ScanResult,
    *,
    create_dest_dirs: bool,
    temps: TempNames,
    watch: TempWatch,
    known: Mapping[str, Entry] | None,
    compressed: bool = False,
    partitions: Callable[[SourceFile, Mapping[str, int]], list[SourceFile]] | None = None,
) -> tuple[dict[str, int], dict[str, Entry]]:
    """The destination's base folder checked or made, stale temporary files of a
    crashed run removed (those that resist go to ``watch``). Returns the
    destination's listing and the entries recognised there: the whole manifest
    rebuilt when ``known`` is None (it was lost), else the files ``known`` lacks
    (see :func:`unrecorded`). Compressed: nothing is recognised (a compressed
    file's bytes cannot be compared with the source without decompressing it
    all); a destination file without an entry is replaced, never appended to.
    ``partitions`` (templated destinations) gives a source's places in other
    partitions of the listing: for a source without an entry, a file found
    there (owned by no entry) holding a prefix of the source is adopted where
    it is, so neither a lost manifest nor a copier killed before its save on
    another day moves it to today's partition."""
    fs = dest.filesystem
    try:
        if create_dest_dirs:
            if dest.base_path:
                fs.create_dir(dest.base_path, recursive=True)
        elif fs.get_file_info(dest.base_path).type != pafs.FileType.Directory:
            raise DestinationFailure(f"{dest.uri} does not exist (create_dest_dirs=False)")
        listing = list_destination(dest)
        stale = [dest.path_of(rel) for rel in listing if temps.is_stale(rel)]
        for name in remove_files(dest, stale):
            watch.add(name)
        for rel in stale:
            listing.pop(rel[len(dest.base_path) + 1 :] if dest.base_path else rel, None)
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationFailure(f"{dest.uri}: {exc}") from exc
    if compressed:
        return listing, {}
    files = result.files if known is None else unrecorded(result.files, known, listing)
    found = dict(rebuild(dest, files, listing)) if files else {}
    if partitions is not None:
        owned = set() if known is None else {e.dest for e in known.values()}
        for f in result.files:
            if f.path in found or (known is not None and f.path in known):
                continue
            for earlier in partitions(f, listing):
                if earlier.dest not in owned:
                    found.update(rebuild(dest, [earlier], listing))
                    if f.path in found:
                        break
    return listing, found


def unrecorded(
    files: Sequence[SourceFile], known: Mapping[str, Entry], listing: Mapping[str, int]
) -> list[SourceFile]:
    """Sources whose destination file a copier may have written after its last
    manifest save (saved once a second, not per file: a copier killed in
    between leaves bytes at the destination that its manifest does not record):

    * a source without an entry, at a name that no entry owns;
    * a source whose entry is of another file (a new inode under the name, as
      rotation makes) while the destination file is not the size that entry says.

    One source per name. :func:`rebuild` then adopts those whose destination
    file holds a prefix of their bytes, so a restart does not send them again;
    the others are replaced, as before."""
    owned = {entry.dest for entry in known.values()}
    by_name: dict[str, list[SourceFile]] = {}
    for f in files:
        have = listing.get(f.dest)
        if have is None:
            continue
        entry = known.get(f.path)
        if entry is None:
            if f.dest in owned:
                continue
        elif entry.dest != f.dest or (entry.dev, entry.ino) == (f.dev, f.ino):
            continue  # the usual case; a killed append is resumed by the transfer
        elif have == entry.dest_size:
            continue  # the old version is still there
        by_name.setdefault(f.dest, []).append(f)
    # A contested name (preserve_structure=False) is the planner's to settle.
    return [group[0] for group in by_name.values() if len(group) == 1]


def check_root_dir(root: Path, spec: CopySpec, dest_prefix: str | None) -> None:
    """A root_dir that does not exist yet is fine (its files may come later);
    one that is something else than a folder is a mistake, and so is a local
    destination holding root_dir (the scan skips the destination's files, so
    the copy would never ship anything)."""
    try:
        st = os.stat(root)
    except OSError:
        return
    if not stat.S_ISDIR(st.st_mode):
        kind = "a regular file" if stat.S_ISREG(st.st_mode) else describe_kind(st.st_mode)
        raise ConfigError("root_dir", str(root), f"not a directory ({kind})")
    if dest_prefix is not None:
        real_root = os.path.join(os.path.realpath(root), "")
        real_dest = os.path.join(os.path.realpath(dest_prefix), "")
        if real_root.startswith(real_dest):
            raise ConfigError(
                "hdfs_destination",
                spec.destination_redacted,
                f"contains root_dir {str(root)!r}: the copy would read its own output",
            )


def local_prefix(destination: str) -> str | None:
    """``/base/`` of a plain-path or file:// destination, else None."""
    if "://" not in destination:
        path = destination
    elif destination.lower().startswith(("file://", "local://")):
        path = unquote(urlsplit(destination).path)
    else:
        return None
    return os.path.join(os.path.realpath(path), "")
