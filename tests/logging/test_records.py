"""The fast record path builds the same LogRecord the stdlib would."""

from __future__ import annotations

import gc
import json
import logging
import sys
import threading
import types
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologship import LogManager
from aiologship._logging import _records
from aiologship._logging._queue import direct_sinks
from aiologship._logging._records import build, capture
from tests.conftest import only_aiologship_sinks

# asctime and message appear when some handler (pytest, Ray) already formatted the record.
_VOLATILE = {
    "created", "msecs", "relativeCreated", "lineno", "asctime", "message",
    "_ray_timestamp_ns",  # Ray's record factory, once Ray was imported by another test
}  # fmt: skip


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


# ------------------------------------------------- calls that reach only our sinks


def test_captured_call_builds_the_stdlib_record() -> None:
    std = logging.getLogger("records.captured")
    frame = sys._getframe()
    fast = build(capture(3, std, logging.WARNING, "m %s %d", ("a", 2), frame)); slow = logging.LogRecord(std.name, logging.WARNING, frame.f_code.co_filename, frame.f_lineno, "m %s %d", ("a", 2), None, frame.f_code.co_name)  # noqa: E501, E702  # fmt: skip
    volatile = {"created", "msecs", "relativeCreated"}
    a = {k: v for k, v in vars(fast).items() if k not in volatile}
    b = {k: v for k, v in vars(slow).items() if k not in volatile}
    assert list(a) == list(b)  # same keys in the same order
    assert a == b
    assert fast.funcName == "test_captured_call_builds_the_stdlib_record"
    assert 0 <= slow.created - fast.created < 5  # captured first, on the same line


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=12), st.booleans())
def test_line_numbers_of_call_sites_in_fresh_code(offsets: list[int], traced: bool) -> None:
    """The line of each call site, as ``frame.f_lineno`` says, also when code objects
    come and go (the line cache keys on ``id(code)``, which a freed code object gives
    back: the cache is made tiny here so that it is cleared, and ids come back, all
    the time) and under a tracer (a debugger, coverage)."""
    std = logging.getLogger("records.lines")

    def here() -> int:
        return int(capture(0, std, logging.INFO, "m", (), sys._getframe(1))[7])

    saved = sys.gettrace()
    with mock.patch.object(_records, "_LINES_LIMIT", 3):
        if traced:
            sys.settrace(lambda *a: None)
        try:
            for off in offsets:
                src = "\n" * off + "def f(here):\n    out = [here()]\n    for _ in range(2):\n        out.append(here())\n    return out, here()\n"  # noqa: E501  # fmt: skip
                module = compile(src, "<generated>", "exec")
                code = next(c for c in module.co_consts if isinstance(c, types.CodeType))
                f = types.FunctionType(code, {"range": range})
                assert f(here) == ([off + 2, off + 4, off + 4], off + 5)
                del module, code, f  # freed once the cache lets go: the id comes back
        finally:
            sys.settrace(saved)


def test_thread_names_as_the_stdlib_reads_them() -> None:
    """A named thread, the same thread renamed, and a thread ``threading`` never
    started (``_thread``): the captured ``threadName`` is what a stdlib record says."""
    import _thread

    std = logging.getLogger("records.threads")
    seen: list[tuple[str | None, str | None]] = []
    done = threading.Event()

    def two_records() -> None:
        for _ in range(2):
            frame = sys._getframe()
            fast = capture(0, std, logging.INFO, "m", (), frame)[10]
            slow = logging.LogRecord("n", logging.INFO, "p", 1, "m", (), None).threadName
            seen.append((fast, slow))
            threading.current_thread().name = "renamed"

    t = threading.Thread(target=two_records, name="worker-1")
    t.start()
    t.join(10)

    def foreign() -> None:
        try:
            two_records()
        finally:
            done.set()

    _thread.start_new_thread(foreign, ())
    assert done.wait(10)
    assert [fast for fast, _ in seen] == [slow for _, slow in seen]
    assert seen[0][0] == "worker-1" and seen[1][0] == "renamed"
    assert seen[2][0] is not None and seen[2][0].startswith("Dummy-")


def test_captured_call_formats_like_stdlib(tmp_path: Path) -> None:
    fields = (
        "%(name)s|%(levelname)s|%(levelno)d|%(pathname)s|%(filename)s|%(module)s|"
        "%(funcName)s|%(lineno)d|%(thread)d|%(threadName)s|%(processName)s|%(process)d|"
        "%(message)s"
    )
    path = tmp_path / "fields.log"
    with LogManager() as lm:
        log = lm.get_logger("records.fields")
        log.add(path, fmt=fields)
        only_aiologship_sinks(log.logger)  # pytest's handlers would need a LogRecord
        assert direct_sinks(log.logger, logging.ERROR)
        log.error("value=%s n=%d", "v", 7); line = sys._getframe().f_lineno  # noqa: E702  # fmt: skip
    (written,) = path.read_text(encoding="utf-8").splitlines()
    expected = logging.LogRecord(
        "records.fields", logging.ERROR, __file__, line, "value=%s n=%d", ("v", 7), None,
        "test_captured_call_formats_like_stdlib",
    )  # fmt: skip
    assert written == logging.Formatter(fields).format(expected)


def test_direct_sinks_only_when_nothing_else_sees_the_record(tmp_path: Path) -> None:
    with LogManager() as lm:
        log = lm.get_logger("records.route.child")
        log.add(tmp_path / "a.log", level="WARNING")
        std = log.logger
        only_aiologship_sinks(std)
        (sink,) = std.handlers
        assert direct_sinks(std, logging.WARNING) == [sink]
        assert direct_sinks(std, logging.INFO) == []  # below the sink's level: nothing to do
        sink.addFilter(lambda r: True)
        assert direct_sinks(std, logging.WARNING) is None  # a handler filter needs the record
        sink.filters.clear()
        std.addFilter(lambda r: True)
        assert direct_sinks(std, logging.WARNING) is None  # so does a logger filter
        std.filters.clear()
        parent = logging.getLogger("records.route")
        parent.addHandler(_Keep())
        std.propagate = True
        parent.propagate = False
        assert direct_sinks(std, logging.WARNING) is None  # another handler up the chain
        only_aiologship_sinks(parent)
        assert direct_sinks(std, logging.WARNING) == [sink]
        sink_less = logging.getLogger("records.route.none")
        only_aiologship_sinks(sink_less)
        assert direct_sinks(sink_less, logging.WARNING) is None  # stdlib's lastResort
        std.disabled = True
        assert direct_sinks(std, logging.WARNING) is None


def test_filters_still_apply_to_sink_handlers(tmp_path: Path) -> None:
    path = tmp_path / "filtered.log"
    with LogManager() as lm:
        log = lm.get_logger("records.filtered")
        log.add(path, fmt="%(message)s")
        only_aiologship_sinks(log.logger)
        (sink,) = log.logger.handlers
        sink.addFilter(lambda r: "secret" not in r.getMessage())
        log.info("kept")
        log.info("a %s here", "secret")
    assert path.read_text(encoding="utf-8").splitlines() == ["kept"]


def test_captured_calls_are_not_garbage_collector_work() -> None:
    """What the queue holds for a call that reaches only our sinks: after one young
    collection, nothing the collector must follow (benchmarks/: full collections
    over queued LogRecords cost ~18% of a burst)."""
    std = logging.getLogger("records.gc")
    args = (int("1"), "x")  # built at run time, not a constant
    item = capture(0, std, logging.INFO, "n=%d s=%s", args, sys._getframe())
    assert gc.is_tracked(item)
    gc.collect(0)
    assert not gc.is_tracked(item)
    record = build(item)
    assert record.getMessage() == "n=1 s=x"


def test_captured_call_carries_extra_fields(tmp_path: Path) -> None:
    path = tmp_path / "extra.json"
    with LogManager() as lm:
        log = lm.get_logger("records.extra")
        log.add(path, json=True)
        only_aiologship_sinks(log.logger)
        log.info("order %s", "A-1", extra={"order_id": 42, "user": "ann"})
        with pytest.raises(KeyError, match="lineno"):
            log.info("x", extra={"lineno": 3})  # still refused, as by the stdlib
        log.info("list", extra={"items": [1, 2]})  # mutable: takes the record path
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert (first["message"], first["order_id"], first["user"]) == ("order A-1", 42, "ann")
    assert second["items"] == [1, 2]


def test_captured_extra_builds_the_stdlib_record() -> None:
    std = logging.getLogger("records.captured.extra")
    frame = sys._getframe()
    fast = build(capture(0, std, logging.INFO, "m", (), frame, (("k", "v"), ("n", 1)))); slow = logging.LogRecord(std.name, logging.INFO, frame.f_code.co_filename, frame.f_lineno, "m", (), None, frame.f_code.co_name)  # noqa: E501, E702  # fmt: skip
    slow.__dict__.update(k="v", n=1)
    volatile = {"created", "msecs", "relativeCreated"}
    a = {k: v for k, v in vars(fast).items() if k not in volatile}
    b = {k: v for k, v in vars(slow).items() if k not in volatile}
    assert list(a) == list(b)
    assert a == b
