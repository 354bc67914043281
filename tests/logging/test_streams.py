"""Stream sinks on real pipes and PTYs: a stalled reader never stalls the logging
process's event loop, every record arrives once and in order, colours only on a
terminal, and bad streams are refused at ``add`` without losing what was queued."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologship import ConfigError, LogManager
from aiologship._config import Overflow
from aiologship._logging._console import ColorFormatter, wants_color
from aiologship._logging._streams import StreamWriter

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CHILD = HERE / "_stream_child.py"
WAIT = 60.0  # every wait below is bounded by this


def child_env(**extra: str) -> dict[str, str]:
    drop = ("NO_COLOR", "FORCE_COLOR", "TERM", "PYTHONUNBUFFERED")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env.update(PYTHONPATH=str(ROOT), TERM="xterm-256color", **extra)
    return env


class StderrLines:
    """The child's stderr, line by line, read by a thread (the test never blocks on it)."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        assert proc.stderr is not None
        self._stderr = proc.stderr
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self._stderr:
            for line in self._stderr:
                self.lines.put(line.decode("utf-8", "replace"))
        self.lines.put("")

    def expect(self, prefix: str) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT
        seen = []
        while True:
            line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            if not line:
                raise AssertionError(f"child ended before {prefix!r}: {''.join(seen)}")
            if line.startswith(prefix + " "):
                return json.loads(line[len(prefix) + 1 :])  # type: ignore[no-any-return]
            seen.append(line)


def run_stalled_child(
    tmp_path: Path, n: int, buffer: int, overflow: str
) -> tuple[dict[str, Any], dict[str, Any], list[bytes]]:
    """Start the child with stdout on a pipe nobody reads; once it reports that
    its loop kept ticking, read the pipe to the end."""
    file = tmp_path / "beside.log"
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), "stall", str(n), str(buffer), overflow, str(file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=child_env(),
    )  # fmt: skip
    try:
        errors = StderrLines(proc)
        report = errors.expect("report")  # the pipe is still unread here
        assert proc.stdout is not None
        out = proc.stdout.read()  # the reader resumes: to EOF
        final = errors.expect("final")
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
    return report, final, out.splitlines()


def test_stalled_pipe_reader_never_stalls_the_loop_and_loses_nothing(tmp_path: Path) -> None:
    n = 3000  # ~390 KB: six times what a Linux pipe holds
    report, final, lines = run_stalled_child(tmp_path, n, 100_000, "wait")
    # The loop ticked 100 times after the last call while the pipe was full (the
    # records were still waiting in the stream's buffer, not written), and the
    # pump kept writing the other sink.
    assert report["ticks_after_logging"] >= 100
    assert report["file_lines"] == n
    assert report["stats"]["queued"] > 0
    assert report["stats"]["written"] < report["stats"]["accepted"] == 2 * n
    # Once read: every record once, in order.
    records = [line for line in lines if line.startswith(b"INFO record ")]
    assert [int(line.split()[2]) for line in records] == list(range(n))
    assert final["written"] == final["accepted"] == 2 * n
    assert final["dropped"] == final["queued"] == final["write_errors"] == 0


@pytest.mark.parametrize("overflow", ["wait", "drop_newest", "drop_oldest"])
def test_stream_buffer_overflow_is_counted_and_noted_in_the_stream(
    tmp_path: Path, overflow: str
) -> None:
    # The pump is an event loop and never waits: with "wait" the stream refuses
    # the newest lines, as with drop_newest.
    n = 3000
    report, final, lines = run_stalled_child(tmp_path, n, 200, overflow)
    assert report["ticks_after_logging"] >= 100
    records = [int(line.split()[2]) for line in lines if line.startswith(b"INFO record ")]
    assert report["file_lines"] == n
    assert final["dropped"] > 0
    assert final["written"] + final["dropped"] == final["accepted"] == 2 * n
    assert len(records) == final["written"] - n
    assert records == sorted(set(records))  # what arrived arrived once, in order
    if overflow == "drop_oldest":
        assert records[-1] == n - 1  # the newest survive
    else:
        assert records[0] == 0
    notes = [line for line in lines if b"aiologship dropped" in line]
    assert (
        notes
        and sum(int(line.split(b"dropped ")[1].split()[0]) for line in notes) == (final["dropped"])
    )


def test_print_and_log_keep_their_order_on_a_pipe() -> None:
    # stdout on a pipe is block-buffered: "printed 1" sits in Python's buffer when
    # "logged 2" is written, unless the writer flushes the stream first.
    done = subprocess.run(
        [sys.executable, str(CHILD), "order"],
        capture_output=True, env=child_env(), timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [b"printed 1", b"logged 2", b"printed 3", b"logged 4"]


def read_pty(master: int, proc: subprocess.Popen[bytes]) -> bytes:
    out = b""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its side
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


def run_color_child(stdout: str, *args: str, **env: str) -> bytes:
    if stdout == "pty":
        master, slave = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), "color", *args],
            stdout=slave, stderr=subprocess.DEVNULL, env=child_env(**env),
        )  # fmt: skip
        os.close(slave)
        try:
            out = read_pty(master, proc)
            assert proc.wait(timeout=WAIT) == 0
        finally:
            os.close(master)
        return out
    done = subprocess.run(
        [sys.executable, str(CHILD), "color", *args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=child_env(**env), timeout=WAIT,
    )  # fmt: skip
    assert done.returncode == 0
    return done.stdout


def test_colours_on_a_pty() -> None:
    out = run_color_child("pty")
    assert b"\x1b[32mINFO\x1b[0m child: hello" in out
    assert b"\x1b[31mERROR\x1b[0m child: oops" in out


def test_no_colours_on_a_pipe() -> None:
    out = run_color_child("pipe")
    assert b"INFO child: hello" in out and b"ERROR child: oops" in out
    assert b"\x1b[" not in out


def test_no_colours_with_no_color() -> None:
    out = run_color_child("pty", NO_COLOR="1")
    assert b"INFO child: hello" in out
    assert b"\x1b[" not in out


def test_force_color_on_a_pipe() -> None:
    out = run_color_child("pipe", FORCE_COLOR="1")
    assert b"\x1b[32mINFO\x1b[0m child: hello" in out


def test_json_is_never_coloured() -> None:
    out = run_color_child("pty", "--json")
    records = [json.loads(line) for line in out.splitlines() if line.startswith(b"{")]
    assert [r["message"] for r in records] == ["hello", "oops"]
    assert b"\x1b[" not in out


@pytest.mark.parametrize(
    ("env", "tty", "expected"),
    [
        ({}, True, True),
        ({}, False, False),
        ({"NO_COLOR": "1"}, True, False),
        ({"NO_COLOR": ""}, True, True),  # no-color.org: present and not empty
        ({"FORCE_COLOR": "1"}, False, True),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, True, False),
        ({"TERM": "dumb"}, True, False),
    ],
)
def test_wants_color(env: dict[str, str], tty: bool, expected: bool) -> None:
    if tty:
        master, slave = pty.openpty()
        try:
            assert wants_color(slave, env) is expected
        finally:
            os.close(master)
            os.close(slave)
    else:
        r, w = os.pipe()
        try:
            assert wants_color(w, env) is expected
        finally:
            os.close(r)
            os.close(w)


def test_color_formatter_lends_the_coloured_name_for_one_call() -> None:
    inner = logging.Formatter("%(levelname)s %(message)s")
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "m", None, None)
    assert ColorFormatter(inner).format(record) == "\x1b[33mWARNING\x1b[0m m"
    assert record.levelname == "WARNING"  # another sink of the record sees it plain
    plain = ColorFormatter(logging.Formatter("%(message)s"))
    assert plain.format(record) == "\x1b[33mm\x1b[0m"


# ----------------------------------------------------------------- in-process


def test_text_stream_and_fd_sinks(tmp_path: Path) -> None:
    buf = io.StringIO()
    r, w = os.pipe()
    with LogManager() as lm:
        log = lm.get_logger("streams")
        log.add(buf, fmt="%(levelname)s %(message)s")
        log.add(w, json=True)
        log.info("one %d", 1)
        log.warning("two")
        assert lm.flush(timeout=WAIT)
        assert buf.getvalue() == "INFO one 1\nWARNING two\n"
    os.close(w)  # ours was a dup, closed with the manager: the pipe ends here
    with os.fdopen(r, "rb") as f:
        got = [json.loads(line)["message"] for line in f]
    assert got == ["one 1", "two"]


def test_yaml_stream_sink(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("format: json\nsinks:\n  - stream: stdout\n    logger: yaml.app\n")
    with LogManager(config_path=config) as lm:
        lm.get_logger("yaml.app").info("to stdout")
    out = capfd.readouterr().out
    assert [json.loads(line)["message"] for line in out.splitlines()] == ["to stdout"]


@pytest.mark.parametrize(
    ("yaml_sink", "key", "reason", "line"),
    [
        ("stream: stdin", "sinks[0].stream", "expected stdout or stderr", 2),
        ("stream: stdout\n    path: /tmp/x", "sinks[0].stream", "not both", 2),
        ("stream: stderr\n    rotation: 10 MB", "sinks[0].rotation", "does not rotate", 3),
        ("logger: app", "sinks[0].path", "a path or a stream", None),
    ],
)
def test_yaml_stream_sink_errors(
    tmp_path: Path, yaml_sink: str, key: str, reason: str, line: int | None
) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(f"sinks:\n  - {yaml_sink}\n")
    with pytest.raises(ConfigError) as info:
        LogManager(config_path=config)
    assert info.value.key == key and reason in info.value.reason and info.value.line == line


def _bad_streams(tmp_path: Path) -> list[tuple[Any, str]]:
    closed = open(tmp_path / "closed.txt", "w")  # noqa: SIM115
    closed.close()
    reading = open(tmp_path / "closed.txt")  # noqa: SIM115
    r, w = os.pipe()
    os.close(w)
    # writable() says yes, its descriptor says read-only.
    lying = os.fdopen(os.dup(r), "w", closefd=True)
    return [
        (closed, "closed"),
        (reading, "not open for writing"),
        (r, "open for reading only"),
        (lying, "open for reading only"),
        (9999, "not open"),
        (-1, "never negative"),
        (True, "expected a file path"),
        (object(), "expected a file path"),
    ]


def test_bad_streams_are_refused_at_add_and_nothing_queued_is_lost(tmp_path: Path) -> None:
    log_file = tmp_path / "kept.log"
    bad = _bad_streams(tmp_path)
    try:
        check_refused(log_file, bad)
    finally:
        for stream, _ in bad:
            if isinstance(stream, io.IOBase):
                stream.close()
        os.close(bad[2][0])


def check_refused(log_file: Path, bad: list[tuple[Any, str]]) -> None:
    with LogManager() as lm:
        log = lm.get_logger("bad")
        log.add(log_file, fmt="%(message)s")
        for i, (stream, reason) in enumerate(bad):
            log.info("before %d", i)
            with pytest.raises(ConfigError) as info:
                log.add(stream)
            assert info.value.key == "sink" and reason in info.value.reason, info.value
            assert info.value.value is stream
        rotation = pytest.raises(ConfigError, match="does not rotate")
        with rotation:
            log.add(sys.stderr, rotation="1 MB")
        log.info("after")
    assert log_file.read_text().splitlines() == [f"before {i}" for i in range(len(bad))] + ["after"]
    assert lm.stats().written == lm.stats().accepted == len(bad) + 1


def test_a_stream_given_twice_has_one_writer() -> None:
    buf = io.StringIO()
    with LogManager() as lm:
        a = lm.get_logger("twice.a")
        b = lm.get_logger("twice.b")
        a.add(buf, fmt="%(name)s %(message)s")
        b.add(buf, fmt="%(name)s %(message)s")
        for i in range(50):
            (a if i % 2 else b).info("%d", i)
        writers = {h.writer for lg in (a, b) for h in lg.logger.handlers}
        assert len(writers) == 1
    assert [int(line.split()[1]) for line in buf.getvalue().splitlines()] == list(range(50))


@settings(max_examples=200, deadline=None)
@given(
    capacity=st.integers(1, 20),
    batches=st.lists(st.integers(0, 30), max_size=12),
    policy=st.sampled_from(list(Overflow)),
)
def test_stream_buffer_overflow_property(
    capacity: int, batches: list[int], policy: Overflow
) -> None:
    """One layer: the buffer of a writer whose thread takes nothing (a reader that
    never comes back). Whatever the batches, the buffer never exceeds its
    capacity, every line is either waiting or counted as dropped, what waits is in
    order, and the policy decides which end survives."""
    writer = StreamWriter(io.StringIO(), capacity=capacity, overflow=policy)
    writer._thread = threading.current_thread()  # keep put() from starting the thread
    sent: list[str] = []
    for size in batches:
        batch = [f"{len(sent) + i}\n" for i in range(size)]
        sent += batch
        writer.put(batch)
        waiting = list(writer._lines)
        assert len(waiting) <= capacity
        assert writer.accepted == len(sent) == len(waiting) + writer.dropped
        assert writer.done == writer.dropped
        numbers = [int(line) for line in waiting]
        assert numbers == sorted(set(numbers))
    expected = sent[-capacity:] if policy is Overflow.DROP_OLDEST else sent[:capacity]
    assert list(writer._lines) == expected
