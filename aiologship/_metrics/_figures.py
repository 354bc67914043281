"""The pipeline's figures of one manager, and of the whole process: the open
managers' plus what closed managers had counted (so a counter never goes back
when a manager closes)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from typing import NamedTuple


class PipelineFigures(NamedTuple):
    accepted: int = 0
    written: int = 0
    dropped_queue_full: int = 0  # refused by a full queue (drop_newest, or wait timed out)
    dropped_evicted: int = 0  # evicted by drop_oldest
    dropped_stream: int = 0  # refused or lost by a stream sink's buffer
    write_errors: int = 0
    queued: int = 0  # gauge
    capacity: int = 0  # gauge

    def plus(self, other: PipelineFigures) -> PipelineFigures:
        return PipelineFigures(*(a + b for a, b in zip(self, other, strict=True)))


_lock = threading.Lock()
_retired = PipelineFigures()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # the fork may have copied it held


os.register_at_fork(after_in_child=_new_lock_in_child)


def retire(final: PipelineFigures) -> None:
    """A manager closed: its counters stay in the process's totals (its gauges
    do not: nothing of it is queued any more)."""
    global _retired
    with _lock:
        _retired = _retired.plus(final._replace(queued=0, capacity=0))


def process_figures(open_managers: Iterable[PipelineFigures]) -> PipelineFigures:
    total = _retired
    for figures in open_managers:
        total = total.plus(figures)
    return total
