"""The C module (``aiologship._logging._speedups``) against the Python it mirrors.

``aiologship.Logger`` queues a call through ``_queue.emit_captured``: the C
version when the wheel built it, else ``_queue.py_emit_captured``. These tests
hold the two to the same results: the same sinks found for every shape of
logger tree (a state machine), the same lines written for every kind of call and
format, the same slow paths (a closed queue, a full one, a failing wake-up).
The rest of the suite runs on whichever is installed; ``nox -s tests`` also runs
``tests/logging`` again with ``AIOLOGSHIP_PURE_PYTHON=1``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shlex
import shutil
import sys
import sysconfig
import tempfile
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import aiologship
from aiologship import LogManager
from aiologship._logging import _formatting, _logger, _queue
from aiologship._logging._context import add_source, remove_source
from aiologship._logging._formatting import _Clock, _compile_text, _NotHere
from aiologship._logging._queue import SinkHandler
from tests.conftest import only_aiologship_sinks, read_lines

speedups = _queue.speedups
PURE = os.environ.get("AIOLOGSHIP_PURE_PYTHON", "") not in ("", "0")
_OFF = (
    "AIOLOGSHIP_PURE_PYTHON is set"
    if PURE
    else "aiologship._logging._speedups was not built (no C compiler at install)"
)
needs_c = pytest.mark.skipif(speedups is None, reason=f"no C path to compare: {_OFF}")


def test_the_c_module_is_there_when_it_can_be() -> None:
    """Not a skip in disguise: where a C compiler is, the install built the module
    and the logger uses it; with AIOLOGSHIP_PURE_PYTHON set, it uses Python."""
    if PURE:
        assert speedups is None
        assert _logger.emit_captured is _queue.py_emit_captured
        return
    cc = shlex.split(sysconfig.get_config_var("CC") or "cc")[0]
    if speedups is None:
        assert shutil.which(cc) is None, (
            f"{cc} is here but aiologship._logging._speedups was not built"
        )
        return
    assert _logger.emit_captured is speedups.emit_captured


# --------------------------------------------------------------- direct_sinks


class _Foreign(SinkHandler):
    """A SinkHandler subclass with its own emit: it needs the LogRecord."""

    def emit(self, record: logging.LogRecord) -> None:  # pragma: no cover - not called
        super().emit(record)


_LEVELS = [logging.NOTSET, logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.ERROR]


class DirectSinksMachine(RuleBasedStateMachine):
    """Loggers a tree of four under a top that does not propagate (pytest's
    handlers sit on the root); sinks of two managers, foreign handlers, filters,
    levels, ``propagate`` and ``disabled`` change at random. After every step, C
    and Python name the same sinks (or both None) for every logger and level."""

    counter = 0

    @initialize()
    def setup(self) -> None:
        DirectSinksMachine.counter += 1
        top = f"speedups.sm{DirectSinksMachine.counter}"
        self.names = [top, f"{top}.a", f"{top}.a.b", f"{top}.c"]
        self.folder = tempfile.mkdtemp(prefix="aiologship-speedups-")
        self.managers = [LogManager(), LogManager()]
        self.loggers = [logging.getLogger(n) for n in self.names]
        only_aiologship_sinks(self.loggers[0])
        self.saved = [(lg.level, lg.propagate, lg.disabled) for lg in self.loggers]
        self.added = 0

    def teardown(self) -> None:
        for manager in self.managers:
            manager.close()
        for lg, (level, propagate, disabled) in zip(self.loggers, self.saved, strict=True):
            for h in list(lg.handlers):
                lg.removeHandler(h)
            lg.filters.clear()
            lg.setLevel(level)
            lg.propagate, lg.disabled = propagate, disabled
        self.loggers[0].propagate = True
        shutil.rmtree(self.folder, ignore_errors=True)

    def _handlers(self) -> list[tuple[logging.Logger, logging.Handler]]:
        return [(lg, h) for lg in self.loggers for h in lg.handlers]

    @rule(which=st.integers(0, 3), manager=st.integers(0, 1), level=st.sampled_from(_LEVELS))
    def add_sink(self, which: int, manager: int, level: int) -> None:
        self.added += 1
        log = self.managers[manager].get_logger(self.names[which])
        log.add(os.path.join(self.folder, f"{self.added}.log"), level=level)

    @rule(which=st.integers(0, 3), kind=st.sampled_from(["stream", "null", "subclass"]))
    def add_foreign(self, which: int, kind: str) -> None:
        handler: logging.Handler
        if kind == "stream":
            handler = logging.StreamHandler(io.StringIO())
        elif kind == "null":
            handler = logging.NullHandler()
        else:
            sink = self.managers[0].get_logger(self.names[which])
            sink.add(os.path.join(self.folder, "sub.log"))
            plain = self.loggers[which].handlers.pop()
            assert isinstance(plain, SinkHandler)
            handler = _Foreign(
                plain._queue, plain.writer, logging.Formatter(), after_close=plain._after_close
            )
        self.loggers[which].addHandler(handler)

    @rule(pick=st.integers(0, 20))
    def remove_handler(self, pick: int) -> None:
        handlers = self._handlers()
        if handlers:
            lg, h = handlers[pick % len(handlers)]
            lg.removeHandler(h)

    @rule(pick=st.integers(0, 20), level=st.sampled_from(_LEVELS))
    def set_handler_level(self, pick: int, level: int) -> None:
        handlers = self._handlers()
        if handlers:
            handlers[pick % len(handlers)][1].setLevel(level)

    @rule(pick=st.integers(0, 20))
    def toggle_handler_filter(self, pick: int) -> None:
        handlers = self._handlers()
        if handlers:
            h = handlers[pick % len(handlers)][1]
            if h.filters:
                h.filters.clear()
            else:
                h.addFilter(lambda record: True)

    @rule(which=st.integers(0, 3))
    def toggle_logger_filter(self, which: int) -> None:
        lg = self.loggers[which]
        if lg.filters:
            lg.filters.clear()
        else:
            lg.addFilter(logging.Filter("speedups"))

    @rule(which=st.integers(1, 3))
    def toggle_propagate(self, which: int) -> None:
        self.loggers[which].propagate = not self.loggers[which].propagate

    @rule(which=st.integers(0, 3))
    def toggle_disabled(self, which: int) -> None:
        self.loggers[which].disabled = not self.loggers[which].disabled

    @invariant()
    def same_sinks(self) -> None:
        assert speedups is not None
        for lg in getattr(self, "loggers", []):
            for level in (logging.DEBUG, logging.INFO, 25, logging.WARNING, logging.CRITICAL):
                got = speedups.direct_sinks(lg, level)
                want = _queue.direct_sinks(lg, level)
                assert got == want, (lg.name, level, got, want)
                if got is not None:
                    assert [id(h) for h in got] == [id(h) for h in want]


TestDirectSinks = needs_c(DirectSinksMachine.TestCase)
TestDirectSinks.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


# --------------------------------------------------------------- the lines


_FORMATS = [
    "%(levelname)s %(name)s: %(message)s",  # nothing needed: C builds the item
    "%(levelname)s %(message)s %(lineno)d %(funcName)s %(module)s %(filename)s",
    "%(message)s %(threadName)s %(thread)d %(processName)s %(process)d",
    "%(message)s req=%(req)s n=%(n)s",  # context and extra= fields
]
if sys.version_info >= (3, 12):
    _FORMATS.append("%(message)s task=%(taskName)s")

_values = st.one_of(
    st.integers(-(2**70), 2**70),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.binary(max_size=4),
    st.lists(st.integers(), max_size=2),  # mutable: the record path
)
_call = st.fixed_dictionaries(
    {
        "method": st.sampled_from(["debug", "info", "warning", "error", "critical"]),
        "args": st.lists(_values, max_size=3),
        "extra": st.one_of(
            st.none(),
            st.fixed_dictionaries({"n": _values}),
            st.just({}),
        ),
        "bound": st.booleans(),
        "str_msg": st.booleans(),
        # A mutable value needs a snapshot at the call: the Python path.
        "context": st.sampled_from([{}, {"req": "ctx"}, {"n": [1, 2]}]),
    }
)


@contextlib.contextmanager
def _on(impl: str) -> Iterator[None]:
    """The logger's calls go through C (``_fast``, then C ``emit_captured``) or
    through the Python they mirror."""
    if impl == "c":
        assert speedups is not None
        fast, emit = speedups.log, speedups.emit_captured
    else:
        fast, emit = None, _queue.py_emit_captured
    with (
        mock.patch.object(_logger, "_fast", fast),
        mock.patch.object(_logger, "emit_captured", emit),
    ):
        yield


def _one_call(log: Any, call: dict[str, Any]) -> None:
    """Every call from this one line: lineno and funcName are the same for both."""
    target = log.bind(req="bound") if call["bound"] else log
    # A message that is not a str: the record path (it has no arguments to format).
    msg: Any = "m" + " %r" * len(call["args"]) if call["str_msg"] else 7
    args = call["args"] if call["str_msg"] else []
    kwargs = {} if call["extra"] is None else {"extra": call["extra"]}
    with aiologship.context(**call["context"]):
        getattr(target, call["method"])(msg, *args, **kwargs)


@pytest.fixture
def two_loggers(tmp_path: Path) -> Iterator[Callable[[str], tuple[Any, Any, Path, Path]]]:
    managers: list[LogManager] = []
    count = [0]

    def make(fmt: str) -> tuple[Any, Any, Path, Path]:
        count[0] += 1
        lm = LogManager()
        managers.append(lm)
        made = []
        for side in ("c", "py"):
            name = f"speedups.lines{count[0]}.{side}"
            log = lm.get_logger(name)
            log.logger.setLevel(logging.DEBUG)
            only_aiologship_sinks(log.logger)
            path = tmp_path / f"{count[0]}-{side}.log"
            log.add(str(path), fmt=fmt)
            made.append((log, path))
        return made[0][0], made[1][0], made[0][1], made[1][1]

    yield make
    for lm in managers:
        lm.close()


@needs_c
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fmt=st.sampled_from(_FORMATS), calls=st.lists(_call, min_size=1, max_size=12))
def test_c_and_python_write_the_same_lines(
    two_loggers: Callable[[str], tuple[Any, Any, Path, Path]],
    fmt: str,
    calls: list[dict[str, Any]],
) -> None:
    assert speedups is not None
    c_log, py_log, c_path, py_path = two_loggers(fmt)
    for call in calls:
        with _on("c"):
            _one_call(c_log, call)
        with _on("python"):
            _one_call(py_log, call)
    assert c_log._log_manager.flush(timeout=10)
    # split("\n"), not splitlines(): a text value may hold "\x1e" or "\u2028".
    c_lines = c_path.read_text(encoding="utf-8").split("\n")
    py_lines = py_path.read_text(encoding="utf-8").split("\n")
    if "%(name)s" in fmt:  # the one difference: the logger's name, first on the line
        c_lines = [line.replace(c_log.logger.name, "L", 1) for line in c_lines]
        py_lines = [line.replace(py_log.logger.name, "L", 1) for line in py_lines]
    assert c_lines == py_lines
    assert len(c_lines) == len(calls) + 1  # one line a call (DEBUG is on), then ""


@needs_c
def test_the_caller_line_is_the_call_site(tmp_path: Path) -> None:
    """The C path finds the caller two frames above _emit, as the Python path
    does with sys._getframe: the line and function of the log call itself."""
    with LogManager() as lm:
        log = lm.get_logger("speedups.site")
        only_aiologship_sinks(log.logger)
        path = tmp_path / "site.log"
        log.add(str(path), fmt="%(funcName)s:%(lineno)d %(message)s")
        line = sys._getframe().f_lineno + 1
        log.warning("here")  # the level method in C (_fast)
        log.bind(k=1).error("bound")
        log.info("extra", extra={"k": 2})  # a keyword: _emit, then C emit_captured
        log.log(logging.INFO, "log")  # log(): _emit
        assert lm.flush(timeout=10)
    name = "test_the_caller_line_is_the_call_site"
    assert read_lines(path) == [
        f"{name}:{line} here",
        f"{name}:{line + 1} bound",
        f"{name}:{line + 2} extra",
        f"{name}:{line + 3} log",
    ]


# --------------------------------------------------------------- slow paths


@pytest.fixture(params=["c", "python"])
def path_impl(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "c" and speedups is None:
        pytest.skip(f"no C path to compare: {_OFF}")
    with _on(request.param):
        yield request.param


def test_two_managers_each_print_their_own_format(path_impl: str, tmp_path: Path) -> None:
    """Sinks of two managers on one logger: the needs of both are collected, each
    writes its own format, a sink above the level gets nothing."""
    with LogManager() as one, LogManager() as two:
        a = one.get_logger("speedups.two")
        only_aiologship_sinks(a.logger)
        a.add(str(tmp_path / "a.log"), fmt="%(levelname)s %(message)s")
        b = two.get_logger("speedups.two")
        b.add(str(tmp_path / "b.log"), fmt="%(funcName)s %(threadName)s %(message)s")
        b.add(str(tmp_path / "c.log"), fmt="%(message)s", level="ERROR")
        a.warning("w %s", 1)
        assert one.flush(timeout=10) and two.flush(timeout=10)
    assert read_lines(tmp_path / "a.log") == ["WARNING w 1"]
    assert read_lines(tmp_path / "b.log") == [
        "test_two_managers_each_print_their_own_format MainThread w 1"
    ]
    c_log = tmp_path / "c.log"
    assert not c_log.exists() or read_lines(c_log) == []


def test_after_close_the_record_path_writes_it(path_impl: str, tmp_path: Path) -> None:
    lm = LogManager()
    log = lm.get_logger("speedups.closed")
    only_aiologship_sinks(log.logger)
    log.add(str(tmp_path / "x.log"), fmt="%(message)s")
    log.info("before")
    lm.close()
    log.info("after %d", 1)
    assert read_lines(tmp_path / "x.log") == ["before", "after 1"]
    assert lm.stats().after_close == 1


def test_a_full_queue_counts_every_record(path_impl: str, tmp_path: Path) -> None:
    """Past the high-water mark the C path hands the item to put_captured: the
    soft back-pressure, then drop_newest. Nothing is lost without being counted."""
    with LogManager(queue_size=16, overflow="drop_newest") as lm:
        log = lm.get_logger("speedups.full")
        only_aiologship_sinks(log.logger)
        log.add(str(tmp_path / "x.log"), fmt="%(message)s")
        for i in range(3000):
            log.info("r %d", i)
        assert lm.flush(timeout=30)
        stats = lm.stats()
    lines = read_lines(tmp_path / "x.log")
    assert stats.accepted + stats.dropped == 3000
    notes = [line for line in lines if not line.startswith("r ")]
    assert len(lines) - len(notes) == stats.written == stats.accepted
    numbers = [int(line[2:]) for line in lines if line.startswith("r ")]
    assert numbers == sorted(numbers)


def test_a_failing_wake_up_is_reported_and_the_record_kept(
    path_impl: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The wake-up raising after the append (a closed loop): the handler's
    handleError reports it, the caller goes on, the record stays queued and is
    written by the next flush."""
    with LogManager() as lm:
        log = lm.get_logger("speedups.wake")
        only_aiologship_sinks(log.logger)
        log.add(str(tmp_path / "x.log"), fmt="%(message)s")
        log.info("first")
        assert lm.flush(timeout=10)
        queue = log.logger.handlers[0]._queue

        def broken() -> None:
            raise RuntimeError("no loop")

        with mock.patch.object(queue, "_wake", broken):
            queue.wake_pending = False
            log.info("kept")
        assert "RuntimeError: no loop" in capsys.readouterr().err
        assert lm.flush(timeout=10)
    assert read_lines(tmp_path / "x.log") == ["first", "kept"]


def test_bad_arguments_are_type_errors() -> None:
    if speedups is None:
        pytest.skip(f"no C path to compare: {_OFF}")
    std = logging.getLogger("speedups.bad")
    with pytest.raises(TypeError, match="6 arguments"):
        speedups.emit_captured(std, 20, "m", ())  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="tuples"):
        speedups.emit_captured(std, 20, "m", [1], (), None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="2 arguments"):
        speedups.direct_sinks(std)  # type: ignore[call-arg]


def test_a_mutable_argument_prints_as_it_was_at_the_call(path_impl: str, tmp_path: Path) -> None:
    """A list argument is not immutable: the call takes the record path, which
    formats the message at the call. The pump is held inside the first record's
    format while the list changes, so a captured list would print changed."""
    started, release = threading.Event(), threading.Event()

    class Holding(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            if record.getMessage() == "hold":
                started.set()
                release.wait(10)
            return super().format(record)

    with LogManager() as lm:
        log = lm.get_logger("speedups.mutable")
        only_aiologship_sinks(log.logger)
        log.add(str(tmp_path / "x.log"))
        log.logger.handlers[0].setFormatter(Holding("%(message)s"))
        log.info("hold")
        assert started.wait(10)
        items = [1]
        log.info("v %s", items)
        items.append(2)
        release.set()
        assert lm.flush(timeout=10)
    assert read_lines(tmp_path / "x.log") == ["hold", "v [1]"]


# --------------------------------------------------------------- compiled formats

_PLAIN_FIELDS = [*_formatting._C_FIELDS, "req", "n", "filename", "msecs"]
_fmt_piece = st.one_of(
    st.text(st.characters(blacklist_characters="%", blacklist_categories=["Cs"]), max_size=4),
    st.just("%%"),
    st.sampled_from(_PLAIN_FIELDS).map(lambda field: f"%({field})s"),
    st.sampled_from(["%(levelno)d", "%(name)-8s", "%(message)r"]),  # not plain: Python
)
_short = st.text(max_size=6)
_scalar = st.one_of(st.integers(), st.floats(), _short, st.none(), st.booleans())
_captured = st.tuples(
    st.just(0),
    _short,  # name
    st.sampled_from([0, 5, 10, 20, 25, 30, 40, 50]),
    st.sampled_from(["m", "m %s", "m %s %d", "%(k)s", "100%", "%%"]),
    st.lists(_scalar, max_size=2).map(tuple),
    st.floats(min_value=-2e9, max_value=4e9, allow_nan=False),  # created
    _short, st.integers(0, 10**6), _short,  # pathname, lineno, funcName
    st.one_of(st.none(), st.integers(0, 2**64)), st.one_of(st.none(), _short),
    st.one_of(st.none(), _short), st.one_of(st.none(), st.integers(0, 2**22)),
    st.one_of(st.none(), _short),  # taskName
    st.one_of(
        st.none(),
        st.lists(st.tuples(st.sampled_from(["req", "n", "x"]), _scalar), max_size=3).map(tuple),
    ),
)  # fmt: skip


def _outcome(fn: Callable[[tuple[Any, ...]], str], item: tuple[Any, ...]) -> tuple[Any, ...]:
    try:
        return ("line", fn(item))
    except _NotHere as e:
        return ("not here", e.args)
    except Exception as e:
        return ("error", type(e))


@needs_c
@settings(max_examples=400, deadline=None)
@given(
    pieces=st.lists(_fmt_piece, min_size=1, max_size=8),
    items=st.lists(_captured, min_size=1, max_size=4),
    tz=st.sampled_from(
        [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
    ),
)
def test_compiled_text_in_c_is_the_python_function(
    pieces: list[str], items: list[tuple[Any, ...]], tz: Any
) -> None:
    """Whatever _compile_text makes of a format (a CompiledText, or the Python
    function for the formats it leaves to Python) gives, for any captured call,
    the Python function's line or the same exception (the record path then
    decides). The next test shows the usual formats do compile to C."""
    text = "".join(pieces)
    clock = _Clock(tz)
    c = _compile_text(text, clock)
    py = _compile_text(text, clock, accel=False)
    assert (c is None) == (py is None)
    if c is None or py is None:
        return
    for item in items:
        assert _outcome(c, item) == _outcome(py, item), (text, item)


@needs_c
def test_compiled_text_is_used_for_the_usual_formats() -> None:
    """Not a vacuous property: the default format, a context field and the thread
    fields compile to C; a field it does not compute or a width stays Python."""
    assert speedups is not None
    clock = _Clock(UTC)
    for text in (
        "%(asctime)s %(levelname)s %(name)s: %(message)s",
        "%(asctime)s [%(req)s] %(message)s %(threadName)s %(lineno)s 100%%",
    ):
        assert isinstance(_compile_text(text, clock), speedups.CompiledText)
    for text in ("%(filename)s %(message)s", "%(levelname)-8s %(message)s"):
        compiled = _compile_text(text, clock)
        assert compiled is not None and not isinstance(compiled, speedups.CompiledText)
    line = _compile_text("%(asctime)s|%(levelname)s|%(message)s|%(req)s", clock)
    assert line is not None
    item = (0, "n", 25, "a %s", (1,), 1_700_000_000.25, "", 0, "", None, None, None, None,
            None, (("req", "r1"), ("req", "r2")))  # fmt: skip
    assert line(item) == "2023-11-14T22:13:20.250Z|Level 25|a 1|r2\n"


@needs_c
def test_compiled_text_refuses_what_it_cannot_format() -> None:
    assert speedups is not None
    args = (_Clock(UTC), _formatting._MILLIS, {}, logging.getLevelName, _NotHere)
    for bad in ((0,), (14,), (99,), (1.5,), (("a", "b"),)):
        with pytest.raises(ValueError, match="bad segment"):
            speedups.CompiledText(bad, *args)
    with pytest.raises(ValueError, match="too many fields"):
        speedups.CompiledText((1,) * 200, *args)
    compiled = speedups.CompiledText(("x", 101), *args)
    with pytest.raises(ValueError, match="15-tuple"):
        compiled((1, 2))
    with pytest.raises(TypeError, match="one captured call"):
        compiled()


@pytest.mark.parametrize("impl", ["c", "python"])
def test_levels_disable_and_logger_classes_decide_as_the_stdlib(impl: str, tmp_path: Path) -> None:
    """What the C level methods read instead of calling isEnabledFor (the logger's
    disabled flag and per-level cache) follows setLevel, logging.disable and
    disabled; a Logger class with its own isEnabledFor is asked."""
    if impl == "c" and speedups is None:
        pytest.skip(f"no C path to compare: {_OFF}")

    class Picky(logging.Logger):
        def isEnabledFor(self, level: int) -> bool:
            return level == logging.ERROR

    with LogManager() as lm, _on(impl):
        log = lm.get_logger(f"speedups.levels.{impl}")
        only_aiologship_sinks(log.logger)
        log.add(str(tmp_path / "x.log"), fmt="%(levelname)s %(message)s")
        log.logger.setLevel(logging.WARNING)
        log.info("1 no")
        log.warning("2 yes")
        log.logger.setLevel(logging.DEBUG)
        log.debug("3 yes")
        logging.disable(logging.INFO)
        try:
            log.info("4 no")
            log.warning("5 yes")
        finally:
            logging.disable(logging.NOTSET)
        log.info("6 yes")
        log.logger.disabled = True
        log.critical("7 no")
        log.logger.disabled = False
        picky = Picky(f"speedups.picky.{impl}")
        picky.propagate = False
        picky.handlers = list(log.logger.handlers)
        adapter = type(log)(picky, lm)
        adapter.critical("8 no")
        adapter.error("9 yes")
        assert lm.flush(timeout=10)
    assert read_lines(tmp_path / "x.log") == [
        "WARNING 2 yes", "DEBUG 3 yes", "WARNING 5 yes", "INFO 6 yes", "ERROR 9 yes",
    ]  # fmt: skip


def test_sources_then_context_then_bound_fields(path_impl: str, tmp_path: Path) -> None:
    """The fields of a call, lowest precedence first: the sources' (here the
    manager's own and one more, so source_pairs runs), the bound context, bind()."""

    def source() -> tuple[tuple[str, Any], ...]:
        return (("src", "s"), ("req", "from-source"))

    with LogManager() as lm:
        log = lm.get_logger("speedups.sources")
        only_aiologship_sinks(log.logger)
        log.add(str(tmp_path / "x.log"), fmt="%(message)s %(src)s %(req)s")
        add_source(source)
        try:
            log.info("a")
            with aiologship.context(req="ctx"):
                log.info("b")
                log.bind(req="bound").info("c")
        finally:
            remove_source(source)
        log.info("d %s", "gone")  # no such field any more: the record path prints "-"
        assert lm.flush(timeout=10)
    assert read_lines(tmp_path / "x.log") == [
        "a s from-source", "b s ctx", "c s bound", "d gone - -",
    ]  # fmt: skip
