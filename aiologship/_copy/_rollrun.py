"""One cycle of a roll-up copy (``rollup=``): settle a pending append, plan,
then per partition append sealed ranges to its open roll file, each append
saved as pending (manifest, then ledger) before its first byte and committed
after the destination confirms it. The blocking parts are ``_rollup``'s."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.to_thread

from .._fs import Destination
from ._engine_state import EngineState
from ._engine_status import StatusBook
from ._rollstate import Pending, Roll, RollState
from ._rollup import (
    Claim,
    RollChanged,
    RollIO,
    append_settled,
    budget,
    build_pending,
    cut_at_line,
    plan_rollup,
    read_ledger,
    recover,
    roll_name,
    take,
    write_ledger,
)
from ._scan import SourceFile
from ._ship import Tally
from ._spec import CopySpec, RollUp
from ._tempwatch import TempWatch
from ._transfer import (
    DirCache,
    SourceUnreadable,
    SourceVanished,
    TempNames,
    ship_with_retry,
)

logger = logging.getLogger("aiologship.copy")
# A roll file found changed by someone else is closed and a new one opened;
# past this many in one partition and cycle, the partition waits for the next.
_NEW_ROLLS_PER_CYCLE = 3


class Roller:
    """Runs the roll-up part of each cycle of one engine."""

    def __init__(
        self,
        spec: CopySpec,
        rollup: RollUp,
        *,
        store: EngineState,
        book: StatusBook,
        limiter: anyio.CapacityLimiter,
        temps: TempNames,
        watch: TempWatch,
        dirs: DirCache,
        clock: Callable[[], float],
        retry_sleep: Callable[[float], Awaitable[None]],
        give_up: Callable[[], bool],
    ) -> None:
        self._spec = spec
        self._retry_sleep = retry_sleep
        self._give_up = give_up
        self._rollup = rollup
        self._store = store
        self._book = book
        self._limiter = limiter
        self._temps = temps
        self._watch = watch
        self._dirs = dirs
        self._clock = clock

    def _io(self, dest: Destination) -> RollIO:
        return RollIO(dest, self._spec.compression, self._temps, self._dirs, self._watch)

    @property
    def _state(self) -> RollState:
        return self._store.manifest.rollup

    async def _thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await anyio.to_thread.run_sync(
            functools.partial(fn, *args, **kwargs), limiter=self._limiter
        )

    async def load_ledger(self, dest: Destination) -> None:
        """After a lost manifest: the roll state from the destination's ledger."""
        state = await self._thread(read_ledger, dest, self._spec.state_key)
        if state is not None:
            self._store.manifest.rollup = state
            logger.info(
                "copy %r: roll-up state (%d roll files, %d sources) read back from %s",
                self._spec.copy_name,
                len(state.rolls),
                len(state.sources),
                dest.uri,
            )

    async def run(
        self, dest: Destination, files: Sequence[SourceFile], tally: Tally
    ) -> list[tuple[str, int, float]]:
        """Roll what is sealed; returns the lag (path, bytes not rolled, mtime)."""
        by_path = {f.path: f for f in files}
        state = self._state
        if state.pending is not None:
            await self._settle(dest, state.pending, by_path)
        now = self._clock()
        plan = await self._thread(plan_rollup, state, files, now, self._rollup.settle)
        if plan.changed:
            self._store.unsaved = True
        self._close_expired(now)
        groups: dict[str, list[Claim]] = {}
        for claim in plan.claims:
            groups.setdefault(claim.f.part, []).append(claim)
        tally.pending = len(plan.waiting) + len(plan.claims)
        left: list[Claim] = []
        for part, claims in groups.items():
            left += await self._roll_partition(dest, part, claims, by_path, tally)
        return [(c.f.path, c.f.size - c.start, c.f.mtime_ns / 1e9) for c in left] + [
            (f.path, f.size, f.mtime_ns / 1e9) for f in plan.waiting
        ]

    def _close_expired(self, now: float) -> None:
        interval, size = self._rollup.interval, self._rollup.size
        for roll in list(self._state.rolls.values()):
            if roll.closed:
                continue
            if (interval is not None and now - roll.opened >= interval) or (
                size is not None and roll.dest_size >= size
            ):
                self._state.close(roll.name)
                self._store.unsaved = True

    def _next_roll(self, part: str) -> Roll:
        state = self._state
        roll = state.open_roll(part)
        if roll is not None:
            return roll
        now = self._clock()
        state.seq += 1
        name = roll_name(self._spec.copy_name, part, now, state.seq, self._spec.dest_suffix)
        return Roll(name=name, part=part, opened=now)

    async def _roll_partition(
        self,
        dest: Destination,
        part: str,
        claims: list[Claim],
        files: dict[str, SourceFile],
        tally: Tally,
    ) -> list[Claim]:
        """Append ``claims`` to the partition's rolls; returns those left."""
        fresh = 0
        while claims:
            roll = self._next_roll(part)
            taken, rest = take(claims, budget(self._rollup, roll))
            if rest:  # a size cut: at a line end if there is one
                taken, rest = await self._thread(cut_at_line, taken, rest, roll.dest_size > 0)
                if not taken:  # not a whole line fits: the next roll takes it
                    self._state.close(roll.name)
                    self._store.unsaved = True
                    continue
            try:
                pending = await self._thread(build_pending, roll, taken)
            except SourceVanished:
                return claims  # changed since the scan: the next cycle plans again
            state = self._state
            state.pending = pending
            await self._store.save()
            await self._thread(
                write_ledger, dest, self._spec.state_key, state, self._temps, self._watch
            )
            attempt = functools.partial(append_settled, self._io(dest), pending, files)
            try:
                size, tail, sent = await ship_with_retry(
                    attempt,
                    max_retries=self._spec.max_retries,
                    retry_delay=self._spec.retry_delay,
                    sleep=self._retry_sleep,
                    limiter=self._limiter,
                    give_up=self._give_up,
                )
            except RollChanged as exc:
                state.pending = None
                self._changed(roll, str(exc))
                fresh += 1
                if fresh >= _NEW_ROLLS_PER_CYCLE:
                    return claims
                continue
            except (SourceVanished, SourceUnreadable):
                # Part of it may be there: settled now; planned again next cycle.
                await self._settle(dest, pending, files)
                return claims
            # DestinationFailure after the retries: the pending append stays
            # saved and the next cycle settles it before anything else.
            self._committed(pending, size, tail, sent, tally)
            claims = rest
        return claims

    def _changed(self, roll: Roll, why: str) -> None:
        logger.warning(
            "copy %r: roll file %s changed at the destination (%s): closed, a new one is opened",
            self._spec.copy_name,
            roll.name,
            why,
        )
        self._state.close(roll.name)
        self._store.unsaved = True

    def _committed(self, pending: Pending, size: int, tail: str, sent: int, tally: Tally) -> None:
        roll = self._state.commit(pending, size, tail)
        if self._rollup.size is not None and roll.dest_size >= self._rollup.size:
            self._state.close(roll.name)
        self._store.unsaved = True
        whole = sum(1 for _, rec in pending.sources if rec.mtime_ns != -1)
        read = pending.source_bytes
        tally.shipped += len(pending.spans)
        tally.appended += len(pending.spans)
        tally.pending -= whole
        tally.bytes += sent
        tally.bytes_read += read
        tally.unsaved_bytes += max(1, sent)
        self._book.rolled(len(pending.spans), sent, read, new_roll=pending.roll.dest_size == 0)

    async def _settle(
        self, dest: Destination, pending: Pending, files: dict[str, SourceFile]
    ) -> None:
        """A pending append left by a crash or a failed write: adopted, dropped
        or (its roll changed by someone else) dropped with the roll closed."""
        outcome, size, tail = await self._thread(recover, self._io(dest), pending, files)
        state = self._state
        if outcome == "adopted":
            state.commit(pending, size, tail)
            self._book.rolled(0, 0, 0, new_roll=pending.roll.dest_size == 0)
        else:
            state.pending = None
            if outcome == "changed":
                self._changed(pending.roll, "not as committed after a crash")
        logger.info(
            "copy %r: the append to %s interrupted before its commit was %s",
            self._spec.copy_name,
            pending.roll.name,
            outcome,
        )
        self._store.unsaved = True
        await self._store.save()
