"""Every accepted record reaches the file exactly once, in per-task order."""

from __future__ import annotations

import asyncio
import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest

from aiologship import LogManager, Overflow
from aiologship._config import Rotation
from aiologship._logging._streams import StreamWriter
from aiologship._logging._writers import FileWriter
from tests.conftest import read_lines

ROOT = Path(__file__).resolve().parents[2]


def check_exactly_once(path: Path, tasks: int, per_task: int) -> None:
    seen: dict[int, int] = {}
    count = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            task, seq = map(int, line.split())
            assert seq == seen.get(task, -1) + 1, f"task {task}: {seq} after {seen.get(task)}"
            seen[task] = seq
            count += 1
    assert count == tasks * per_task
    assert all(seen[t] == per_task - 1 for t in range(tasks))


@pytest.mark.timeout(180)
async def test_a_million_records_from_100_tasks(
    tmp_path: Path, route: Any, request: pytest.FixtureRequest
) -> None:
    """A million on the usual route; 300,000 where each call makes a ``LogRecord``
    (another handler sees it), which costs three times as long per record."""
    path = tmp_path / "million.log"
    via_record = request.node.callspec.params["route"] == "record"
    tasks, per_task = 100, 3_000 if via_record else 10_000
    async with LogManager() as lm:
        log = lm.get_logger("million")
        log.add(path, fmt="%(message)s")
        log = route(log)

        async def produce(task: int) -> None:
            for seq in range(per_task):
                log.info("%d %d", task, seq)
                if seq % 500 == 0:
                    await asyncio.sleep(0)

        await asyncio.gather(*(produce(t) for t in range(tasks)))
    stats = lm.stats()
    assert stats.accepted == stats.written == tasks * per_task and stats.dropped == 0
    check_exactly_once(path, tasks, per_task)


async def test_cancellation_mid_burst_loses_nothing(tmp_path: Path, route: Any) -> None:
    path = tmp_path / "cancel.log"
    done = [0] * 20
    async with LogManager() as lm:
        log = lm.get_logger("cancel")
        log.add(path, fmt="%(message)s")
        log = route(log)

        async def produce(task: int) -> None:
            seq = 0
            while True:
                log.info("%d %d", task, seq)
                seq += 1
                done[task] = seq
                if seq % 50 == 0:
                    await asyncio.sleep(0)

        running = [asyncio.create_task(produce(t)) for t in range(20)]
        while sum(done) < 20_000:
            await asyncio.sleep(0.001)
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
    per_task: dict[int, list[int]] = {}
    for line in read_lines(path):
        t, s = map(int, line.split())
        per_task.setdefault(t, []).append(s)
    for t in range(20):
        assert per_task[t] == list(range(done[t]))


def _run_script(
    code: str, tmp_path: Path, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_asyncio_run_exit_without_close_loses_nothing(tmp_path: Path) -> None:
    path = tmp_path / "exit.log"
    _run_script(
        f"""
import asyncio
from aiologship import LogManager

lm = LogManager()
log = lm.get_logger("exit")
log.add({str(path)!r}, fmt="%(message)s")

async def main():
    async def produce(task):
        for seq in range(5000):
            log.info("%d %d", task, seq)
            if seq % 100 == 0:
                await asyncio.sleep(0)
    await asyncio.gather(*(produce(t) for t in range(20)))

asyncio.run(main())
# no close(): the interpreter's exit must drain the queue
""",
        tmp_path,
    )
    check_exactly_once(path, 20, 5000)


@pytest.mark.parametrize("sink", ["file", "rotating", "stream"])
def test_a_batch_first_written_during_the_exit_drain_is_written_once(
    tmp_path: Path, sink: str
) -> None:
    """The pump's first batch reaches its writer only once the exit hooks run.

    Python 3.12 refuses new threads there ("can't create new thread at interpreter
    shutdown"), and this batch needs one (a worker, or the stream's own thread):
    each writer must then write it in place, once. A file batch used to be written
    twice (``run_in_executor`` queued it before its thread start failed, so an idle
    thread wrote it while the pump wrote it again), and a stream sink lost what its
    thread never wrote. 3.11 and 3.13 start the threads: the same drain, the
    ordinary way."""
    path = tmp_path / "exit.log"
    target = {
        "file": f"{str(path)!r}",
        "rotating": f"{str(path)!r}, rotation='1 MB'",
        "stream": f"open({str(path)!r}, 'a', encoding='utf-8')",
    }[sink]
    _run_script(
        f"""
import logging, threading
from aiologship import LogManager

exit_started = threading.Event()

class HoldUntilExit(logging.Formatter):
    def format(self, record):
        assert exit_started.wait(60), "the exit hooks never ran"
        return super().format(record)

lm = LogManager()
log = lm.get_logger("exit")
log.add({target})
(handler,) = logging.getLogger("exit").handlers
handler.setFormatter(HoldUntilExit("%(message)s"))
# Registered after aiologship's drain, so it runs first: the hooks run in reverse.
threading._register_atexit(exit_started.set)
for i in range(3000):
    log.info("%d", i)
# no close(): the exit hook drains
""",
        tmp_path,
    )
    assert [int(line) for line in read_lines(path)] == list(range(3000))


def _refuse_new_threads(self: threading.Thread) -> None:
    raise RuntimeError("can't create new thread at interpreter shutdown")


@pytest.mark.parametrize("rotation", [None, Rotation(max_bytes=1 << 20)])
def test_file_batches_that_find_no_thread_are_written_once_by_the_fallback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rotation: Rotation | None
) -> None:
    """The pump writes a batch again with ``write_sync`` when ``awrite`` raised:
    so ``awrite`` may raise only when nothing of the batch was, or will be, written.
    Here an idle worker thread exists and no new one can start (interpreter exit
    on Python 3.12): a batch either gets the idle thread or raises untouched."""
    path = tmp_path / "f.log"
    writer = FileWriter(path, rotation=rotation, tz=UTC)

    async def main() -> list[BaseException | None]:
        await writer.awrite(["warm\n"])  # leaves an idle worker thread behind
        monkeypatch.setattr(threading.Thread, "start", _refuse_new_threads)
        outcomes = await asyncio.gather(
            *(writer.awrite([f"{i}\n"]) for i in range(4)), return_exceptions=True
        )
        for i, outcome in enumerate(outcomes):
            if isinstance(outcome, Exception):
                writer.write_sync([f"{i}\n"])  # what the pump does
        await writer.aclose()  # needs no new thread either
        monkeypatch.undo()
        return outcomes

    outcomes = asyncio.run(main())
    assert any(isinstance(o, RuntimeError) for o in outcomes)  # the refusal happened
    assert sorted(read_lines(path)) == sorted(["warm", "0", "1", "2", "3"])


def test_a_stream_whose_thread_cannot_start_writes_in_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = io.StringIO()
    writer = StreamWriter(out, capacity=100, overflow=Overflow.DROP_NEWEST)
    monkeypatch.setattr(threading.Thread, "start", _refuse_new_threads)
    asyncio.run(writer.awrite(["a\n", "b\n"]))
    assert out.getvalue() == "a\nb\n"  # written by the caller, before awrite returned
    asyncio.run(writer.awrite(["c\n"]))
    asyncio.run(writer.aclose())
    monkeypatch.undo()
    assert out.getvalue() == "a\nb\nc\n"
    assert (writer.accepted, writer.written, writer.buffered) == (3, 3, 0)


def test_forked_child_gets_a_working_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "fork.log"
    _run_script(
        f"""
import os, sys
from aiologship import LogManager

lm = LogManager()
log = lm.get_logger("fork")
log.add({str(path)!r}, fmt="%(process)d %(message)s")
for i in range(1000):
    log.info("parent-before %d", i)
pid = os.fork()
if pid == 0:
    for i in range(1000):
        log.info("child %d", i)
    # the child exits normally: its exit hook drains its own pipeline
    sys.exit(0)
for i in range(1000):
    log.info("parent-after %d", i)
_, status = os.waitpid(pid, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
lm.close()
print(pid)
""",
        tmp_path,
    )
    lines = read_lines(path)
    labels = [line.split()[1] for line in lines]
    assert labels.count("parent-before") == 1000  # written once, by the parent only
    assert labels.count("child") == 1000
    assert labels.count("parent-after") == 1000
    child = [line for line in lines if line.split()[1] == "child"]
    assert [int(line.split()[2]) for line in child] == list(range(1000))


# ------------------------------------------------------------------- overflow


class FifoReader:
    """Reads a FIFO in a thread once ``start()`` is called; collects the lines."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _read(self) -> None:
        with open(self.path, encoding="utf-8") as f:
            for line in f:
                self.lines.append(line.rstrip("\n"))

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "FIFO reader did not see EOF"


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[FifoReader]:
    reader = FifoReader(tmp_path / "fifo.log")
    yield reader
    if not reader._thread.is_alive() and not reader._thread.ident:
        # Never started: open once so a writer blocked in open() is released.
        fd = os.open(reader.path, os.O_RDONLY | os.O_NONBLOCK)
        os.close(fd)


def wait_until(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.005)


@pytest.mark.parametrize("policy", [Overflow.DROP_NEWEST, Overflow.DROP_OLDEST])
def test_overflow_drops_are_counted_and_reported_once(
    fifo: FifoReader, policy: Overflow, caplog: pytest.LogCaptureFixture, route: Any
) -> None:
    lm = LogManager(queue_size=100, overflow=policy)
    log = lm.get_logger("ovf")
    log.add(fifo.path, fmt="%(message)s")
    log = route(log)
    log.info("first")  # the pump takes it and blocks opening the FIFO (no reader yet)
    wait_until(lambda: lm.stats().queued == 0)
    for i in range(1000):
        log.info("r%d", i)
    stats = lm.stats()
    assert stats.queued == 100
    assert stats.dropped == 900
    fifo.start()
    lm.close()
    fifo.join()
    records = [line for line in fifo.lines if not line.startswith("aiologship dropped")]
    notes = [line for line in fifo.lines if line.startswith("aiologship dropped")]
    assert records[0] == "first"
    if policy is Overflow.DROP_NEWEST:
        assert records[1:] == [f"r{i}" for i in range(100)]
    else:
        assert records[1:] == [f"r{i}" for i in range(900, 1000)]
    assert notes == ["aiologship dropped 900 records for this sink: queue full "
                     f"(queue_size=100, overflow={policy.value})"]  # fmt: skip
    warnings = [r for r in caplog.records if r.name == "aiologship" and "dropped" in r.getMessage()]
    assert len(warnings) == 1 and "900" in warnings[0].getMessage()
    assert lm.stats().written == 101


def test_wait_policy_blocks_a_thread_until_there_is_room(fifo: FifoReader, route: Any) -> None:
    lm = LogManager(queue_size=50, overflow="wait", overflow_timeout=30)
    log = lm.get_logger("wait")
    log.add(fifo.path, fmt="%(message)s")
    log = route(log)

    def produce() -> None:
        for i in range(500):
            log.info("w%d", i)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: lm.stats().queued >= 50)  # full, producer waiting
    assert producer.is_alive()
    fifo.start()
    producer.join(60)
    assert not producer.is_alive()
    lm.close()
    fifo.join()
    assert fifo.lines == [f"w{i}" for i in range(500)]
    assert lm.stats().dropped == 0


def test_wait_policy_gives_up_after_its_bound(fifo: FifoReader, route: Any) -> None:
    lm = LogManager(queue_size=10, overflow="wait", overflow_timeout=0.05)
    log = lm.get_logger("waitbound")
    log.add(fifo.path, fmt="%(message)s")
    log = route(log)
    log.info("first")
    wait_until(lambda: lm.stats().queued == 0)
    for i in range(15):
        log.info("%d", i)
    assert lm.stats().dropped == 5
    fifo.start()
    lm.close()
    fifo.join()
    assert [line for line in fifo.lines if not line.startswith("aiologship")] == ["first"] + [
        str(i) for i in range(10)
    ]


async def test_wait_policy_never_blocks_an_event_loop(fifo: FifoReader, route: Any) -> None:
    lm = LogManager(queue_size=10, overflow="wait", overflow_timeout=30)
    log = lm.get_logger("waitloop")
    log.add(fifo.path, fmt="%(message)s")
    log = route(log)
    log.info("first")
    while lm.stats().queued:
        await asyncio.sleep(0.005)
    for i in range(20):
        log.info("%d", i)  # on the loop thread: would wait 30 s each if it blocked
    assert lm.stats().dropped == 10
    fifo.start()
    await lm.aclose()
    fifo.join()


def test_drop_oldest_evicts_a_call_whose_sink_was_removed() -> None:
    """A captured call names its sink by number; evicting one whose sink is gone
    (removed meanwhile) counts the drop instead of failing the new record."""
    from aiologship._logging._queue import RecordQueue, SinkHandler

    queue = RecordQueue(2, Overflow.DROP_OLDEST, 0.0, wake=lambda: None)  # no pump
    sink = SinkHandler(
        queue, writer=None, formatter=logging.Formatter(), after_close=lambda h, r: None
    )  # type: ignore[arg-type]
    gone = SinkHandler(
        queue, writer=None, formatter=logging.Formatter(), after_close=lambda h, r: None
    )  # type: ignore[arg-type]
    queue.unregister(gone)
    stale = (gone.index, "captured call")
    queue.items.extend([stale, (sink.index, "another")])
    record = logging.LogRecord("evict", logging.INFO, __file__, 1, "new", None, None)
    queue.put_overflow((sink, record))
    assert (queue.dropped, queue.evicted) == (1, 1)
    assert list(queue.items) == [(sink.index, "another"), (sink, record)]
    assert queue.take_drop_report() == {}  # no sink left to note the gap in
