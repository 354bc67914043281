"""A captured call collects only the caller's context some sink prints.

``_records.capture`` skips the call site (pathname, lineno, funcName), the
thread, the process and the task when no sink of the manager prints them
(``RecordQueue.needs``). These tests attack that: every way a format can change
(a sink added or removed, ``setFormatter``, a plain assignment, a formatter of
another kind, two managers on one logger) must still give every line exactly
what the stdlib prints for the same call.
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
from datetime import UTC
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aiologship import LogManager
from aiologship._logging import _records
from aiologship._logging._formatting import TextFormatter, needs_of
from aiologship._logging._queue import direct_sinks
from aiologship._logging._records import EVERYTHING, PROCESS, TASK, THREAD, WHERE, capture
from tests.conftest import only_aiologship_sinks, read_lines

# Fields a format may print that do not change between two calls of _log_here
# (no time: created, msecs, asctime differ from the reference record's).
_FIELDS = [
    "name", "levelname", "levelno", "message", "pathname", "filename", "module",
    "lineno", "funcName", "thread", "threadName", "process", "processName",
]  # fmt: skip
_SPECS = {"lineno": ["d", "s", "5d"], "levelno": ["d", "s"], "thread": ["d", "s"]}


def _log_here(log: Any, n: int) -> int:
    log.warning("call %d", n); return sys._getframe().f_lineno  # noqa: E702  # fmt: skip


def _expected(fmt: str, name: str, n: int, line: int) -> str:
    """What ``logging.Formatter(fmt)`` prints for the call ``_log_here`` made."""
    record = logging.LogRecord(
        name, logging.WARNING, __file__, line, "call %d", (n,), None, "_log_here"
    )
    return logging.Formatter(fmt).format(record)


def test_a_group_is_needed_only_by_a_format_that_prints_it() -> None:
    def needs(fmt: str) -> int:
        return needs_of(TextFormatter(fmt, tz=UTC))

    assert needs("%(asctime)s %(levelname)s %(name)s: %(message)s") == 0
    assert needs("%(message)s %(request_id)s") == 0  # a context field
    assert needs("%(lineno)d") == needs("%(module)s") == needs("%(funcName)-10s") == WHERE
    assert needs("%(threadName)s") == needs("%(thread)d") == THREAD
    assert needs("%(process)d") == needs("%(processName)s") == PROCESS
    assert needs("%(taskName)s") == TASK
    assert needs("%(pathname)s %(thread)d %(process)d") == WHERE | THREAD | PROCESS
    # Another style, another kind of formatter: it may read anything.
    assert needs_of(logging.Formatter("{lineno} {message}", style="{")) == EVERYTHING

    class Custom(logging.Formatter):
        pass

    assert needs_of(Custom("%(message)s")) == EVERYTHING
    assert needs_of(logging.Formatter("%(message)s %(lineno)d")) == WHERE
    assert needs_of(None) == 0


def test_skipped_groups_read_as_the_stdlib_reads_a_context_it_does_not_collect() -> None:
    """With nothing needed, the record carries what the stdlib itself gives when
    ``findCaller`` finds no frame and ``logThreads``/``logProcesses``/
    ``logMultiprocessing`` are off: every formatter can print those values."""
    std = logging.getLogger("needs.none")
    record = _records.build(capture(0, std, logging.INFO, "m", (), sys._getframe(), None, 0))
    # The stdlib's own: findCaller's answer when it finds no frame, and a record
    # made with thread, process and task collection off.
    fn, lno, func, _ = "(unknown file)", 0, "(unknown function)", None
    with mock.patch.multiple(
        logging, logThreads=False, logProcesses=False, logMultiprocessing=False
    ):
        if hasattr(logging, "logAsyncioTasks"):
            with mock.patch.object(logging, "logAsyncioTasks", False):
                slow = logging.LogRecord(std.name, logging.INFO, fn, lno, "m", (), None, func)
        else:
            slow = logging.LogRecord(std.name, logging.INFO, fn, lno, "m", (), None, func)
    volatile = {"created", "msecs", "relativeCreated"}
    assert {k: v for k, v in vars(record).items() if k not in volatile} == {
        k: v for k, v in vars(slow).items() if k not in volatile
    }
    full = _records.build(capture(0, std, logging.INFO, "m", (), sys._getframe(), None))
    assert full.lineno > 0 and full.threadName == threading.current_thread().name


def test_two_managers_on_one_logger_capture_what_either_prints(tmp_path: Path) -> None:
    with LogManager() as plain, LogManager() as detailed:
        log = plain.get_logger("needs.two")
        log.add(tmp_path / "plain.log", fmt="%(message)s")
        detailed.get_logger("needs.two").add(
            tmp_path / "detailed.log", fmt="%(lineno)d %(threadName)s %(message)s"
        )
        only_aiologship_sinks(log.logger)
        assert direct_sinks(log.logger, logging.WARNING)  # the captured path
        line = _log_here(log, 1)
    assert read_lines(tmp_path / "plain.log") == ["call 1"]
    assert read_lines(tmp_path / "detailed.log") == [f"{line} MainThread call 1"]


class CaptureNeedsModel(RuleBasedStateMachine):
    """Sinks come and go and change their formats (every way a formatter can be
    set); after each change is flushed in, every line written is exactly the
    stdlib's line for the same call."""

    examples = 0

    def __init__(self) -> None:
        super().__init__()
        self.dir: Path | None = None
        self.lm: LogManager | None = None
        self.sinks: dict[int, tuple[Path, str]] = {}  # sink id -> (file, format now)
        self.expected: dict[Path, list[str]] = {}
        self.files = 0
        self.calls = 0

    @initialize()
    def start(self) -> None:
        import tempfile

        self.dir = Path(tempfile.mkdtemp(prefix="aiologship-needs-"))
        self.lm = LogManager()
        # A logger of its own per example: a closed manager's sinks stay on theirs.
        CaptureNeedsModel.examples += 1
        self.name = f"needs.model.{CaptureNeedsModel.examples}"
        self.log = self.lm.get_logger(self.name)
        only_aiologship_sinks(self.log.logger)

    formats = st.lists(
        st.sampled_from(_FIELDS).flatmap(
            lambda f: st.sampled_from(_SPECS.get(f, ["s"])).map(lambda s: f"%({f}){s}")
        ),
        min_size=1,
        max_size=4,
    ).map(" ".join)

    @rule(fmt=formats)
    def add_sink(self, fmt: str) -> None:
        assert self.lm is not None and self.dir is not None
        if len(self.sinks) >= 3:
            return
        self.files += 1
        path = self.dir / f"s{self.files}.log"
        self.lm.flush()
        sink_id = self.log.add(path, fmt=fmt)
        only_aiologship_sinks(self.log.logger)
        self.sinks[sink_id] = (path, fmt)
        self.expected[path] = []

    @rule(data=st.data())
    def remove_sink(self, data: st.DataObject) -> None:
        if not self.sinks:
            return
        sink_id = data.draw(st.sampled_from(sorted(self.sinks)))
        self.log.remove(sink_id)
        del self.sinks[sink_id]

    @rule(data=st.data(), fmt=formats, how=st.sampled_from(["setFormatter", "assign", "subclass"]))
    def change_format(self, data: st.DataObject, fmt: str, how: str) -> None:
        assert self.lm is not None
        if not self.sinks:
            return
        sink_id = data.draw(st.sampled_from(sorted(self.sinks)))
        handler = self.lm._sinks.handler_of(sink_id)
        assert handler is not None
        self.lm.flush()  # records queued under the old format are written with it
        if how == "setFormatter":
            handler.setFormatter(logging.Formatter(fmt))
        elif how == "assign":
            handler.formatter = logging.Formatter(fmt)
        else:

            class Mine(logging.Formatter):
                pass

            handler.setFormatter(Mine(fmt))
        self.sinks[sink_id] = (self.sinks[sink_id][0], fmt)

    @rule()
    def log_a_call(self) -> None:
        self.calls += 1
        line = _log_here(self.log, self.calls)
        for path, fmt in self.sinks.values():
            self.expected[path].append(_expected(fmt, self.name, self.calls, line))

    @invariant()
    def needs_cover_every_format(self) -> None:
        if self.lm is None:
            return
        queue = self.lm._pipeline.queue
        for sink in queue.sinks.values():
            assert sink.needs & ~queue.needs == 0

    def teardown(self) -> None:
        if self.lm is None:
            return
        try:
            self.lm.close()
            for path, lines in self.expected.items():
                if lines:
                    assert read_lines(path) == lines
                else:
                    assert not path.exists() or not read_lines(path)
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)  # one folder per example


TestCaptureNeeds = CaptureNeedsModel.TestCase
TestCaptureNeeds.settings = settings(max_examples=40, stateful_step_count=20, deadline=None)
