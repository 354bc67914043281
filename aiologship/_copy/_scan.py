"""Scatter-glob: every pattern globbed concurrently in worker threads."""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import anyio
import anyio.to_thread

_KIND = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFLNK: "a symlink",
}


def describe_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a socket"``... for a file that is not a regular one."""
    return _KIND.get(stat.S_IFMT(mode), "an unknown kind of file")


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A regular file matched by a pattern, as seen by the scan."""

    path: str  # absolute, as matched (not resolved)
    dest: str  # "/"-separated path relative to the destination base
    size: int
    mtime_ns: int
    ino: int
    dev: int
    # Last; a default keeps positional construction (tests) working.
    ctime_ns: int = 0
    # Resolved location the scan checked, and the resolved root_dir it lies
    # under (None: no root_dir). The transfer opens ``real`` from ``real_root``
    # without following symlinks (see _source.py).
    real: str = ""
    real_root: str | None = None
    # The destination template's partition ``dest`` starts with ("": none),
    # set after the scan (see ``_template.Placer``).
    part: str = ""


@dataclass(frozen=True, slots=True)
class ScanResult:
    files: tuple[SourceFile, ...]
    # (path, reason): matches that cannot be shipped (not a regular file, stat
    # failed for a reason other than vanishing). Reported in the status.
    problems: tuple[tuple[str, str], ...]
    # Symlinks left alone because they lead outside root_dir.
    outside_root: tuple[str, ...]
    # Patterns that matched nothing at all (reported, not an error: the files
    # may not exist yet).
    unmatched: tuple[str, ...] = ()


def scan_pattern(
    pattern: str,
    root: Path | None,
    preserve: bool,
    exclude: str | None = None,
    suffix: str = "",
) -> ScanResult:
    """Glob one pattern and stat its matches. Blocking: runs in a worker thread.

    ``exclude`` is a local folder (the destination) whose files are never
    matched, wherever a symlink makes them appear in the tree. ``suffix`` ends
    every destination name (``.gz`` of a compressed copy).
    """
    found = _Matches(root, preserve, exclude, suffix)
    matched = False
    for path in glob.iglob(pattern, recursive=True):
        matched = True
        found.add(path)
    return ScanResult(
        tuple(found.files),
        tuple(found.problems),
        tuple(found.outside),
        () if matched else (pattern,),
    )


class _Matches:
    """One pattern's matches, sorted into files to ship, problems (cannot stat,
    not a regular file) and paths that lead outside ``root_dir``."""

    def __init__(self, root: Path | None, preserve: bool, exclude: str | None, suffix: str) -> None:
        self.root = root
        self.suffix = suffix
        self.preserve = preserve
        self.files: list[SourceFile] = []
        self.problems: list[tuple[str, str]] = []
        self.outside: list[str] = []
        self.real_root = os.path.realpath(root) if root is not None else None
        self.real_exclude = None if exclude is None else os.path.realpath(exclude)
        self.real_dirs: dict[str, str] = {}
        self.prefix = None if root is None or not preserve else str(root).rstrip(os.sep) + os.sep

    def add(self, path: str) -> None:
        try:
            lst = os.lstat(path)
        except FileNotFoundError:
            return  # vanished between glob and stat: nothing to ship
        except OSError as exc:
            self.problems.append((path, f"cannot stat: {exc.strerror or exc}"))
            return
        if stat.S_ISDIR(lst.st_mode):
            return
        real = self._resolve(path, lst)
        if real is None:
            return
        if self.real_exclude is not None and _under(real, self.real_exclude):
            return  # the destination's own files: copying them would recurse
        if self.real_root is not None and not _under(real, self.real_root):
            self.outside.append(path)
            return
        st = self._target(path, lst) if stat.S_ISLNK(lst.st_mode) else lst
        if st is None:
            return
        if not stat.S_ISREG(st.st_mode):
            kind = describe_kind(st.st_mode)
            self.problems.append((path, f"unreadable: {kind}, not a regular file"))
            return
        self.files.append(self._source_file(path, st, real))

    def _resolve(self, path: str, lst: os.stat_result) -> str | None:
        """Where ``path`` really is. A symlink (of the file or of a folder on its
        way) may lead outside root_dir or into the destination: compare the
        resolved location, folders resolved once each."""
        try:
            if stat.S_ISLNK(lst.st_mode):
                return os.path.realpath(path)
            parent, name = os.path.split(path)
            real_parent = self.real_dirs.get(parent)
            if real_parent is None:
                real_parent = self.real_dirs[parent] = os.path.realpath(parent)
            return os.path.join(real_parent, name)
        except OSError:
            return None  # changed while resolved (EINVAL from a link just replaced): next scan

    def _target(self, path: str, lst: os.stat_result) -> os.stat_result | None:
        """A symlink's target, or ``None`` for a dangling link or a folder."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None  # dangling link: its target vanished
        except OSError as exc:
            self.problems.append((path, f"cannot stat: {exc.strerror or exc}"))
            return None
        return None if stat.S_ISDIR(st.st_mode) else st

    def _source_file(self, path: str, st: os.stat_result, real: str) -> SourceFile:
        prefix = self.prefix
        return SourceFile(
            path=path,
            dest=(
                path[len(prefix) :].replace(os.sep, "/")
                if prefix is not None and path.startswith(prefix)
                else _dest_name(path, self.root, self.preserve)
            )
            + self.suffix,
            size=st.st_size,
            mtime_ns=st.st_mtime_ns,
            ino=st.st_ino,
            dev=st.st_dev,
            ctime_ns=st.st_ctime_ns,
            real=real,
            real_root=self.real_root,
        )


async def scan(
    patterns: Sequence[str],
    root: Path | None,
    preserve: bool,
    limiter: anyio.CapacityLimiter,
    exclude: str | None = None,
    suffix: str = "",
) -> ScanResult:
    """Glob all ``patterns`` concurrently; a file matched twice appears once."""
    results: list[ScanResult | None] = [None] * len(patterns)

    async def one(i: int, pattern: str) -> None:
        results[i] = await anyio.to_thread.run_sync(
            scan_pattern, pattern, root, preserve, exclude, suffix, limiter=limiter
        )

    async with anyio.create_task_group() as tg:
        for i, pattern in enumerate(patterns):
            tg.start_soon(one, i, pattern)
    # Merging is O(files) too: off the loop as well.
    done = [r for r in results if r is not None]
    return await anyio.to_thread.run_sync(merge, done, limiter=limiter)


def merge(results: Iterable[ScanResult]) -> ScanResult:
    files: dict[str, SourceFile] = {}
    problems: dict[str, str] = {}
    outside: dict[str, None] = {}
    unmatched: list[str] = []
    for result in results:
        for f in result.files:
            files.setdefault(f.path, f)
        for path, reason in result.problems:
            problems.setdefault(path, reason)
        outside.update(dict.fromkeys(result.outside_root))
        unmatched.extend(result.unmatched)
    return ScanResult(
        tuple(files.values()), tuple(problems.items()), tuple(outside), tuple(unmatched)
    )


def _dest_name(path: str, root: Path | None, preserve: bool) -> str:
    if preserve and root is not None:
        rel = os.path.relpath(path, root)
        return rel.replace(os.sep, "/")
    return os.path.basename(path)


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
