"""What the engine reports: its running totals, errors and schedule, turned
into a :class:`CopyStatus`, with one log record per new problem."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from .._fs import scrub
from ._spec import CopySpec
from ._status import CopyState, CopyStatus, CycleResult

logger = logging.getLogger("aiologship.copy")


def _at(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


class StatusBook:
    """The engine's counters; ``failures`` counts cycles in a row that failed."""

    def __init__(self, spec: CopySpec, clock: Callable[[], float]) -> None:
        self._spec = spec
        self._clock = clock
        self.state = CopyState.NEW
        self.files_shipped = 0
        self.bytes_shipped = 0
        self.bytes_read = 0
        self.pending = 0
        self.last_cycle_at: float | None = None
        self.next_cycle_at: float | None = None
        self.last_error: str | None = None
        self.failures = 0
        self.file_errors: tuple[tuple[str, str], ...] = ()
        self._reported_files: set[tuple[str, str]] = set()
        self.unmatched: tuple[str, ...] = ()
        # The lag: source bytes not at the destination after the last cycle, and
        # per file behind, the modification time a scan first saw it behind at.
        self.bytes_behind = 0
        self._behind_since: dict[str, float] = {}
        self.last_success_at: float | None = None
        self.last_cycle_seconds: float | None = None
        self.cycles = 0
        self.retries = 0
        self.roll_files = 0

    def status(self) -> CopyStatus:
        since = min(self._behind_since.values(), default=None)
        return CopyStatus(
            name=self._spec.copy_name,
            state=self.state,
            destination=self._spec.destination_redacted,
            files_shipped=self.files_shipped,
            bytes_shipped=self.bytes_shipped,
            pending_files=self.pending,
            last_cycle_at=_at(self.last_cycle_at),
            next_cycle_at=_at(self.next_cycle_at),
            last_error=self.last_error,
            consecutive_failures=self.failures,
            file_errors=self.file_errors,
            unmatched_patterns=self.unmatched,
            bytes_behind=self.bytes_behind,
            behind_since=_at(since),
            oldest_unshipped_age=0.0 if since is None else max(0.0, self._clock() - since),
            last_success_at=_at(self.last_success_at),
            last_cycle_seconds=self.last_cycle_seconds,
            cycles=self.cycles,
            retries=self.retries,
            bytes_read=self.bytes_read,
            roll_files=self.roll_files,
        )

    def behind(self, files: Iterable[tuple[str, int, float]]) -> None:
        """The lag after a cycle: ``(path, bytes not shipped, mtime)`` of each
        planned file. A file keeps the time it was first seen behind at until
        it has caught up; the others are forgotten."""
        since: dict[str, float] = {}
        total = 0
        for path, missing, mtime in files:
            if missing > 0:
                total += missing
                since[path] = self._behind_since.get(path, mtime)
        self.bytes_behind = total
        self._behind_since = since

    def sent(self, nbytes: int, read: int) -> None:
        self.files_shipped += 1
        self.bytes_shipped += nbytes
        self.bytes_read += read

    def rolled(self, spans: int, nbytes: int, read: int, *, new_roll: bool) -> None:
        """An append of ``spans`` source ranges to a roll file (``new_roll``: its first)."""
        self.files_shipped += spans
        self.bytes_shipped += nbytes
        self.bytes_read += read
        self.roll_files += new_roll

    def note_unmatched(self, unmatched: tuple[str, ...]) -> None:
        for pattern in unmatched:
            if pattern not in self.unmatched:
                logger.warning("copy %r: pattern %s matches no file", self._spec.copy_name, pattern)
        self.unmatched = unmatched

    def record(self, cycle: CycleResult, finished: float, *, scheduling: bool) -> None:
        """A cycle's result; ``scheduling`` when run() will schedule another."""
        self.last_cycle_at = finished
        self.cycles += 1
        self.last_cycle_seconds = (cycle.finished_at - cycle.started_at).total_seconds()
        if cycle.destination_error is None:
            self.last_success_at = finished
        interval = self._spec.copy_interval
        # status.json is written before run() schedules the next cycle: say when.
        if (
            scheduling
            and interval is not None
            and (self.next_cycle_at is None or self.next_cycle_at <= finished)
        ):
            self.next_cycle_at = finished + interval
        self.pending = cycle.pending_files
        # Reasons quote filesystem and server messages: one scrub before they reach
        # the status, status.json and the log.
        self.file_errors = tuple((path, scrub(reason)) for path, reason in cycle.file_errors)
        for path, reason in self.file_errors:
            if (path, reason) not in self._reported_files:
                logger.warning("copy %r: %s: %s", self._spec.copy_name, path, reason)
        self._reported_files = set(self.file_errors)
        if self.file_errors:
            path, reason = self.file_errors[0]
            more = len(self.file_errors) - 1
            self.last_error = f"{path}: {reason}" + (f" (and {more} more)" if more else "")
        if cycle.destination_error is not None:
            self.destination_failed(cycle.destination_error)
        elif self.failures:
            logger.info(
                "copy %r: destination %s works again after %d failed cycles",
                self._spec.copy_name,
                self._spec.destination_redacted,
                self.failures,
            )
            self.failures = 0

    def destination_failed(self, message: str) -> None:
        message = scrub(message)
        self.last_error = message
        self.failures += 1
        if self.failures == 1:
            # One record per failure streak; the status carries the rest.
            logger.error(
                "copy %r: destination failing, files stay pending and are retried every cycle: %s",
                self._spec.copy_name,
                message,
            )

    def cut_short(self, pending: int, bound: float | None) -> None:
        """The final cycle (or the one in progress at the stop) ran out of the
        stop's bound; ``pending`` is what its tally had left, if anything."""
        if pending:
            self.pending = pending
        self.last_error = (
            f"stopped before the final cycle finished (bound {bound:g} s); "
            f"{self.pending} files pending"
        )
        logger.warning(
            "copy %r: stopped before the final cycle finished (bound %g s): %d files "
            "pending, the next run ships them",
            self._spec.copy_name,
            bound,
            self.pending,
        )

    def cycle_failed(self, exc: Exception) -> None:
        """An unexpected error of a cycle: logged once per streak."""
        self.last_error = scrub(f"{type(exc).__name__}: {exc}")
        self.failures += 1
        if self.failures == 1:
            logger.exception("copy %r: cycle failed", self._spec.copy_name)
