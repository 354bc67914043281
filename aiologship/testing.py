"""Helpers for testing code that logs through aiologship.

``capture_logs()`` collects records as dictionaries::

    with capture_logs("app") as records:
        log.info("hello", extra={"user": "ann"})
    assert records == [{"logger": "app", "level": "INFO", "message": "hello", "user": "ann", ...}]
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["CaptureHandler", "capture_logs"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class CaptureHandler(logging.Handler):
    """Keeps every record it sees as a dictionary (synchronously, in the caller)."""

    def __init__(self, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        entry: dict[str, Any] = {
            "logger": record.name,
            "level": record.levelname,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc_info"] = record.exc_info[1]
        for key, value in vars(record).items():
            if key not in _STANDARD:
                entry[key] = value
        self.records.append(entry)


@contextmanager
def capture_logs(
    logger: str | None = None, level: int | str = logging.NOTSET
) -> Iterator[list[dict[str, Any]]]:
    """Collect the records that reach ``logger`` (root by default) as dictionaries."""
    handler = CaptureHandler(logging._checkLevel(level))  # type: ignore[attr-defined]
    target = logging.getLogger(logger)
    target.addHandler(handler)
    try:
        yield handler.records
    finally:
        target.removeHandler(handler)
