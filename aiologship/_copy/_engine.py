"""CopyEngine: the periodic loop, status, flush and stop of one copy operation."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import anyio
import anyio.to_thread
import pyarrow
import pyarrow.fs as pafs

from .._config import HdfsDriver
from .._exceptions import ConfigError, CopyError, DestinationError
from .._fs import Destination, resolve_destination, scrub
from ._identity import reconcile
from ._manifest import (
    Entry,
    Manifest,
    ManifestCorrupt,
    ManifestOutdated,
    list_destination,
    rebuild,
    write_atomic,
)
from ._scan import ScanResult, SourceFile, describe_kind, scan
from ._spec import CopySpec
from ._statedir import (
    MANIFEST_NAME,
    STATUS_NAME,
    StateLock,
    adopt_legacy_folder,
    engine_lock_path,
    prepare_folder,
    write_status_file,
    writer_identity,
)
from ._status import CopyState, CopyStatus, CycleResult
from ._transfer import (
    DestinationFailure,
    DirCache,
    Progress,
    Shipped,
    SourceUnreadable,
    SourceVanished,
    TempNames,
    remove_files,
    ship_batch,
    ship_file,
    ship_with_retry,
)

logger = logging.getLogger("aiologship.copy")

DEFAULT_WORKERS = 8
# How long stop() / close() may take, in seconds, from the stop request: the
# rest of a cycle in progress (no more retries) and the final cycle (one
# attempt per file). What is left is reported pending; the next run ships it.
FINAL_CYCLE_TIMEOUT = 20.0
# open() waits this long for the destination's client (an hdfs:// NameNode that
# accepts the connection and never answers hangs it indefinitely); past it the
# destination counts as failing and cycles retry it.
RESOLVE_TIMEOUT = 10.0
# Two files in a row failing at the destination after all their retries means
# the destination is down: the rest of the cycle would only repeat the same
# retries, so they wait for the next cycle instead.
_FAILED_FILES_BEFORE_ABORT = 2
# Save the manifest mid-cycle after this many bytes or seconds, so a crash
# during a long cycle does not forget what already reached the destination.
_SAVE_EVERY_BYTES = 64 << 20
_SAVE_EVERY_SECONDS = 1.0
# Small files travel in batches, one worker-thread call per batch.
_BATCH_FILES = 64
_BATCH_BYTES = 4 << 20


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(slots=True)
class _Tally:
    shipped: int = 0
    appended: int = 0
    replaced: int = 0
    bytes: int = 0
    pending: int = 0
    failed_in_a_row: int = 0
    dest_error: str | None = None
    unsaved_bytes: int = 0
    last_save: float = 0.0


class CopyEngine:
    """Runs one copy operation on the caller's event loop; blocking work in threads.

    ``clock`` (wall-clock seconds) and ``sleep`` (retry waits) are injectable for
    tests; ``resolver`` replaces :func:`resolve_destination` (tests of one layer).
    """

    def __init__(
        self,
        spec: CopySpec,
        *,
        state_dir: Path,
        hdfs_driver: HdfsDriver = HdfsDriver.AUTO,
        user: str | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        resolver: Callable[[str], Destination] | None = None,
        workers: int = DEFAULT_WORKERS,
        resolve_timeout: float = RESOLVE_TIMEOUT,
    ) -> None:
        self.spec = spec
        self._resolve_timeout = resolve_timeout
        self.state_path = Path(state_dir) / spec.state_key
        self._hdfs_driver = hdfs_driver
        self._user = user
        self._clock = clock
        self._sleep = sleep
        self._resolver = resolver or functools.partial(
            resolve_destination, hdfs_driver=hdfs_driver, user=user
        )
        self._workers = max(1, workers)
        self._limiter = anyio.CapacityLimiter(self._workers)
        tag = hashlib.sha256(spec.state_key.encode()).hexdigest()[:8]
        self._temps = TempNames(tag)
        self._dirs = DirCache()
        self._manifest = Manifest(
            self.state_path / MANIFEST_NAME,
            copy_name=spec.copy_name,
            destination=spec.destination_redacted,
        )
        # A local destination inside the globbed tree must not ship its own
        # files again (archive/app.log, archive/archive/app.log, ...).
        self._dest_prefix = _local_prefix(spec.hdfs_destination)
        self._needs_rebuild = False
        self._unsaved = False
        self._prepared = False
        self._dest: Destination | None = None
        self._leftovers: set[str] = set()
        self._lock = StateLock(engine_lock_path(state_dir, spec.state_key), spec.copy_name)
        # Set when another process may run this copy now: the engine stops.
        self._lock_lost: str | None = None
        # The whole destination as listed by _prepare, used once instead of
        # the per-folder listings of the destination check.
        self._listing: dict[str, int] | None = None
        self._cycle_lock = anyio.Lock()
        self._save_lock = anyio.Lock()
        self._stop_requested = anyio.Event()
        self._stop_deadline: float | None = None  # anyio clock; set by the first stop()
        self._stop_timeout: float | None = None
        self._cycle_scope: anyio.CancelScope | None = None
        self._tally: _Tally | None = None
        self._unmatched: tuple[str, ...] = ()
        self._done = anyio.Event()
        self._running = False
        self._stopping = False
        self._opened = False
        self._state = CopyState.NEW
        self._progress = Progress()
        # status
        self._files_shipped = 0
        self._bytes_shipped = 0
        self._pending = 0
        self._last_cycle_at: float | None = None
        self._next_cycle_at: float | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._file_errors: tuple[tuple[str, str], ...] = ()
        self._reported_files: set[tuple[str, str]] = set()

    # ------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        """Check the state directory, take its lock, load the manifest and
        resolve the destination. Raises ``ConfigError`` (state dir, URI) or
        ``CopyError`` (another process runs this copy). A destination that
        cannot be reached is not an error here: cycles retry it."""
        if self._opened:
            return
        try:
            if self.spec.root_dir is not None:
                await anyio.to_thread.run_sync(
                    _check_root_dir,
                    self.spec.root_dir,
                    self.spec,
                    self._dest_prefix,
                    limiter=self._limiter,
                )
            await anyio.to_thread.run_sync(self._open_state, limiter=self._limiter)
        except BaseException:
            self._release_lock()
            self._state = CopyState.FAILED
            raise
        try:
            with anyio.move_on_after(self._resolve_timeout) as resolving:
                self._dest = await anyio.to_thread.run_sync(
                    self._resolver,
                    self.spec.hdfs_destination,
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
            if resolving.cancelled_caught:
                self._record_destination_failure(
                    f"destination {self.spec.destination_redacted}: no answer within "
                    f"{self._resolve_timeout:g} s"
                )
        except DestinationError as exc:
            self._record_destination_failure(str(exc))
        except BaseException:
            self._release_lock()
            self._state = CopyState.FAILED
            raise
        self._opened = True
        self._state = CopyState.RUNNING

    def _open_state(self) -> None:
        # The lock first: only its holder may adopt, create or read the folder.
        try:
            self._lock.acquire()  # CopyError when another process holds it
            adopt_legacy_folder(
                self.state_path.parent, self.spec.copy_name, self.spec.destination_redacted
            )
            prepare_folder(self.state_path)
        except OSError as exc:
            raise ConfigError(
                "state_dir", str(self.state_path.parent), f"not writable: {exc.strerror or exc}"
            ) from exc
        try:
            loaded = Manifest.load(
                self._manifest.path,
                copy_name=self.spec.copy_name,
                destination=self.spec.destination_redacted,
            )
        except ManifestOutdated as exc:
            logger.info(
                "copy %r: manifest %s is in an older format (%s); rebuilding it from the "
                "destination",
                self.spec.copy_name,
                self._manifest.path,
                exc,
            )
            loaded = None
        except ManifestCorrupt as exc:
            logger.warning(
                "copy %r: manifest %s is corrupt (%s); rebuilding it from the destination",
                self.spec.copy_name,
                self._manifest.path,
                exc,
            )
            loaded = None
        if loaded is None:
            self._needs_rebuild = True
        else:
            self._manifest = loaded

    def _release_lock(self) -> None:
        self._lock.release()

    def _check_state(self) -> None:
        """Before each cycle (blocking): is the lock still ours, is the folder there?

        A removed state dir unlinks the lock file, and another copier of this copy
        can then lock a new file at the same path; see ``StateLock.verify``. A
        removed folder alone (the lock lives outside it) is recreated, and the
        manifest in memory saved there again."""
        try:
            self._lock.verify()
        except CopyError as exc:
            self._lock_lost = str(exc)
            self._last_error = self._lock_lost
            self._state = CopyState.FAILED
            logger.error("copy %r: %s", self.spec.copy_name, exc)
            raise
        if not self.state_path.is_dir():
            self.state_path.mkdir(parents=True)  # a file in the way: the cycle fails, retried
            self._unsaved = True
            logger.warning(
                "copy %r: state folder %s was removed while this copier ran; recreated, "
                "its manifest is saved again from memory",
                self.spec.copy_name,
                self.state_path,
            )

    async def run(self) -> None:
        """Cycle every ``copy_interval`` seconds (once when it is None) until
        :meth:`stop`; the final cycle runs before this returns."""
        if self._running:
            raise CopyError(f"copy operation {self.spec.copy_name!r} is already running")
        if self._state in (CopyState.STOPPED, CopyState.FAILED):
            raise CopyError(f"copy operation {self.spec.copy_name!r} is {self._state}")
        await self.open()
        self._running = True
        try:
            interval = self.spec.copy_interval
            while not self._stop_requested.is_set():
                # stop() gives this scope its deadline: a cycle in progress
                # (a destination that hangs) must not outlast the bound.
                with anyio.CancelScope() as self._cycle_scope:
                    await self._guarded_cycle()
                self._cycle_scope = None
                if interval is None:
                    self._next_cycle_at = None
                    await self._stop_requested.wait()
                    break
                self._next_cycle_at = self._clock() + interval
                with anyio.move_on_after(interval):
                    await self._stop_requested.wait()
            self._state = CopyState.STOPPING
            self._next_cycle_at = None
            await self._final_cycle()
        finally:
            self._running = False
            self._finish()

    async def _final_cycle(self) -> None:
        """The last cycle, within what is left of the stop's bound; a cycle cut
        short (this one or the one in progress at the stop) is reported."""
        deadline = math.inf if self._stop_deadline is None else self._stop_deadline
        with anyio.CancelScope(deadline=deadline) as scope:
            if anyio.current_time() < deadline:
                await self._guarded_cycle()
        if scope.cancel_called or anyio.current_time() >= deadline:
            await self._report_cut_short()

    async def _report_cut_short(self) -> None:
        tally = self._tally
        if tally is not None and tally.pending:
            self._pending = tally.pending
        self._last_error = (
            f"stopped before the final cycle finished (bound {self._stop_timeout:g} s); "
            f"{self._pending} files pending"
        )
        logger.warning(
            "copy %r: stopped before the final cycle finished (bound %g s): %d files "
            "pending, the next run ships them",
            self.spec.copy_name,
            self._stop_timeout,
            self._pending,
        )
        await self._save_status()

    async def _retry_sleep(self, seconds: float) -> None:
        """A retry wait that a stop request ends at once (no retry follows it
        but the one attempt tenacity makes on waking)."""
        if self._stop_requested.is_set():
            return
        async with anyio.create_task_group() as tg:

            async def on_stop() -> None:
                await self._stop_requested.wait()
                tg.cancel_scope.cancel()

            tg.start_soon(on_stop)
            await self._sleep(seconds)
            tg.cancel_scope.cancel()

    async def _guarded_cycle(self) -> None:
        """A cycle of the periodic loop: an unexpected error (the state folder
        removed under us, a bug) is logged once per streak and retried next
        cycle instead of ending the loop; the app never sees it raise."""
        try:
            await self._cycle()
        except Exception as exc:
            if self._lock_lost is not None:
                raise  # another process may run this copy now: stop, never retry
            self._last_error = scrub(f"{type(exc).__name__}: {exc}")
            self._failures += 1
            if self._failures == 1:
                logger.exception("copy %r: cycle failed", self.spec.copy_name)

    async def flush(self) -> CycleResult:
        """Run one cycle now (after any cycle in progress) and return its result."""
        if self._state in (CopyState.STOPPED, CopyState.FAILED):
            raise CopyError(f"copy operation {self.spec.copy_name!r} is {self._state}")
        await self.open()
        return await self._cycle()

    async def stop(
        self, *, final_cycle: bool = True, timeout: float | None = FINAL_CYCLE_TIMEOUT
    ) -> None:
        """Request a stop, run the final cycle, wait for :meth:`run` to return.
        Idempotent. ``final_cycle=False`` skips the last cycle when run() is not
        active (a one-shot caller that has just flushed).

        Returns within ``timeout`` seconds (None: no bound) whatever the
        destination does: a cycle in progress makes no more retries, the final
        cycle makes one attempt per file, and what the bound leaves undone is
        reported pending (status, a WARNING). A transfer still blocked in the
        destination's client at the bound is abandoned in its worker thread."""
        if self._state in (CopyState.STOPPED, CopyState.FAILED):
            return
        if self._stop_deadline is None:
            # The first stop sets the bound; concurrent stops share it.
            self._stop_timeout = math.inf if timeout is None else timeout
            self._stop_deadline = anyio.current_time() + self._stop_timeout
            if self._cycle_scope is not None:
                self._cycle_scope.deadline = self._stop_deadline
        self._stop_requested.set()
        if self._running or self._stopping:
            # run() or another stop() does the final cycle: wait for it.
            if self._running:
                self._state = CopyState.STOPPING
            await self._done.wait()
            return
        self._stopping = True
        if self._opened and final_cycle:
            self._state = CopyState.STOPPING
            try:
                await self._final_cycle()
            finally:
                self._finish()
        else:
            self._finish()

    def _finish(self) -> None:
        self._next_cycle_at = None
        self._state = CopyState.FAILED if self._lock_lost else CopyState.STOPPED
        if self._lock.held and self._opened:
            # While the lock is ours: after it, the folder may be another copier's.
            # Blocking but small (no fsync), and it runs even when cancelled.
            try:
                write_status_file(self.state_path / STATUS_NAME, self._status_payload())
            except OSError as exc:
                logger.debug(
                    "copy %r: could not write %s: %s", self.spec.copy_name, STATUS_NAME, exc
                )
        self._release_lock()
        self._done.set()

    # ------------------------------------------------------------ status

    def status(self) -> CopyStatus:
        def at(t: float | None) -> datetime | None:
            return None if t is None else datetime.fromtimestamp(t, UTC)

        return CopyStatus(
            name=self.spec.copy_name,
            state=self._state,
            destination=self.spec.destination_redacted,
            files_shipped=self._files_shipped,
            bytes_shipped=self._bytes_shipped,
            pending_files=self._pending,
            last_cycle_at=at(self._last_cycle_at),
            next_cycle_at=at(self._next_cycle_at),
            last_error=self._last_error,
            consecutive_failures=self._failures,
            file_errors=self._file_errors,
            unmatched_patterns=self._unmatched,
        )

    def progress(self) -> Progress:
        """Live counters of the cycle in progress (or the last one)."""
        return self._progress

    # ------------------------------------------------------------ one cycle

    async def _cycle(self) -> CycleResult:
        async with self._cycle_lock:
            await anyio.to_thread.run_sync(self._check_state, limiter=self._limiter)
            started = self._clock()
            self._progress = progress = Progress()
            self._tally = tally = _Tally(last_save=started)
            file_errors: dict[str, str] = {}
            scanned = 0
            try:
                result = await scan(
                    self.spec.path_patterns,
                    self.spec.root_dir,
                    self.spec.preserve_structure,
                    self._limiter,
                    exclude=self._dest_prefix,
                )
                self._note_unmatched(result.unmatched)
                scanned = len(result.files)
                file_errors.update(result.problems)
                for path in result.outside_root:
                    logger.debug(
                        "copy %r: %s leads outside root_dir, not followed",
                        self.spec.copy_name,
                        path,
                    )
                # Planned before touching the destination, so a destination that
                # is down still shows how many files wait for it.
                todo = await self._plan_in_thread(result, file_errors)
                tally.pending = len(todo)
                dest = await self._destination()
                if not self._prepared:
                    await self._prepare(dest, result)
                    # The manifest may have been rebuilt.
                    todo = await self._plan_in_thread(result, file_errors)
                    tally.pending = len(todo)
                if await self._reconcile(dest, result):
                    todo = await self._plan_in_thread(result, file_errors)
                    tally.pending = len(todo)
                if self._leftovers:
                    failed = await anyio.to_thread.run_sync(
                        remove_files, dest, sorted(self._leftovers), limiter=self._limiter
                    )
                    self._leftovers = set(failed)
                progress.files_total = len(todo)
                progress.bytes_total = await anyio.to_thread.run_sync(
                    lambda: sum(max(0, f.size - self._sent_before(f)) for f in todo),
                    limiter=self._limiter,
                )
                progress.planned = True
                await self._ship_all(dest, todo, tally, file_errors, progress)
            except (DestinationError, DestinationFailure) as exc:
                tally.dest_error = str(exc)
            except ConfigError as exc:  # e.g. the URI itself (cannot get better by retrying)
                tally.dest_error = str(exc)
            finally:
                if tally.unsaved_bytes or tally.shipped or self._unsaved:
                    with anyio.CancelScope(shield=True):
                        await self._save()
            finished = self._clock()
            cycle = CycleResult(
                started_at=datetime.fromtimestamp(started, UTC),
                finished_at=datetime.fromtimestamp(finished, UTC),
                files_scanned=scanned,
                files_shipped=tally.shipped,
                files_appended=tally.appended,
                files_replaced=tally.replaced,
                bytes_shipped=tally.bytes,
                pending_files=tally.pending,
                file_errors=tuple(sorted(file_errors.items())),
                destination_error=tally.dest_error,
            )
            self._record(cycle, finished)
            await self._save_status()
            return cycle

    async def _destination(self) -> Destination:
        if self._dest is None:
            self._dest = await anyio.to_thread.run_sync(
                self._resolver,
                self.spec.hdfs_destination,
                limiter=self._limiter,
                abandon_on_cancel=True,
            )
        return self._dest

    def _note_unmatched(self, unmatched: tuple[str, ...]) -> None:
        for pattern in unmatched:
            if pattern not in self._unmatched:
                logger.warning("copy %r: pattern %s matches no file", self.spec.copy_name, pattern)
        self._unmatched = unmatched

    async def _prepare(self, dest: Destination, result: ScanResult) -> None:
        """First cycle against a destination: its base folder, stale temporary
        files of a crashed run, and a lost manifest rebuilt from what is there."""
        rebuilt = await anyio.to_thread.run_sync(
            self._prepare_blocking,
            dest,
            result,
            self._needs_rebuild,
            limiter=self._limiter,
            abandon_on_cancel=True,
        )
        if rebuilt is not None:
            self._manifest.entries = rebuilt
            self._needs_rebuild = False
            await self._save()
            logger.info(
                "copy %r: manifest rebuilt from %s (%d files already there)",
                self.spec.copy_name,
                dest.uri,
                len(rebuilt),
            )
        self._prepared = True

    def _prepare_blocking(
        self, dest: Destination, result: ScanResult, needs_rebuild: bool
    ) -> dict[str, Entry] | None:
        fs = dest.filesystem
        try:
            if self.spec.create_dest_dirs:
                if dest.base_path:
                    fs.create_dir(dest.base_path, recursive=True)
            elif fs.get_file_info(dest.base_path).type != pafs.FileType.Directory:
                raise DestinationFailure(f"{dest.uri} does not exist (create_dest_dirs=False)")
            listing = list_destination(dest)
            stale = [dest.path_of(rel) for rel in listing if self._temps.is_stale(rel)]
            self._leftovers.update(remove_files(dest, stale))
            for rel in stale:
                listing.pop(rel[len(dest.base_path) + 1 :] if dest.base_path else rel, None)
        except (OSError, pyarrow.ArrowException) as exc:
            raise DestinationFailure(f"{dest.uri}: {exc}") from exc
        self._listing = listing
        if not needs_rebuild:
            return None
        return dict(rebuild(dest, result.files, listing))

    async def _reconcile(self, dest: Destination, result: ScanResult) -> bool:
        """Follow renamed sources, notice destination files removed by someone
        else, forget sources gone for good (see ``_identity``). True when the
        manifest changed (then the plan is made again)."""
        prefix = self._dest_prefix
        files = [f for f in result.files if prefix is None or not f.path.startswith(prefix)]
        listing, self._listing = self._listing, None
        try:
            done = await anyio.to_thread.run_sync(
                functools.partial(
                    reconcile,
                    dest,
                    self._manifest.entries,
                    files,
                    unreadable=[path for path, _ in result.problems],
                    absent_before=self._manifest.absent,
                    listing=listing,
                    dirs=self._dirs,
                ),
                limiter=self._limiter,
            )
        except DestinationFailure:
            self._unsaved = True  # some renames may be done: keep what they changed
            raise
        if done.absent != self._manifest.absent:
            self._manifest.absent = done.absent
            self._unsaved = True
        if done.missing:
            logger.warning(
                "copy %r: %d files shipped before are missing at %s (removed by someone "
                "else?); those whose source still exists are shipped again: %s",
                self.spec.copy_name,
                len(done.missing),
                dest.uri,
                ", ".join(sorted(done.missing)[:5]) + (" ..." if len(done.missing) > 5 else ""),
            )
        if done.moved:
            logger.debug(
                "copy %r: %d renamed files moved at the destination",
                self.spec.copy_name,
                done.moved,
            )
        if done.changed:
            self._unsaved = True
        return done.changed

    async def _plan_in_thread(
        self, result: ScanResult, file_errors: dict[str, str]
    ) -> list[SourceFile]:
        # O(files) of Python: 10-30 ms over 10,000 files, too long for the loop.
        # Safe off the loop: the cycle lock is held and only the cycle mutates
        # the manifest.
        return await anyio.to_thread.run_sync(
            self._plan, result, file_errors, limiter=self._limiter
        )

    def _plan(self, result: ScanResult, file_errors: dict[str, str]) -> list[SourceFile]:
        """Changed files, oldest first; base-name collisions reported, not shipped."""
        groups: dict[str, list[SourceFile]] = {}
        prefix = self._dest_prefix
        for f in result.files:
            if prefix is not None and f.path.startswith(prefix):
                continue
            groups.setdefault(f.dest, []).append(f)
        todo: list[SourceFile] = []
        entries = self._manifest.entries
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
                owners = self._manifest.owners()
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

    def _sent_before(self, f: SourceFile) -> int:
        entry = self._manifest.entries.get(f.path)
        if entry is None or entry.ino != f.ino or not self._dest or not self._dest.can_append:
            return 0
        return entry.size if entry.size <= f.size else 0

    async def _ship_all(
        self,
        dest: Destination,
        todo: list[SourceFile],
        tally: _Tally,
        file_errors: dict[str, str],
        progress: Progress,
    ) -> None:
        queue = deque(todo)
        spec = self.spec
        uri = dest.uri

        async def ship_alone(f: SourceFile) -> Shipped | Exception:
            prev = self._manifest.entries.get(f.path)
            ship = functools.partial(
                ship_file, dest, f, prev, temps=self._temps, dirs=self._dirs, progress=progress
            )
            try:
                return await ship_with_retry(
                    ship,
                    max_retries=spec.max_retries,
                    retry_delay=spec.retry_delay,
                    sleep=self._retry_sleep,
                    limiter=self._limiter,
                    on_leftover=self._leftovers.add,
                    give_up=self._stop_requested.is_set,
                )
            except (SourceVanished, SourceUnreadable, DestinationFailure) as exc:
                return exc

        async def settle(f: SourceFile, outcome: Shipped | Exception) -> None:
            if isinstance(outcome, Shipped):
                tally.failed_in_a_row = 0
                await self._shipped(f, outcome, tally, progress)
            elif isinstance(outcome, SourceVanished):
                if not await anyio.to_thread.run_sync(os.path.lexists, f.path):
                    tally.pending -= 1  # gone for good: nothing left to ship
            elif isinstance(outcome, SourceUnreadable):
                file_errors[f.path] = str(outcome)
            else:
                tally.failed_in_a_row += 1
                tally.dest_error = f"{uri}: {outcome}"

        def next_batch() -> list[SourceFile]:
            batch = [queue.popleft()]
            size = batch[0].size
            while (
                queue
                and len(batch) < _BATCH_FILES
                and size + queue[0].size <= _BATCH_BYTES
                and batch[0].size < _BATCH_BYTES
            ):
                size += queue[0].size
                batch.append(queue.popleft())
            return batch

        async def worker() -> None:
            while queue and tally.failed_in_a_row < _FAILED_FILES_BEFORE_ABORT:
                batch = next_batch()
                if len(batch) == 1:
                    await settle(batch[0], await ship_alone(batch[0]))
                    continue
                items = [(f, self._manifest.entries.get(f.path)) for f in batch]
                outcomes = await anyio.to_thread.run_sync(
                    functools.partial(
                        ship_batch,
                        dest,
                        items,
                        temps=self._temps,
                        dirs=self._dirs,
                        progress=progress,
                    ),
                    limiter=self._limiter,
                    abandon_on_cancel=True,
                )
                for f, outcome in zip(batch, outcomes, strict=True):
                    if isinstance(outcome, DestinationFailure):
                        if outcome.leftover is not None:
                            self._leftovers.add(outcome.leftover)
                        if tally.failed_in_a_row >= _FAILED_FILES_BEFORE_ABORT:
                            continue  # destination down: stays pending
                        # Retried alone, with the full retry policy.
                        outcome = await ship_alone(f)
                    await settle(f, outcome)

        async with anyio.create_task_group() as tg:
            for _ in range(min(self._workers, len(todo))):
                tg.start_soon(worker)

    async def _shipped(
        self, f: SourceFile, shipped: Shipped, tally: _Tally, progress: Progress
    ) -> None:
        self._manifest.entries[f.path] = shipped.entry
        tally.pending -= 1
        progress.files_done += 1
        if shipped.mode == "touch":
            tally.unsaved_bytes += 1  # metadata changed: save it with the rest
            return
        tally.shipped += 1
        tally.bytes += shipped.bytes_sent
        tally.unsaved_bytes += max(1, shipped.bytes_sent)
        if shipped.mode == "append":
            tally.appended += 1
        else:
            tally.replaced += 1
        self._files_shipped += 1
        self._bytes_shipped += shipped.bytes_sent
        now = self._clock()
        if tally.unsaved_bytes >= _SAVE_EVERY_BYTES or now - tally.last_save >= _SAVE_EVERY_SECONDS:
            tally.unsaved_bytes = 0
            tally.last_save = now
            await self._save()

    async def _save(self) -> None:
        # Stays set until a save succeeds, so a failed save is retried next cycle.
        self._unsaved = True
        async with self._save_lock:
            snapshot = dict(self._manifest.entries)
            manifest = Manifest(
                self._manifest.path,
                copy_name=self._manifest.copy_name,
                destination=self._manifest.destination,
            )
            manifest.entries = snapshot
            manifest.absent = self._manifest.absent & snapshot.keys()
            try:
                await anyio.to_thread.run_sync(
                    lambda: write_atomic(manifest.path, manifest.snapshot()), limiter=self._limiter
                )
            except OSError as exc:  # a full or read-only state dir
                raise CopyError(
                    f"copy operation {self.spec.copy_name!r} cannot save its manifest "
                    f"{manifest.path}: {exc.strerror or exc}"
                ) from exc
            self._unsaved = False

    async def _save_status(self) -> None:
        """``status.json`` beside the manifest, for ``aiologship status`` (a shell has
        no other way to ask a copier in another process). Best effort."""
        data = self._status_payload()
        try:
            await anyio.to_thread.run_sync(
                write_status_file, self.state_path / STATUS_NAME, data, limiter=self._limiter
            )
        except OSError as exc:
            logger.debug("copy %r: could not write %s: %s", self.spec.copy_name, STATUS_NAME, exc)

    def _status_payload(self) -> bytes:
        # pid, host and the process start time let a reader tell that the writer
        # has exited (or that its pid now belongs to another process).
        status = self.status()
        entries = list(self._manifest.entries.values())
        payload = {
            "copy_name": status.name,
            "destination": status.destination,
            "state": str(status.state),
            "files_shipped": status.files_shipped,
            "bytes_shipped": status.bytes_shipped,
            "pending_files": status.pending_files,
            "last_cycle_at": _iso(status.last_cycle_at),
            "next_cycle_at": _iso(status.next_cycle_at),
            "last_error": status.last_error,
            "consecutive_failures": status.consecutive_failures,
            "file_errors": [list(item) for item in status.file_errors],
            "unmatched_patterns": list(status.unmatched_patterns),
            "manifest_files": len(entries),
            "manifest_bytes": sum(e.size for e in entries),
            **writer_identity(),
        }
        return json.dumps(payload, indent=1).encode()

    # ------------------------------------------------------------ bookkeeping

    def _record(self, cycle: CycleResult, finished: float) -> None:
        self._last_cycle_at = finished
        interval = self.spec.copy_interval
        # status.json is written before run() schedules the next cycle: say when.
        if (
            self._running
            and interval is not None
            and not self._stop_requested.is_set()
            and (self._next_cycle_at is None or self._next_cycle_at <= finished)
        ):
            self._next_cycle_at = finished + interval
        self._pending = cycle.pending_files
        # Reasons quote filesystem and server messages: one scrub before they reach
        # the status, status.json and the log.
        self._file_errors = tuple((path, scrub(reason)) for path, reason in cycle.file_errors)
        for path, reason in self._file_errors:
            if (path, reason) not in self._reported_files:
                logger.warning("copy %r: %s: %s", self.spec.copy_name, path, reason)
        self._reported_files = set(self._file_errors)
        if self._file_errors:
            path, reason = self._file_errors[0]
            more = len(self._file_errors) - 1
            self._last_error = f"{path}: {reason}" + (f" (and {more} more)" if more else "")
        if cycle.destination_error is not None:
            self._record_destination_failure(cycle.destination_error)
        elif self._failures:
            logger.info(
                "copy %r: destination %s works again after %d failed cycles",
                self.spec.copy_name,
                self.spec.destination_redacted,
                self._failures,
            )
            self._failures = 0

    def _record_destination_failure(self, message: str) -> None:
        message = scrub(message)
        self._last_error = message
        self._failures += 1
        if self._failures == 1:
            # One record per failure streak; the status carries the rest.
            logger.error(
                "copy %r: destination failing, files stay pending and are retried every cycle: %s",
                self.spec.copy_name,
                message,
            )


__all__ = ["CopyEngine", "CopyState", "CopyStatus", "CycleResult"]


def _check_root_dir(root: Path, spec: CopySpec, dest_prefix: str | None) -> None:
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


def _local_prefix(destination: str) -> str | None:
    """``/base/`` of a plain-path or file:// destination, else None."""
    if "://" not in destination:
        path = destination
    elif destination.lower().startswith(("file://", "local://")):
        path = unquote(urlsplit(destination).path)
    else:
        return None
    return os.path.join(os.path.realpath(path), "")
