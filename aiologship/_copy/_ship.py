"""The worker pool of one cycle: planned files shipped alone or in batches."""

from __future__ import annotations

import functools
import os
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import anyio.to_thread

from .._fs import Destination
from ._manifest import Manifest
from ._scan import SourceFile
from ._spec import CopySpec
from ._tempwatch import TempWatch
from ._transfer import (
    DestinationFailure,
    DirCache,
    Progress,
    Shipped,
    SourceUnreadable,
    SourceVanished,
    TempNames,
    ship_batch,
    ship_file,
    ship_with_retry,
)

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


async def stoppable_sleep(
    sleep: Callable[[float], Awaitable[None]], stop: anyio.Event, seconds: float
) -> None:
    """A retry wait that a stop request ends at once (no retry follows it
    but the one attempt tenacity makes on waking)."""
    if stop.is_set():
        return
    async with anyio.create_task_group() as tg:

        async def on_stop() -> None:
            await stop.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(on_stop)
        await sleep(seconds)
        tg.cancel_scope.cancel()


@dataclass(slots=True)
class Tally:
    """One cycle's counts, kept by the workers."""

    shipped: int = 0
    appended: int = 0
    replaced: int = 0
    bytes: int = 0
    bytes_read: int = 0
    pending: int = 0
    failed_in_a_row: int = 0
    dest_error: str | None = None
    unsaved_bytes: int = 0
    last_save: float = 0.0


@dataclass(slots=True, kw_only=True)
class ShipTools:
    """What every cycle's shipping shares with the engine."""

    spec: CopySpec
    manifest: Callable[[], Manifest]  # the engine may swap its manifest
    temps: TempNames
    dirs: DirCache
    limiter: anyio.CapacityLimiter
    workers: int
    watch: TempWatch  # temporary names of failed transfers, swept by the cycles
    retry_sleep: Callable[[float], Awaitable[None]]
    give_up: Callable[[], bool]
    clock: Callable[[], float]
    save: Callable[[], Awaitable[None]]
    on_sent: Callable[[int, int], None]  # the engine's totals: one file, bytes sent, read


class ShipRun:
    """Ships one cycle's planned files through ``tools.workers`` workers,
    stopping early when the destination looks down."""

    def __init__(
        self,
        tools: ShipTools,
        dest: Destination,
        todo: list[SourceFile],
        tally: Tally,
        file_errors: dict[str, str],
        progress: Progress,
    ) -> None:
        self._tools = tools
        self._dest = dest
        self._queue = deque(todo)
        self._tally = tally
        self._file_errors = file_errors
        self._progress = progress

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(min(self._tools.workers, len(self._queue))):
                tg.start_soon(self._worker)

    async def _worker(self) -> None:
        tally = self._tally
        while self._queue and tally.failed_in_a_row < _FAILED_FILES_BEFORE_ABORT:
            batch = self._next_batch()
            if len(batch) == 1:
                await self._settle(batch[0], await self._ship_alone(batch[0]))
            else:
                await self._ship_batch(batch)

    def _next_batch(self) -> list[SourceFile]:
        queue = self._queue
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

    async def _ship_batch(self, batch: list[SourceFile]) -> None:
        tools = self._tools
        entries = tools.manifest().entries
        items = [(f, entries.get(f.path)) for f in batch]
        outcomes = await anyio.to_thread.run_sync(
            functools.partial(
                ship_batch,
                self._dest,
                items,
                temps=tools.temps,
                dirs=tools.dirs,
                watch=tools.watch,
                progress=self._progress,
                compression=tools.spec.compression,
            ),
            limiter=tools.limiter,
            abandon_on_cancel=True,
        )
        for f, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, DestinationFailure):
                if self._tally.failed_in_a_row >= _FAILED_FILES_BEFORE_ABORT:
                    continue  # destination down: stays pending
                # Retried alone, with the full retry policy.
                outcome = await self._ship_alone(f)
            await self._settle(f, outcome)

    async def _ship_alone(self, f: SourceFile) -> Shipped | Exception:
        tools = self._tools
        prev = tools.manifest().entries.get(f.path)
        ship = functools.partial(
            ship_file,
            self._dest,
            f,
            prev,
            temps=tools.temps,
            dirs=tools.dirs,
            watch=tools.watch,
            progress=self._progress,
            compression=tools.spec.compression,
        )
        try:
            return await ship_with_retry(
                ship,
                max_retries=tools.spec.max_retries,
                retry_delay=tools.spec.retry_delay,
                sleep=tools.retry_sleep,
                limiter=tools.limiter,
                give_up=tools.give_up,
            )
        except (SourceVanished, SourceUnreadable, DestinationFailure) as exc:
            return exc

    async def _settle(self, f: SourceFile, outcome: Shipped | Exception) -> None:
        tally = self._tally
        if isinstance(outcome, Shipped):
            tally.failed_in_a_row = 0
            await self._shipped(f, outcome)
        elif isinstance(outcome, SourceVanished):
            if not await anyio.to_thread.run_sync(os.path.lexists, f.path):
                tally.pending -= 1  # gone for good: nothing left to ship
        elif isinstance(outcome, SourceUnreadable):
            self._file_errors[f.path] = str(outcome)
        else:
            tally.failed_in_a_row += 1
            tally.dest_error = f"{self._dest.uri}: {outcome}"

    async def _shipped(self, f: SourceFile, shipped: Shipped) -> None:
        tools, tally = self._tools, self._tally
        tools.manifest().entries[f.path] = shipped.entry
        tally.pending -= 1
        self._progress.files_done += 1
        if shipped.mode == "touch":
            tally.unsaved_bytes += 1  # metadata changed: save it with the rest
            return
        tally.shipped += 1
        tally.bytes += shipped.bytes_sent
        tally.bytes_read += shipped.bytes_read
        tally.unsaved_bytes += max(1, shipped.bytes_sent)
        if shipped.mode == "append":
            tally.appended += 1
        else:
            tally.replaced += 1
        tools.on_sent(shipped.bytes_sent, shipped.bytes_read)
        now = tools.clock()
        if tally.unsaved_bytes >= _SAVE_EVERY_BYTES or now - tally.last_save >= _SAVE_EVERY_SECONDS:
            tally.unsaved_bytes = 0
            tally.last_save = now
            await tools.save()
