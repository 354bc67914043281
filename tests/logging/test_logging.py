"""LogManager, loggers and file sinks: what users see in their files."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from aiologship import ClosedError, ConfigError, Logger, LogManager
from tests.conftest import read_lines

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}"


def test_get_logger_is_stdlib_compatible(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "logs" / "app.log"
    with LogManager() as lm:
        log = lm.get_logger("app")
        assert isinstance(log, Logger)
        assert log.logger is logging.getLogger("app")
        log.add(path)
        assert log.isEnabledFor(logging.INFO) and not log.isEnabledFor(logging.DEBUG)
        log.debug("hidden")
        log.info("hello %s", "world")
        log.warning("careful", extra={"user": "ann"})
    lines = read_lines(path)
    assert len(lines) == 2
    assert re.fullmatch(ISO + r"Z INFO app: hello world", lines[0])
    assert lines[1].endswith("WARNING app: careful")
    # Records also reach stdlib handlers and pytest's caplog.
    assert [r.getMessage() for r in caplog.records if r.name == "app"] == ["hello world", "careful"]
    assert caplog.records[-1].user == "ann"  # type: ignore[attr-defined]


def test_timezone_offset_in_text_and_json(tmp_path: Path) -> None:
    with LogManager(timezone="Asia/Singapore") as lm:
        log = lm.get_logger("tz")
        log.add(tmp_path / "a.log")
        log.add(tmp_path / "a.json", json=True)
        log.info("x")
    assert re.match(ISO + r"\+08:00 INFO tz: x$", read_lines(tmp_path / "a.log")[0])
    record = json.loads(read_lines(tmp_path / "a.json")[0])
    assert re.fullmatch(ISO + r"\+08:00", record["timestamp"])


def test_json_fields_extra_and_exception(tmp_path: Path) -> None:
    path = tmp_path / "app.json"
    with LogManager(format="json") as lm:
        log = lm.get_logger("svc")
        log.add(path)
        log.info("request done", extra={"request_id": "r-7", "status": 200})
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            log.exception("failed")
    first, second = (json.loads(line) for line in read_lines(path))
    assert (
        first["level"] == "INFO" and first["logger"] == "svc" and first["message"] == "request done"
    )
    assert first["request_id"] == "r-7" and first["status"] == 200
    assert "ZeroDivisionError" in second["exc_info"] and second["level"] == "ERROR"


def test_json_extra_never_replaces_the_record_fields(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "clash.json"
    with LogManager(format="json") as lm:
        log = lm.get_logger("clash")
        log.add(path)
        log = route(log)
        clashing = {"level": "fake", "logger": "other", "timestamp": "then", "user": "ann"}
        log.warning("real", extra={**clashing, "extra_level": "taken"})
        log.info({"level": "dict", "n": 1})  # a dict message merges its keys too
    first, second = (json.loads(line) for line in read_lines(path))
    assert list(first)[:4] == ["timestamp", "level", "logger", "message"]
    assert re.fullmatch(ISO + "Z", first["timestamp"])
    assert (first["level"], first["logger"], first["message"]) == ("WARNING", "clash", "real")
    # The clashing values are kept under a prefixed key; a key already taken by the
    # caller keeps its value and the clash takes the next prefix.
    assert first["extra_logger"] == "other" and first["extra_timestamp"] == "then"
    assert first["extra_level"] == "taken" and first["extra_extra_level"] == "fake"
    assert first["user"] == "ann"
    assert (second["level"], second["extra_level"], second["n"]) == ("INFO", "dict", 1)


def test_exception_and_stack_text_in_text_sink(tmp_path: Path) -> None:
    path = tmp_path / "e.log"
    with LogManager() as lm:
        log = lm.get_logger("e")
        log.add(path)
        try:
            raise KeyError("k")
        except KeyError:
            log.error("lookup failed", exc_info=True)
        log.info("where", stack_info=True)
    text = path.read_text()
    assert "Traceback (most recent call last):" in text and "KeyError: 'k'" in text
    assert "Stack (most recent call last):" in text


def test_sink_level_and_format(tmp_path: Path, route: Any) -> None:
    with LogManager(level="DEBUG") as lm:
        log = lm.get_logger("lv")
        log.add(tmp_path / "all.log", fmt="%(levelname)s|%(message)s")
        log.add(tmp_path / "errors.log", level="ERROR", fmt="%(message)s")
        log = route(log)
        log.debug("d")
        log.error("e")
    assert read_lines(tmp_path / "all.log") == ["DEBUG|d", "ERROR|e"]
    assert read_lines(tmp_path / "errors.log") == ["e"]


def test_remove_detaches_after_writing_pending(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "r.log"
    with LogManager() as lm:
        log = lm.get_logger("rm")
        sink = log.add(path, fmt="%(message)s")
        log = route(log)
        for i in range(1000):
            log.info("%d", i)
        log.remove(sink)
        log.info("after remove")
        with pytest.raises(ConfigError, match="no such sink"):
            log.remove(sink)
    assert read_lines(path) == [str(i) for i in range(1000)]


def test_mutable_arguments_are_rendered_at_call_time(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "m.log"
    with LogManager() as lm:
        log = lm.get_logger("mut")
        log.add(path, fmt="%(message)s")
        log = route(log)
        items = [1]
        log.info("items=%s", items)
        items.append(2)
    assert read_lines(path) == ["items=[1]"]


def test_size_rotation_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "rot" / "app.log"
    with LogManager() as lm:
        log = lm.get_logger("rot")
        log.add(path, fmt="%(message)s", rotation=1000, retention=2)
        for i in range(300):
            log.info("line %05d", i)  # 11 bytes per line
    # Hidden: the lock that rotating writers of the file share (see FileWriter).
    assert (path.parent / ".app.log.lock").exists()
    files = sorted(p for p in path.parent.iterdir() if not p.name.startswith("."))
    rotated = [p for p in files if p != path]
    assert len(rotated) == 2  # retention
    for p in files:
        assert p.stat().st_size <= 1000
    # The newest lines survive in order across the kept files.
    kept = [line for p in sorted(rotated) for line in read_lines(p)] + read_lines(path)
    assert kept == [f"line {i:05d}" for i in range(300 - len(kept), 300)]


def test_time_rotation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aiologship._logging._writers as sinks

    now = [1_700_000_000.0]
    monkeypatch.setattr(sinks.time, "time", lambda: now[0])
    path = tmp_path / "t.log"
    with LogManager() as lm:
        log = lm.get_logger("trot")
        log.add(path, fmt="%(message)s", rotation="1 hour")
        log.info("first")
        lm.flush()
        now[0] += 3600
        log.info("second")
    rotated = [p for p in tmp_path.iterdir() if p.name.startswith("t.log.")]
    assert len(rotated) == 1
    assert read_lines(rotated[0]) == ["first"]
    assert read_lines(path) == ["second"]


def test_unwritable_sink_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with LogManager() as lm:
        log = lm.get_logger("bad")
        with pytest.raises(ConfigError) as info:
            log.add(blocker / "app.log")
        assert info.value.value == str(blocker / "app.log")
        with pytest.raises(ConfigError, match="is a directory"):
            log.add(tmp_path)
        with pytest.raises(ConfigError, match="rotation"):
            log.add(tmp_path / "x.log", rotation="-1 MB")


def test_bad_config_loses_nothing_already_logged(tmp_path: Path) -> None:
    path = tmp_path / "keep.log"
    with LogManager() as lm:
        log = lm.get_logger("keep")
        log.add(path, fmt="%(message)s")
        log.info("before")
        with pytest.raises(ConfigError):
            log.add(path, rotation="10 MB")  # one file, one rotation policy
        log.info("after")
    assert read_lines(path) == ["before", "after"]


def test_close_is_idempotent_and_late_records_are_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, route: Any
) -> None:
    path = tmp_path / "late.log"
    lm = LogManager()
    log = lm.get_logger("late")
    log.add(path, fmt="%(message)s")
    log = route(log)
    log.info("on time")
    lm.close()
    lm.close()
    assert lm.closed
    log.info("late one")
    log.info("late two")
    assert read_lines(path) == ["on time", "late one", "late two"]
    warnings = [r for r in caplog.records if "after LogManager.close()" in r.getMessage()]
    assert len(warnings) == 1
    assert lm.stats().after_close == 2
    with pytest.raises(ClosedError):
        log.add(tmp_path / "other.log")


async def test_async_context_manager(tmp_path: Path) -> None:
    path = tmp_path / "async.log"
    async with LogManager() as lm:
        log = lm.get_logger("async")
        log.add(path, fmt="%(message)s")
        log.info("inside")
        assert await lm.aflush(timeout=10)
        assert read_lines(path) == ["inside"]
    assert lm.closed


def test_yaml_config_sinks_attach_to_their_logger(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        f"level: DEBUG\nformat: json\nsinks:\n  - path: {tmp_path}/svc.log\n    logger: svc\n",
        encoding="utf-8",
    )
    with LogManager(config_path=config) as lm:
        lm.get_logger("svc").debug("dbg")
        lm.get_logger("other").info("elsewhere")
    (line,) = read_lines(tmp_path / "svc.log")
    assert json.loads(line)["message"] == "dbg"


def test_stats_count_accepted_and_written(tmp_path: Path, route: Any) -> None:
    with LogManager() as lm:
        log = lm.get_logger("stats")
        log.add(tmp_path / "s.log")
        log = route(log)
        for _ in range(500):
            log.info("x")
        assert lm.flush(timeout=10)
        stats = lm.stats()
    assert stats.accepted == stats.written == 500
    assert stats.dropped == stats.queued == stats.write_errors == 0


def test_two_sinks_one_path_share_one_file(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "shared.log"
    with LogManager() as lm:
        a, b = lm.get_logger("a"), lm.get_logger("b")
        a.add(path, fmt="%(name)s %(message)s")
        b.add(path, fmt="%(name)s %(message)s")
        a, b = route(a), route(b)
        for i in range(100):
            a.info("%d", i)
            b.info("%d", i)
    expected = [f"{n} {i}" for i in range(100) for n in ("a", "b")]
    assert read_lines(path) == expected


def test_no_handler_left_running_after_close(tmp_path: Path) -> None:
    with LogManager() as lm:
        lm.get_logger("t").add(tmp_path / "t.log")
        thread = lm._runtime._thread
        assert thread is not None and thread.is_alive()
    assert not thread.is_alive()
