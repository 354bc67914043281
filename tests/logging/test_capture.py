"""Whole-process mode: ``LogManager(capture=...)`` replaces plain StreamHandlers by
stream sinks for its lifetime, and puts back exactly what was there."""

from __future__ import annotations

import io
import json
import logging
import logging.config
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiologship import ConfigError, LogManager
from aiologship._logging._queue import SinkHandler, direct_sinks

WAIT = 30.0


@pytest.fixture(autouse=True)
def clean_logging() -> Iterator[None]:
    """Whatever a test does to the root logger and its own loggers is undone."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name in list(logging.Logger.manager.loggerDict):
            if name.startswith("capt"):
                lg = logging.getLogger(name)
                lg.handlers.clear()
                lg.propagate = True
                lg.setLevel(logging.NOTSET)


class Colorless(logging.StreamHandler):  # type: ignore[type-arg]
    """A subclass that changes emit: never replaced."""

    def emit(self, record: logging.LogRecord) -> None:
        super().emit(record)


def test_root_stream_handler_is_replaced_and_restored() -> None:
    root = logging.getLogger()
    out = io.StringIO()
    stream_handler = logging.StreamHandler(out)
    stream_handler.setFormatter(logging.Formatter("ROOT %(levelname)s %(name)s %(message)s"))
    stream_handler.setLevel(logging.INFO)
    root.addHandler(stream_handler)
    before = list(root.handlers)
    with LogManager(capture="root") as lm:
        (replacement,) = [h for h in root.handlers if isinstance(h, SinkHandler)]
        assert stream_handler not in root.handlers
        assert root.handlers.index(replacement) == before.index(stream_handler)
        assert replacement.level == logging.INFO
        log = lm.get_logger("capt.app")
        log.info("through the queue %d", 1)
        log.debug("below the handler's level")
        logging.getLogger("capt.lib").warning("a library's record")
        assert lm.flush(timeout=WAIT)
        assert out.getvalue() == (
            "ROOT INFO capt.app through the queue 1\nROOT WARNING capt.lib a library's record\n"
        )
    assert root.handlers == before  # the same objects, in the same order
    logging.getLogger("capt.app").warning("after close: the original handler again")
    assert out.getvalue().endswith("WARNING capt.app after close: the original handler again\n")


def test_json_format_applies_to_the_replacements() -> None:
    out = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(out))
    with LogManager(capture="root", format="json") as lm:
        lm.get_logger("capt.json").info("one", extra={"k": 1})
    (line,) = out.getvalue().splitlines()
    data = json.loads(line)
    assert (data["message"], data["k"]) == ("one", 1)


def test_the_fast_path_applies_once_every_handler_is_ours(tmp_path: Path) -> None:
    root = logging.getLogger()
    foreign = [h for h in root.handlers]  # pytest's own capture handlers, if any
    root.handlers[:] = [logging.StreamHandler(io.StringIO())]
    with LogManager(capture="root") as lm:
        log = lm.get_logger("capt.fast")
        assert direct_sinks(log.logger, logging.INFO) == root.handlers
        other = logging.FileHandler(tmp_path / "f.log")
        root.addHandler(other)  # a foreign handler up the chain: stdlib path
        try:
            assert direct_sinks(log.logger, logging.INFO) is None
        finally:
            root.removeHandler(other)
            other.close()
    root.handlers[:] = foreign


def test_only_plain_stream_handlers_are_replaced(tmp_path: Path) -> None:
    root = logging.getLogger()
    file_handler = logging.FileHandler(tmp_path / "f.log")
    odd = Colorless(io.StringIO())
    no_newline = logging.StreamHandler(io.StringIO())
    no_newline.terminator = ""
    closed_stream = io.StringIO()
    closed = logging.StreamHandler(closed_stream)
    closed_stream.close()
    mine = [file_handler, odd, no_newline, closed]
    for h in mine:
        root.addHandler(h)
    before = list(root.handlers)
    try:
        with LogManager(capture="root"):
            assert all(h in root.handlers for h in mine)
        assert root.handlers == before
    finally:
        file_handler.close()


def test_capture_all_replaces_other_loggers_handlers_too() -> None:
    # uvicorn's shape: its own StreamHandler, propagate False.
    out = io.StringIO()
    access = logging.getLogger("capt.access")
    access.propagate = False
    access.setLevel(logging.INFO)
    original = logging.StreamHandler(out)
    access.addHandler(original)
    with LogManager(capture="root") as lm:
        assert access.handlers == [original]  # "root" leaves it alone
    with LogManager(capture="all") as lm:
        assert isinstance(access.handlers[0], SinkHandler)
        access.info("GET / 200")
        assert lm.flush(timeout=WAIT)
    assert access.handlers == [original]
    # No formatter of its own: the manager's text format.
    assert out.getvalue().endswith(" INFO capt.access: GET / 200\n")


def test_filters_move_with_the_stream() -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(lambda record: "secret" not in record.getMessage())
    logging.getLogger().addHandler(handler)
    with LogManager(capture="root") as lm:
        log = lm.get_logger("capt.filter")
        log.warning("public")
        log.warning("secret")
    assert out.getvalue().endswith("capt.filter: public\n") and "secret" not in out.getvalue()


def test_a_failed_start_restores_the_handlers() -> None:
    root = logging.getLogger()
    handler = logging.StreamHandler(io.StringIO())
    root.addHandler(handler)
    before = list(root.handlers)
    bad_copy = {"copy_name": "x", "path_patterns": ["*.log"], "hdfs_destination": "nope://x"}
    with pytest.raises(ConfigError):
        LogManager(capture="root", copies=[bad_copy])
    assert root.handlers == before


def test_a_replacement_removed_by_dictconfig_is_not_undone() -> None:
    out = io.StringIO()
    root = logging.getLogger()
    root.addHandler(logging.StreamHandler(out))
    with LogManager(capture="root"):
        logging.config.dictConfig({"version": 1, "incremental": False, "root": {"handlers": []}})
        after_config = list(root.handlers)
    assert root.handlers == after_config  # the application's new configuration stands


def test_bad_capture_value() -> None:
    with pytest.raises(ConfigError) as info:
        LogManager(capture="everything")
    assert info.value.key == "capture" and "none, root, all" in info.value.reason


KINDS = st.sampled_from(["stream", "file", "odd", "null"])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(kinds=st.lists(KINDS, max_size=6), mode=st.sampled_from(["root", "all"]))
def test_restore_is_exact_for_any_handler_list(tmp_path: Path, kinds: list[str], mode: str) -> None:
    root = logging.getLogger()
    sub = logging.getLogger("capt.sub")
    made: list[logging.Handler] = []
    for i, kind in enumerate(kinds):
        if kind == "stream":
            h: logging.Handler = logging.StreamHandler(io.StringIO())
        elif kind == "file":
            h = logging.FileHandler(tmp_path / f"{i}.log", delay=True)
        elif kind == "odd":
            h = Colorless(io.StringIO())
        else:
            h = logging.NullHandler()
        made.append(h)
        (root if i % 2 else sub).addHandler(h)
    before = (list(root.handlers), list(sub.handlers))
    try:
        with LogManager(capture=mode) as lm:
            replaced = {h for h in made if h not in root.handlers and h not in sub.handlers}
            expected = {
                h for i, h in enumerate(made)
                if kinds[i] == "stream" and (mode == "all" or i % 2)
            }  # fmt: skip
            assert replaced == expected
            sub.warning("through")
            assert lm.flush(timeout=WAIT)
        assert (root.handlers, sub.handlers) == before
    finally:
        for h in made:
            root.removeHandler(h)
            sub.removeHandler(h)
            h.close()


def test_capture_from_yaml_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("capture: root\nformat: json\n")
    handler = logging.StreamHandler(io.StringIO())
    logging.getLogger().addHandler(handler)
    with LogManager(config_path=config) as lm:
        assert lm.config.capture == "root" and handler not in logging.getLogger().handlers
    monkeypatch.setenv("AIOLOGSHIP_CAPTURE", "none")  # the environment wins over YAML
    with LogManager(config_path=config) as lm:
        assert lm.config.capture == "none" and handler in logging.getLogger().handlers
