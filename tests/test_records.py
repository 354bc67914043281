"""The fast record path builds the same LogRecord the stdlib would."""

from __future__ import annotations

import logging
import sys

import pytest

from aiologship import LogManager

# asctime and message appear when some handler (pytest, Ray) already formatted the record.
_VOLATILE = {"created", "msecs", "relativeCreated", "lineno", "asctime", "message"}


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def pair() -> tuple[logging.Logger, _Keep]:
    std = logging.getLogger("records.pair")
    keep = _Keep()
    std.addHandler(keep)
    std.propagate = False
    return std, keep


def _compare(fast: logging.LogRecord, slow: logging.LogRecord) -> None:
    a = {k: v for k, v in vars(fast).items() if k not in _VOLATILE}
    b = {k: v for k, v in vars(slow).items() if k not in _VOLATILE}
    assert a == b
    assert fast.lineno == slow.lineno + 1  # the two calls stand on consecutive lines


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((), {}),
        ((1, "two"), {}),
        (({"a": 1},), {}),
        ((), {"extra": {"request_id": "r-1", "user": "ann"}}),
    ],
)
def test_fast_record_matches_stdlib(
    pair: tuple[logging.Logger, _Keep], args: tuple, kwargs: dict
) -> None:
    std, keep = pair
    with LogManager() as lm:
        log = lm.get_logger("records.pair")
        fmt = "message" + " %s" * len(args) if not (args and isinstance(args[0], dict)) else "%(a)s"
        std.info(fmt, *args, **kwargs)
        log.info(fmt, *args, **kwargs)
    slow, fast = keep.records
    _compare(fast, slow)
    assert fast.funcName == "test_fast_record_matches_stdlib"
    assert fast.pathname == __file__


def test_exc_info_matches_stdlib(pair: tuple[logging.Logger, _Keep]) -> None:
    std, keep = pair
    with LogManager() as lm:
        log = lm.get_logger("records.pair")
        try:
            raise ValueError("boom")
        except ValueError:
            std.exception("failed")
            log.exception("failed")
    slow, fast = keep.records
    assert fast.exc_info is not None and slow.exc_info is not None
    assert fast.exc_info[1] is slow.exc_info[1]
    _compare(fast, slow)


def test_stack_info_and_stacklevel_point_at_the_caller(pair: tuple[logging.Logger, _Keep]) -> None:
    _std, keep = pair

    def helper(log: logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        log.warning("from helper", stacklevel=2)

    with LogManager() as lm:
        log = lm.get_logger("records.pair")
        log.info("with stack", stack_info=True)
        helper(log)
    stacked, leveled = keep.records
    assert stacked.funcName == "test_stack_info_and_stacklevel_point_at_the_caller"
    assert stacked.stack_info is not None and "test_stack_info_and_stacklevel" in stacked.stack_info
    assert leveled.funcName == "test_stack_info_and_stacklevel_point_at_the_caller"


def test_extra_cannot_overwrite_record_fields(pair: tuple[logging.Logger, _Keep]) -> None:
    with LogManager() as lm:
        log = lm.get_logger("records.pair")
        with pytest.raises(KeyError, match="message"):
            log.info("x", extra={"message": "clobber"})
        with pytest.raises(KeyError, match="lineno"):
            log.info("x", extra={"lineno": 3})


def test_custom_record_factory_is_honoured(pair: tuple[logging.Logger, _Keep]) -> None:
    _std, keep = pair
    old = logging.getLogRecordFactory()

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = old(*args, **kwargs)
        record.tagged = True
        return record

    logging.setLogRecordFactory(factory)
    try:
        with LogManager() as lm:
            lm.get_logger("records.pair").info("hello")
    finally:
        logging.setLogRecordFactory(old)
    (record,) = keep.records
    assert record.tagged is True
    assert record.funcName == "test_custom_record_factory_is_honoured"


def test_unknown_keyword_is_a_type_error() -> None:
    with LogManager() as lm, pytest.raises(TypeError, match="colour"):
        lm.get_logger("records.kw").info("x", colour="red")


def test_python_version_supported() -> None:
    assert sys.version_info >= (3, 11)
