"""One copy cycle: scan, prepare and check the destination, plan, ship,
save the manifest and record the result."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime

import anyio
import anyio.to_thread

from .._exceptions import ConfigError, DestinationError
from .._fs import Destination
from ._engine_state import EngineState
from ._engine_status import StatusBook
from ._identity import reconcile
from ._manifest import Entry, Manifest
from ._plan import bytes_to_send, lag, plan, prepare_destination
from ._rollrun import Roller
from ._rollup import LedgerUnusable
from ._scan import ScanResult, SourceFile, scan
from ._ship import ShipRun, ShipTools, Tally
from ._spec import CopySpec
from ._status import CycleResult
from ._template import Placed, Placer
from ._tempwatch import TempWatch
from ._transfer import DestinationFailure, DirCache, Progress, TempNames

logger = logging.getLogger("aiologship.copy")


class Cycles:
    """Runs the cycles of one engine, one at a time, and keeps what they share:
    the destination, the temporary names to watch there, the live tally and progress.

    ``check_state`` runs (blocking) before each cycle; ``scheduling`` says, at
    the end of a cycle, whether the loop will schedule another.
    """

    def __init__(
        self,
        spec: CopySpec,
        *,
        store: EngineState,
        book: StatusBook,
        resolver: Callable[[str], Destination],
        limiter: anyio.CapacityLimiter,
        workers: int,
        temps: TempNames,
        dest_prefix: str | None,
        clock: Callable[[], float],
        check_state: Callable[[], None],
        scheduling: Callable[[], bool],
        retry_sleep: Callable[[float], Awaitable[None]],
        give_up: Callable[[], bool],
    ) -> None:
        self._spec = spec
        self._store = store
        self._book = book
        self._resolver = resolver
        self._limiter = limiter
        self._temps = temps
        self._dirs = DirCache()
        self._dest_prefix = dest_prefix
        self._clock = clock
        self._check_state = check_state
        self._scheduling = scheduling
        self.dest: Destination | None = None
        self.watch = TempWatch()
        self.tally: Tally | None = None
        self.progress = Progress()
        # The last plan, each file with its manifest entry before shipping: the
        # lag after the cycle is measured against it.
        self._planned: list[tuple[SourceFile, Entry | None]] | None = None
        self._prepared = False
        # The whole destination as listed by _prepare, used once instead of
        # the per-folder listings of the destination check.
        self._listing: dict[str, int] | None = None
        self._cycle_lock = anyio.Lock()
        self._placer = Placer(
            spec.template,
            copy_name=spec.copy_name,
            node_id=spec.node_id,
            timezone=spec.timezone,
        )
        self._roller = (
            None
            if spec.rollup is None
            else Roller(
                spec,
                spec.rollup,
                store=store,
                book=book,
                limiter=limiter,
                temps=temps,
                watch=self.watch,
                dirs=self._dirs,
                clock=clock,
                retry_sleep=retry_sleep,
                give_up=give_up,
            )
        )
        self._ship_tools = ShipTools(
            spec=spec,
            manifest=lambda: self._manifest,
            temps=temps,
            dirs=self._dirs,
            limiter=limiter,
            workers=workers,
            watch=self.watch,
            retry_sleep=retry_sleep,
            give_up=give_up,
            clock=clock,
            save=store.save,
            on_sent=book.sent,
        )

    @property
    def _manifest(self) -> Manifest:
        return self._store.manifest

    async def run(self) -> CycleResult:
        """One cycle, after any cycle in progress."""
        async with self._cycle_lock:
            await anyio.to_thread.run_sync(self._check_state, limiter=self._limiter)
            started = self._clock()
            self.progress = Progress()
            self.tally = tally = Tally(last_save=started)
            file_errors: dict[str, str] = {}
            scanned = 0
            self._planned = None
            try:
                scanned_result = await self._scan(file_errors)
                scanned = len(scanned_result.files)
                result = await self._place(scanned_result)
                await self._plan_and_ship(result, tally, file_errors, scanned_result)
            except (DestinationError, DestinationFailure) as exc:
                tally.dest_error = str(exc)
            except (ConfigError, LedgerUnusable) as exc:
                # e.g. the URI itself, a roll-up ledger that cannot be used: not
                # better by retrying, but reported each cycle until fixed
                tally.dest_error = str(exc)
            finally:
                if tally.unsaved_bytes or tally.shipped or self._store.unsaved:
                    with anyio.CancelScope(shield=True):
                        await self._store.save()
            if self._planned is not None:
                self._book.behind(
                    await anyio.to_thread.run_sync(
                        lag, self._planned, self._manifest.entries, limiter=self._limiter
                    )
                )
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
                bytes_read=tally.bytes_read,
            )
            self._book.record(cycle, finished, scheduling=self._scheduling())
            await self._store.write_status(self._book.status())
            return cycle

    async def _scan(self, file_errors: dict[str, str]) -> ScanResult:
        result = await scan(
            self._spec.path_patterns,
            self._spec.root_dir,
            self._spec.preserve_structure,
            self._limiter,
            exclude=self._dest_prefix,
            suffix=self._spec.dest_suffix,
        )
        self._book.note_unmatched(result.unmatched)
        file_errors.update(result.problems)
        for path in result.outside_root:
            logger.debug(
                "copy %r: %s leads outside root_dir, not followed", self._spec.copy_name, path
            )
        return result

    async def _place(self, result: ScanResult) -> ScanResult:
        """Each file under its partition of a templated destination: kept from
        the manifest, or rendered now (see ``_template.Placer``)."""
        if not self._spec.template:
            return result
        if self._roller is not None:
            # A file being written has no record yet: the partition it was
            # first seen in is kept apart (``RollState.seen``).
            rollup = self._manifest.rollup
            # ``seen`` holds only paths whose record is missing or follows another
            # inode (an old file still under the live path): it wins.
            known: Mapping[str, Placed] = {**rollup.sources, **rollup.seen}
        else:
            known = self._manifest.entries
        place = functools.partial(self._placer.place, result.files, known, self._clock())
        files = await anyio.to_thread.run_sync(place, limiter=self._limiter)
        return dataclasses.replace(result, files=files)

    async def _plan_and_ship(
        self, result: ScanResult, tally: Tally, file_errors: dict[str, str], scanned: ScanResult
    ) -> None:
        if self._roller is not None:
            await self._roll(result, tally, scanned)
            return
        # Planned before touching the destination, so a destination that
        # is down still shows how many files wait for it.
        todo = await self._plan_in_thread(result, file_errors, tally)
        dest = await self._destination()
        if not self._prepared:
            await self._prepare(dest, result)
            # The manifest may have been rebuilt (with files found in earlier partitions).
            result = await self._place(scanned)
            todo = await self._plan_in_thread(result, file_errors, tally)
        if await self._reconcile(dest, result):
            todo = await self._plan_in_thread(result, file_errors, tally)
        await self._sweep(dest)
        progress = self.progress
        progress.files_total = len(todo)
        progress.bytes_total = await anyio.to_thread.run_sync(
            bytes_to_send, todo, self._manifest, self.dest, limiter=self._limiter
        )
        progress.planned = True
        await ShipRun(self._ship_tools, dest, todo, tally, file_errors, progress).run()
        if not self._scheduling():  # no cycle follows: this one's failed transfers too
            await self._sweep(dest)

    async def _roll(self, result: ScanResult, tally: Tally, scanned: ScanResult) -> None:
        """A roll-up cycle: sealed files go to roll files, none is mirrored (see _rollup)."""
        assert self._roller is not None
        dest = await self._destination()
        if not self._prepared:
            await self._prepare(dest, result)
            result = await self._place(scanned)  # the roll state may come from the ledger
        await self._sweep(dest)
        self._book.behind(await self._roller.run(dest, result.files, tally))
        if not self._scheduling():
            await self._sweep(dest)

    async def _sweep(self, dest: Destination) -> None:
        """Delete the watched temporary files that (re)appeared."""
        if len(self.watch):
            sweep = functools.partial(self.watch.sweep, dest.filesystem, self._clock())
            await anyio.to_thread.run_sync(sweep, limiter=self._limiter, abandon_on_cancel=True)

    async def _destination(self) -> Destination:
        if self.dest is None:
            self.dest = await anyio.to_thread.run_sync(
                self._resolver,
                self._spec.destination_base,
                limiter=self._limiter,
                abandon_on_cancel=True,
            )
        return self.dest

    async def _prepare(self, dest: Destination, result: ScanResult) -> None:
        """First cycle against a destination: its base folder, stale temporary
        files of a crashed run, and what is there taken into the manifest (all
        of it if the manifest was lost; else what a killed copier shipped after
        its last save)."""
        self._listing, found = await anyio.to_thread.run_sync(
            functools.partial(
                prepare_destination,
                dest,
                result,
                create_dest_dirs=self._spec.create_dest_dirs,
                temps=self._temps,
                watch=self.watch,
                known=None if self._store.needs_rebuild else self._manifest.entries,
                # Compressed or rolled up, no destination file is a source's copy.
                compressed=self._spec.compression is not None or self._roller is not None,
                partitions=self._placer.earlier if self._spec.template else None,
            ),
            limiter=self._limiter,
            abandon_on_cancel=True,
        )
        if self._roller is not None and self._store.needs_rebuild:
            await self._roller.load_ledger(dest)
        await self._store.take_found(found, dest.uri)
        self._prepared = True

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
            self._store.unsaved = True  # some renames may be done: keep what they changed
            raise
        if done.absent != self._manifest.absent:
            self._manifest.absent = done.absent
            self._store.unsaved = True
        if done.missing:
            logger.warning(
                "copy %r: %d files shipped before are missing at %s (removed by someone "
                "else?); those whose source still exists are shipped again: %s",
                self._spec.copy_name,
                len(done.missing),
                dest.uri,
                ", ".join(sorted(done.missing)[:5]) + (" ..." if len(done.missing) > 5 else ""),
            )
        if done.moved:
            logger.debug(
                "copy %r: %d renamed files moved at the destination",
                self._spec.copy_name,
                done.moved,
            )
        if done.changed:
            self._store.unsaved = True
        return done.changed

    async def _plan_in_thread(
        self, result: ScanResult, file_errors: dict[str, str], tally: Tally
    ) -> list[SourceFile]:
        """The plan, its length pending in ``tally``."""
        # O(files) of Python: 10-30 ms over 10,000 files, too long for the loop.
        # Safe off the loop: the cycle lock is held and only the cycle mutates
        # the manifest.
        todo = await anyio.to_thread.run_sync(
            self._plan, result, file_errors, limiter=self._limiter
        )
        tally.pending = len(todo)
        return todo

    def _plan(self, result: ScanResult, file_errors: dict[str, str]) -> list[SourceFile]:
        todo = plan(result, self._manifest, self._dest_prefix, file_errors)
        entries = self._manifest.entries
        self._planned = [(f, entries.get(f.path)) for f in todo]
        return todo
