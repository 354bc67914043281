"""Context fields on records, end to end: files written by a real LogManager, on
both routes a call takes (``route``: the captured flat tuple and the stdlib
record), plain stdlib loggers through ``AsyncFileHandler``, caplog and the
testing helpers."""

from __future__ import annotations

import asyncio
import json
import logging
import logging.config
import sys
import threading
from datetime import UTC, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pythonjsonlogger.json import JsonFormatter as _PjlJsonFormatter

import aiologship
from aiologship import ConfigError, LogManager
from aiologship._logging._context import Pairs, add_source, remove_source
from aiologship._logging._formatting import JsonFormatter, TextFormatter
from aiologship._logging._queue import direct_sinks
from aiologship._logging._records import RESERVED, build, capture
from aiologship.testing import assert_fields, capture_logs
from tests.conftest import only_aiologship_sinks, read_lines

pytestmark = pytest.mark.usefixtures("clean_context")


def _json_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def test_fields_are_top_level_json_keys_with_their_precedence(tmp_path: Path, route: Any) -> None:
    def source() -> Pairs:
        return (("ray_job_id", "01000000"), ("layer", "source"))

    path = tmp_path / "app.json"
    add_source(source)
    try:
        with LogManager(format="json") as lm:
            log = lm.get_logger("ctx")
            log.add(path)
            log = route(log)
            with aiologship.context(request_id="r-1", layer="context"):
                log.info("a")
                bound = log.bind(layer="bind", user="ann")
                bound.info("b")
                bound.info("c", extra={"layer": "extra"})
            log.info("d")
    finally:
        remove_source(source)
    a, b, c, d = _json_lines(path)
    assert (a["request_id"], a["layer"], a["ray_job_id"]) == ("r-1", "context", "01000000")
    assert (b["layer"], b["user"], b["request_id"]) == ("bind", "ann", "r-1")
    assert c["layer"] == "extra"
    assert "request_id" not in d and d["layer"] == "source"


def test_bind_returns_a_new_logger_over_the_same_stdlib_logger(tmp_path: Path) -> None:
    with LogManager() as lm:
        log = lm.get_logger("bound")
        bound = log.bind(user="ann").bind(step=1)
        assert bound is not log and bound.logger is log.logger
        assert "user='ann' step=1" in repr(bound)
        sink = bound.add(tmp_path / "b.log", fmt="%(message)s %(user)s %(step)s")
        log.info("plain")  # the unbound logger: same sink, no fields
        bound.info("fixed")
        bound.remove(sink)
        bound.info("after remove")
    assert read_lines(tmp_path / "b.log") == ["plain - -", "fixed ann 1"]
    with pytest.raises(ConfigError, match="invalid context field='levelname'"):
        log.bind(levelname="x")


def test_fields_reach_records_made_by_the_stdlib_itself(tmp_path: Path) -> None:
    # stack_info / stacklevel / a custom record factory: logging.Logger._log makes
    # the record, with the merged fields as its extra=.
    path = tmp_path / "std.json"
    factory = logging.getLogRecordFactory()
    with LogManager(format="json") as lm:
        log = lm.get_logger("stdpath").bind(user="ann")
        log.add(path)
        with aiologship.context(request_id="r-6"):
            log.info("stack", stack_info=True)
            log.info("level", stacklevel=2, extra={"n": [1]})
            logging.setLogRecordFactory(lambda *a, **k: factory(*a, **k))
            try:
                log.info("factory")
            finally:
                logging.setLogRecordFactory(factory)
    lines = _json_lines(path)
    assert [line["message"] for line in lines] == ["stack", "level", "factory"]
    for line in lines:
        assert (line["request_id"], line["user"]) == ("r-6", "ann")
    assert "stack_info" in lines[0] and lines[1]["n"] == [1]


def test_text_format_prints_a_missing_field_as_a_dash(tmp_path: Path, route: Any) -> None:
    with LogManager() as lm:
        log = lm.get_logger("txt")
        log.add(tmp_path / "t.log", fmt="%(message)s rid=%(request_id)s n=%(count)05d")
        log = route(log)
        log.info("none")
        with aiologship.context(request_id="r-1", count=7):
            log.info("both")
        with aiologship.context(count=3):
            log.info("count only")
    assert lm.stats().write_errors == 0
    assert read_lines(tmp_path / "t.log") == [
        "none rid=- n=-",
        "both rid=r-1 n=00007",
        "count only rid=- n=00003",
    ]


def test_a_dictconfig_formatter_missing_a_field_loses_no_record(tmp_path: Path) -> None:
    path = tmp_path / "dict.log"
    with LogManager() as lm:
        logging.config.dictConfig(
            {
                "version": 1,
                "disable_existing_loggers": False,
                "formatters": {"plain": {"format": "%(name)s|%(request_id)s|%(message)s"}},
                "handlers": {
                    "file": {
                        "()": "aiologship.AsyncFileHandler",
                        "filename": str(path),
                        "formatter": "plain",
                        "manager": lm,
                    }
                },
                "loggers": {"uvicorn.error": {"handlers": ["file"], "level": "INFO"}},
            }
        )
        std = logging.getLogger("uvicorn.error")
        std.info("outside")
        with aiologship.context(request_id="r-5"):
            std.info("inside %s", "a request")
    assert lm.stats().write_errors == 0
    assert read_lines(path) == [
        "uvicorn.error|-|outside",
        "uvicorn.error|r-5|inside a request",
    ]


def test_a_dash_printed_for_one_sink_never_reaches_another(tmp_path: Path) -> None:
    # One record, queued for two sinks: a stdlib formatter naming request_id, then
    # a JSON sink. The "-" of the first must not become a field of the second.
    with LogManager() as lm:
        std = logging.getLogger("two.sinks")
        std.propagate = False
        std.setLevel(logging.INFO)
        text = aiologship.AsyncFileHandler(tmp_path / "t.log", manager=lm)
        text.setFormatter(logging.Formatter("%(request_id)s|%(message)s"))
        std.addHandler(text)
        std.addHandler(aiologship.AsyncFileHandler(tmp_path / "j.json", json=True, manager=lm))
        std.info("no context")
    assert read_lines(tmp_path / "t.log") == ["-|no context"]
    (line,) = _json_lines(tmp_path / "j.json")
    assert "request_id" not in line


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True),
    bound=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 99)),
    numeric=st.booleans(),
)
def test_text_missing_field_rule(names: list[str], bound: dict[str, int], numeric: bool) -> None:
    """Any text format over any subset of bound fields: never an error, each bound
    field as the format says, each missing one as "-" (with a numeric conversion
    in the format and a field missing, the bound ones print with %s)."""
    spec = "d" if numeric else "s"
    fmt = "%(message)s " + " ".join(f"{n}=%({n}){spec}" for n in names)
    formatter = TextFormatter(fmt, tz=UTC)
    std = logging.getLogger("text.rule")
    item = capture(0, std, logging.INFO, "m", (), sys._getframe(0), tuple(bound.items()) or None)
    line = formatter.format(build(item))
    expected = "m " + " ".join(f"{n}={bound.get(n, '-')}" for n in names)
    assert line == expected


def test_plain_stdlib_records_get_the_context_but_keep_their_own_extra(tmp_path: Path) -> None:
    path = tmp_path / "std.json"
    with LogManager() as lm:
        handler = aiologship.AsyncFileHandler(path, json=True, manager=lm)
        std = logging.getLogger("lib")
        std.addHandler(handler)
        std.setLevel(logging.INFO)
        with aiologship.context(request_id="r-3", user="ann"):
            std.info("x", extra={"user": "own"})
        std.info("y")
        std.removeHandler(handler)
    x, y = _json_lines(path)
    assert (x["request_id"], x["user"]) == ("r-3", "own")
    assert "request_id" not in y


@pytest.mark.parametrize("kind", ["bound", "extra", "logger-bind"])
def test_mutable_values_are_snapshotted_at_the_call(tmp_path: Path, route: Any, kind: str) -> None:
    # The pump formats later, on its own thread: a mutation right after each call
    # would show in the lines of the records still queued, unless the call copied.
    path = tmp_path / "m.json"
    payload: dict[str, Any] = {"i": 0, "seen": []}
    with LogManager(format="json") as lm:
        log = lm.get_logger("mut")
        log.add(path)
        log = route(log)
        bound_log = log.bind(payload=payload)  # bound once, snapshotted at each call
        for i in range(500):
            if kind == "logger-bind":
                bound_log.info("n=%d", i)
            elif kind == "bound":
                with aiologship.context(payload=payload):
                    log.info("n=%d", i)
            else:
                log.info("n=%d", i, extra={"payload": payload})
            payload["i"] = i + 1
            payload["seen"].append(i)
    lines = _json_lines(path)
    assert len(lines) == 500
    for i, line in enumerate(lines):
        assert line["message"] == f"n={i}"
        assert line["payload"] == {"i": i, "seen": list(range(i))}


def test_a_mutable_extra_value_on_a_plain_stdlib_logger_is_snapshotted(tmp_path: Path) -> None:
    path = tmp_path / "std.json"
    payload: list[int] = []
    with LogManager() as lm:
        handler = aiologship.AsyncFileHandler(path, json=True, manager=lm)
        std = logging.getLogger("lib.mut")
        std.propagate = False
        std.addHandler(handler)
        std.setLevel(logging.INFO)
        for i in range(1000):
            std.info("n=%d", i, extra={"payload": payload})
            payload.append(i)
    assert [line["payload"] for line in _json_lines(path)] == [list(range(i)) for i in range(1000)]


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no str")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Plain:
    __slots__ = ()

    def __repr__(self) -> str:
        return "<Plain>"


def test_json_writes_unserializable_values_as_their_repr(tmp_path: Path, route: Any) -> None:
    circular: list[Any] = [1]
    circular.append(circular)
    with LogManager(format="json") as lm:
        log = lm.get_logger("js")
        log.add(tmp_path / "j.json")
        log = route(log)
        with aiologship.context(obj=_Plain(), bad=_Unprintable()):
            log.info("objects", extra={"circular": circular, "tuple_keys": {(1, 2): "v"}})
    assert lm.stats().write_errors == 0
    (line,) = _json_lines(tmp_path / "j.json")
    assert line["message"] == "objects"
    assert line["obj"] == "<Plain>"
    assert line["bad"] == "<unrepresentable _Unprintable>"
    assert line["circular"] == "[1, [...]]"
    assert line["tuple_keys"] == "{(1, 2): 'v'}"


def test_reserved_extra_keys_still_raise_like_the_stdlib(tmp_path: Path) -> None:
    with LogManager() as lm:
        log = lm.get_logger("res")
        log.add(tmp_path / "r.log")
        with aiologship.context(request_id="r"), pytest.raises(KeyError, match="'msg'"):
            log.info("x", extra={"msg": "y"})


def test_caplog_and_log_records_see_the_fields(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, log_records: list[dict[str, Any]]
) -> None:
    with LogManager() as lm:
        log = lm.get_logger("seen")
        log.add(tmp_path / "s.log")
        with aiologship.context(request_id="r-8"):
            log.bind(user="ann").info("ours")
            logging.getLogger("theirs").warning("plain stdlib")
    ours = [r for r in caplog.records if r.name == "seen"]
    assert [(r.request_id, r.user) for r in ours] == [("r-8", "ann")]  # type: ignore[attr-defined]
    assert_fields(log_records, request_id="r-8")
    assert_fields(log_records, logger="seen", user="ann")
    with pytest.raises(AssertionError, match="1 of 2 records do not carry"):
        assert_fields(log_records, user="ann")
    with pytest.raises(AssertionError, match="no records of logger 'none'"):
        assert_fields(log_records, logger="none", request_id="r-8")


def test_capture_logs_shows_context_fields() -> None:
    std = logging.getLogger("cap")
    std.setLevel(logging.INFO)
    with capture_logs("cap") as records, aiologship.context(request_id="r-4"):
        std.info("hello", extra={"user": "ann"})
    assert records == [
        {"logger": "cap", "level": "INFO", "message": "hello", "user": "ann", "request_id": "r-4"}
    ]


# ----------------------------------------------------------------- concurrency

N_TASKS = 1000


async def _request(log: Any, std: logging.Logger, rid: str) -> None:
    """One request: binds its id, logs across awaits, task-group children and
    thread hand-offs, through aiologship.Logger and a plain stdlib logger."""
    aiologship.bind_context(request_id=rid)
    log.info("start %s", rid)
    await asyncio.sleep(0)
    async with anyio.create_task_group() as tg:
        for child in range(2):
            tg.start_soon(_child, log, rid, child)
    await anyio.to_thread.run_sync(log.info, "thread %s", rid)
    await asyncio.get_running_loop().run_in_executor(None, _in_executor, std, rid)
    with aiologship.context(step="end"):
        await asyncio.sleep(0)
        std.info("stdlib end %s", rid)
        log.info("end %s", rid)


def _in_executor(std: logging.Logger, rid: str) -> None:
    # run_in_executor does not copy the context: the thread sees none of it.
    std.info("executor %s", rid)


async def _child(log: Any, rid: str, child: int) -> None:
    await asyncio.sleep(0)
    log.info("child%d %s", child, rid)


@pytest.mark.parametrize("lib_route", ["captured", "record"])
async def test_a_thousand_concurrent_requests_each_see_only_their_own_id(
    tmp_path: Path, lib_route: str
) -> None:
    path = tmp_path / "many.json"
    async with LogManager(format="json") as lm:
        log = lm.get_logger("many")
        log.add(path)
        std = logging.getLogger("many.lib")
        if lib_route == "captured":
            only_aiologship_sinks(log.logger)
            assert direct_sinks(log.logger, logging.INFO)
        else:
            assert direct_sinks(log.logger, logging.INFO) is None
        await asyncio.gather(*(_request(log, std, f"r-{i}") for i in range(N_TASKS)))
    lines = _json_lines(path)
    assert len(lines) == N_TASKS * 7
    per_request: dict[str, int] = {}
    for line in lines:
        rid = line["message"].rsplit(" ", 1)[1]
        if line["message"].startswith("executor"):
            assert "request_id" not in line  # no copied context, nothing leaks in
            continue
        assert line["request_id"] == rid, line
        assert (line.get("step") == "end") == ("end" in line["message"].split()), line
        per_request[rid] = per_request.get(rid, 0) + 1
    assert per_request == {f"r-{i}": 6 for i in range(N_TASKS)}


def test_threads_do_not_share_a_binding(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "threads.json"
    barrier = threading.Barrier(8, timeout=30)

    def worker(n: int, log: Any) -> None:
        aiologship.bind_context(worker=n)
        barrier.wait()  # every thread has bound before any logs
        for i in range(200):
            log.info("w%d i%d", n, i)

    with LogManager(format="json") as lm:
        log = lm.get_logger("threads")
        log.add(path)
        log = route(log)
        threads = [threading.Thread(target=worker, args=(n, log)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
    lines = _json_lines(path)
    assert len(lines) == 1600
    for line in lines:
        assert line["message"].startswith(f"w{line['worker']} ")


# ----------------------------------------------------------------- JSON paths agree

field_names = st.one_of(
    st.sampled_from(["request_id", "user", "_private", "timestamp", "level", "logger", "n"]),
    st.text(min_size=1, max_size=8),
).filter(lambda k: k not in RESERVED)
field_values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)
)


@settings(max_examples=300, deadline=None)
@given(
    msg=st.sampled_from(["plain", "a %s b %d", "%s%%", "ünï %s", "%d"]),
    args=st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=2),
    level=st.sampled_from([10, 20, 25, 30, 40, 50]),
    fields=st.lists(st.tuples(field_names, field_values), max_size=5),
    created=st.floats(min_value=0, max_value=4e9),
)
def test_json_line_is_the_same_on_every_path(
    msg: str, args: list[Any], level: int, fields: list[tuple[str, Any]], created: float
) -> None:
    """The captured fast path (no LogRecord), our one-pass ``format`` and
    python-json-logger's own ``format`` write the same line, or the fast path
    declines (None) and the pump takes the record path."""
    formatter = JsonFormatter(tz=UTC)
    std = logging.getLogger("json.paths")
    item = capture(0, std, level, msg, tuple(args), sys._getframe(0), tuple(fields) or None)
    item = (*item[:5], created, *item[6:])

    def reference() -> str | None:
        try:
            return str(_PjlJsonFormatter.format(formatter, build(item)))
        except (TypeError, ValueError):
            return None  # the message does not format: handleError's business

    expected = reference()
    if expected is not None:
        assert formatter.format(build(item)) == expected
    fast = formatter.format_captured(item)
    if fast is not None:
        assert fast == expected
    clash = any(key in ("timestamp", "level", "logger") for key, _ in fields)
    assert (fast is None) == (clash or expected is None)


# ----------------------------------------------------------------- text paths agree

record_fields = st.sampled_from(
    [
        "asctime", "levelname", "name", "message", "levelno", "lineno", "funcName",
        "filename", "module", "pathname", "created", "msecs", "relativeCreated",
        "thread", "threadName", "process", "processName", "msg", "args", "exc_text",
        "request_id", "user",
    ]
)  # fmt: skip
specs = st.sampled_from(["s", "r", "d", "5s", "-8s", "03d", ".2f", "x", "*d", "E"])
# Braces, quotes, backslashes and a newline: the compiled format of bare %s
# fields is an f-string, which must print them as they are.
separators = st.sampled_from(
    [
        " ", ": ", " | ", "%%", " [", "] ", "", "%s", "%",
        "{", "}}", "{v0!s}", "\\", "'", '"', "\n", "é",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(
    parts=st.lists(st.tuples(separators, record_fields, specs), min_size=0, max_size=5),
    tail=separators,
    msg=st.sampled_from(["plain", "a %s b %d", "%s%%", "ünï %s", "%d", "100%"]),
    args=st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=2),
    level=st.sampled_from([10, 20, 25, 30, 40, 50]),
    fields=st.lists(
        st.tuples(st.sampled_from(["request_id", "user", "other"]), field_values), max_size=3
    ),
    created=st.floats(min_value=0, max_value=4e9),
    tz=st.sampled_from(
        [UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-3, minutes=-30))]
    ),
)
def test_text_line_is_the_same_on_both_paths(
    parts: list[tuple[str, str, str]],
    tail: str,
    msg: str,
    args: list[Any],
    level: int,
    fields: list[tuple[str, Any]],
    created: float,
    tz: Any,
) -> None:
    """The compiled text format (no LogRecord) writes the line ``format`` writes
    from the built record, or declines (None) and the pump takes the record path."""
    fmt = "".join(f"{sep}%({field}){spec}" for sep, field, spec in parts) + tail
    try:
        formatter = TextFormatter(fmt or None, tz=tz)
    except ValueError:
        return  # logging refuses the format itself (no field): nothing to compare
    std = logging.getLogger("text.paths")
    item = capture(0, std, level, msg, tuple(args), sys._getframe(0), tuple(fields) or None)
    item = (*item[:5], created, *item[6:])
    try:
        expected: str | None = formatter.format(build(item))
    except (TypeError, ValueError, KeyError, ArithmeticError):  # "%d" of inf: OverflowError
        expected = None  # the record path reports it (handleError)
    fast = formatter.format_captured(item)
    if fast is not None:
        assert fast == expected


@pytest.mark.parametrize(
    "fmt",
    [
        "%(name)s %% 100%% %(message)s",
        "{%(name)s} {{x}} }{ {v0!s} %(message)s",
        "%(levelname)s \\ ' \" \n é\t%(message)s",
        "%(asctime)s%(asctime)s|%(request_id)s|%(lineno)s",
    ],
)
def test_compiled_plain_formats_print_their_literal_text_as_is(fmt: str) -> None:
    """Formats whose fields are all bare ``%s`` compile to an f-string: ``%%``,
    braces, quotes and backslashes around the fields come out as ``format``
    prints them, and the format is compiled (not declined)."""
    formatter = TextFormatter(fmt, tz=UTC)
    std = logging.getLogger("text.literal")
    item = capture(0, std, 20, "m %s", ("a",), sys._getframe(0), (("request_id", "r-1"),))
    fast = formatter.format_captured(item)
    assert fast is not None
    assert fast == formatter.format(build(item))
