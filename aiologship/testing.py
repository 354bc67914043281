"""Helpers for testing code that logs through aiologship.

``capture_logs()`` collects records as dictionaries, with their context fields::

    with capture_logs("app") as records, aiologship.context(request_id="r-1"):
        log.info("hello", extra={"user": "ann"})
    assert records == [{"logger": "app", "level": "INFO", "message": "hello",
                        "request_id": "r-1", "user": "ann"}]
    assert_fields(records, request_id="r-1")   # every record carries it
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._logging._context import fields_now

__all__ = ["CaptureHandler", "assert_fields", "capture_logs"]

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


class CaptureHandler(logging.Handler):
    """Keeps every record it sees as a dictionary (synchronously, in the caller).

    The entry has the record's own fields (its ``extra=``, and what
    ``aiologship.Logger`` merged: sources, context, ``bind()``), and for a record
    of a plain stdlib logger the fields of the caller's context too, as
    ``aiologship.AsyncFileHandler`` writes them.
    """

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
        for key, value in dict(fields_now()).items():
            if key not in entry:
                entry[key] = value
        self.records.append(entry)


def assert_fields(
    records: list[dict[str, Any]], *, logger: str | None = None, **fields: Any
) -> None:
    """Assert that there are records (of ``logger`` and its children, when given)
    and that every one carries each of ``fields`` with that value::

        assert_fields(log_records, logger="app", request_id="r-1")

    The error lists the records that do not, with what they carry instead.
    """
    if logger is not None:
        prefix = logger + "."
        records = [r for r in records if r["logger"] == logger or r["logger"].startswith(prefix)]
    if not records:
        where = f" of logger {logger!r}" if logger is not None else ""
        raise AssertionError(f"no records{where} to check {fields!r} on")
    wrong = [
        (i, r["message"], {key: r.get(key, "<absent>") for key in fields})
        for i, r in enumerate(records)
        if any(key not in r or r[key] != value for key, value in fields.items())
    ]
    if wrong:
        shown = "\n".join(f"  #{i} {message!r}: {got!r}" for i, message, got in wrong[:10])
        more = f"\n  ... and {len(wrong) - 10} more" if len(wrong) > 10 else ""
        raise AssertionError(
            f"{len(wrong)} of {len(records)} records do not carry {fields!r}:\n{shown}{more}"
        )


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
