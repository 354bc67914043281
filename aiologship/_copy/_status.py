"""What a copy reports: its state, a status snapshot, one cycle's result.

Plain data, no pyarrow: a process that only asks about copies running elsewhere
(a Ray copier actor, another process holding the host lock) imports this and never
the engine (pyarrow's filesystems take ~100 ms to import, holding the GIL, which
stalls every event loop in the process).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum


class CopyState(StrEnum):
    NEW = "new"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"
    SKIPPED = "skipped"  # set by the coordination layer (Ray worker node), never here


@dataclass(frozen=True, kw_only=True, slots=True)
class CopyStatus:
    """A snapshot of one copy operation. ``files_shipped``/``bytes_shipped`` count
    transfers (appends and replacements) since the engine opened; ``bytes_shipped``
    is what the destination received (compressed, for a compressed copy),
    ``bytes_read`` the source bytes that stand for."""

    name: str
    state: CopyState
    destination: str  # redacted
    files_shipped: int
    bytes_shipped: int
    pending_files: int
    last_cycle_at: datetime | None
    next_cycle_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    # (path, reason) of matched files that could not be shipped in the last
    # cycle: unreadable, not regular files, base-name collisions.
    file_errors: tuple[tuple[str, str], ...] = ()
    # Patterns that matched no file in the last cycle (not an error: their
    # files may not exist yet, but a typo shows here).
    unmatched_patterns: tuple[str, ...] = ()
    # How far behind shipping is, as of the last cycle's scan: source bytes not
    # yet at the destination, and the age (at this snapshot) of the oldest of
    # them, estimated from the modification time a scan first saw them at (so
    # at most one copy interval younger than the truth; 0 when nothing is behind).
    bytes_behind: int = 0
    behind_since: datetime | None = None
    oldest_unshipped_age: float = 0.0
    last_success_at: datetime | None = None  # end of the last cycle the destination took
    last_cycle_seconds: float | None = None
    cycles: int = 0  # cycles finished since the engine opened
    retries: int = 0  # transfer attempts retried (waits of the retry policy)
    # Source bytes the shipped bytes stand for (bytes_shipped counts what the
    # destination received: less, for a compressed copy).
    bytes_read: int = 0
    # Roll-up copies: roll files this engine created (each holds the sealed
    # ranges of many sources; files_shipped counts those ranges).
    roll_files: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class CycleResult:
    """What one cycle did. ``bytes_shipped`` counts bytes sent to the destination,
    ``bytes_read`` the source bytes they stand for (equal unless compressed)."""

    started_at: datetime
    finished_at: datetime
    files_scanned: int
    files_shipped: int
    files_appended: int
    files_replaced: int
    bytes_shipped: int
    pending_files: int
    file_errors: tuple[tuple[str, str], ...]
    destination_error: str | None
    bytes_read: int = 0

    @property
    def ok(self) -> bool:
        """Everything matched is at the destination and nothing failed."""
        return self.destination_error is None and self.pending_files == 0 and not self.file_errors
