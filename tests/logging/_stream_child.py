"""A child process for tests/logging/test_streams.py: logs to its stdout (a pipe
or a PTY the test holds) through aiologship, and reports on stderr.

    python _stream_child.py stall N BUFFER OVERFLOW FILE
        logs N numbered records to stdout and to FILE while a 1 ms ticker runs;
        keeps ticking until 100 ticks happened after the last log call and FILE
        holds N lines (or 30 s passed), reports ``report <json>`` (ticks, lines
        in FILE, stats) on stderr, closes the manager and exits. BUFFER: the
        stream's buffer in lines (the manager's queue_size by default).
    python _stream_child.py color [--json]
        logs one INFO and one ERROR record to stdout and exits.
    python _stream_child.py order
        prints, logs, flushes, prints again, logs: on a pipe (block-buffered
        stdout) the output keeps that order.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aiologship import LogManager

PAYLOAD = "p" * 80  # ~130-byte lines: a few thousand fill a 64 KiB pipe


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


async def stall(n: int, buffer: int, overflow: str, file: Path) -> None:
    lm = LogManager(overflow=overflow)
    log = lm.get_logger("child")
    log.add(sys.stdout, fmt="%(levelname)s %(message)s")
    # A small stream buffer with the queue at its default size: only the stream's
    # own overflow drops.
    (handler,) = log.logger.handlers
    handler.writer._capacity = buffer  # type: ignore[attr-defined]
    log.add(file, fmt="%(message)s")  # the pump keeps serving this one meanwhile
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.001)
            ticks += 1

    task = asyncio.create_task(ticker())
    for seq in range(n):
        log.info("record %d %s", seq, PAYLOAD)
        if seq % 50 == 49:
            await asyncio.sleep(0)  # a service's handlers yield between records
    logged_at = ticks
    deadline = time.monotonic() + 30
    # The loop keeps running while stdout is not read; the file sink keeps filling.
    while ticks < logged_at + 100 or (count_lines(file) < n and time.monotonic() < deadline):
        await asyncio.sleep(0.001)
    report = {
        "ticks_after_logging": ticks - logged_at,
        "file_lines": count_lines(file),
        "stats": lm.stats()._asdict(),
    }
    sys.stderr.write("report " + json.dumps(report) + "\n")
    sys.stderr.flush()
    task.cancel()
    await lm.aclose()
    sys.stderr.write("final " + json.dumps(lm.stats()._asdict()) + "\n")
    sys.stderr.flush()


def color(as_json: bool) -> None:
    with LogManager() as lm:
        log = lm.get_logger("child")
        log.add(sys.stdout, json=as_json)
        log.info("hello")
        log.error("oops")


def order() -> None:
    with LogManager() as lm:
        log = lm.get_logger("child")
        log.add(sys.stdout, fmt="%(message)s")
        print("printed 1")
        log.info("logged 2")
        lm.flush()
        print("printed 3")
        log.info("logged 4")


if __name__ == "__main__":
    if sys.argv[1] == "order":
        order()
    elif sys.argv[1] == "stall":
        asyncio.run(stall(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], Path(sys.argv[5])))
    else:
        color("--json" in sys.argv)
