"""Logging benchmarks: aiologship against the anchors, measured in the same run.

    python benchmarks/bench_logging.py [--quick] [--runs N] [--scenario NAME ...]

Scenarios (see benchmarks/README.md):
  throughput  200,000 records from 100 asyncio tasks until all are on disk
  stall       the sink is a FIFO whose reader pauses 1 s: worst lag of a 1 ms ticker
  stall-stdout  the same with the process's stdout on a pipe whose reader pauses 1 s
              (aiologship's stream sink vs a stdlib StreamHandler, no-logging floor)
  delivery    records on disk == records accepted, every run (from throughput + stall)
  memory      sink stalled while logging at 50,000 records/s: RSS growth vs queue bound

Each (scenario, library, run) runs in a fresh interpreter (``--worker``) so state
and memory never leak from one library into the next. The parent prints one table
per scenario and one PASS/FAIL line per target, and always exits 0 (a failure to
measure is reported as FAIL, never raised).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import re
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO_ROOT,
    FifoReader,
    LagTicker,
    PipeReader,
    RssSampler,
    WorkerOutcome,
    count_lines,
    emit_result,
    gc_collect,
    load_avg,
    median,
    print_table,
    rss_bytes,
    run_worker,
    timed,
    uptime_line,
    verdict,
)

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

FMT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOGURU_FMT = "{time:YYYY-MM-DD HH:mm:ss,SSS} {level} {extra[name]}: {message}"
MARKER = "bench-record"
MSG = MARKER + " task=%d seq=%d payload=%s"
# aiologger only accepts one mapping as args; the line it writes is the same.
MAPPING_MSG = MARKER + " task=%(t)d seq=%(s)d payload=%(p)s"
LOGURU_MSG = MARKER + " task={} seq={} payload={}"
PAYLOAD = "x" * 40  # a line is ~110 bytes, a typical service log line
LINE_RE = re.compile(rb"task=(\d+) seq=(\d+)")
SCENARIOS = ["throughput", "throughput-json", "caller", "stall", "stall-stdout"]
YIELD_EVERY = 20  # sync loggers: let the 100 tasks interleave like real request handlers

LIBS = [
    "aiologship",
    "aiologship-metrics",
    "stdlib",
    "stdlib-queue",
    "aiologger",
    "loguru",
    "picologging",
]
LABELS = {
    "aiologship": "aiologship LogManager",
    "aiologship-metrics": "aiologship, /metrics scraped 1/s",
    "aiologship-json": "aiologship JSON, 2 extra fields",
    "stdlib-json": "stdlib FileHandler + pjl JsonFormatter",
    "loguru-json": "loguru serialize=True (no enqueue)",
    "stdlib": "stdlib FileHandler",
    "stdlib-queue": "stdlib QueueHandler+Listener",
    "aiologger": "aiologger AsyncFileHandler",
    "loguru": "loguru enqueue=True",
    "picologging": "picologging FileHandler",
    "none": "(no logging: ticker noise)",
}


# =============================================================== library adapters
#
# An adapter opens a sink at ``path`` with the common text format and offers
#   log(task, seq)            -> None, or an awaitable for aiologger (awaited, as its
#                                 docs show)
#   await close()             -> returns once every record is written
#   stats()                   -> library counters, if any


class Adapter:
    is_async = False

    async def open(self, path: Path, **kw: Any) -> None:
        raise NotImplementedError

    def log(self, task: int, seq: int) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        return {}


class StdlibAdapter(Adapter):
    def make_handler(self, path: Path) -> logging.Handler:
        return logging.FileHandler(path, encoding="utf-8")

    async def open(self, path: Path, **kw: Any) -> None:
        self.handler = self.make_handler(path)
        self.handler.setFormatter(logging.Formatter(FMT))
        lg = logging.getLogger("bench")
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(self.handler)
        self.info = lg.info

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        self.handler.close()


class StdlibQueueAdapter(StdlibAdapter):
    async def open(self, path: Path, **kw: Any) -> None:
        import logging.handlers
        import queue

        self.file_handler = logging.FileHandler(path, encoding="utf-8")
        self.file_handler.setFormatter(logging.Formatter(FMT))
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        self.listener = logging.handlers.QueueListener(q, self.file_handler)
        self.listener.start()
        lg = logging.getLogger("bench")
        lg.propagate = False
        lg.setLevel(logging.INFO)
        lg.addHandler(logging.handlers.QueueHandler(q))
        self.info = lg.info

    async def close(self) -> None:
        self.listener.stop()  # processes every queued record, then joins
        self.file_handler.close()


class PicologgingAdapter(StdlibAdapter):
    handler: Any  # a picologging.FileHandler (not a logging.Handler subclass)

    async def open(self, path: Path, **kw: Any) -> None:
        import picologging

        self.handler = picologging.FileHandler(str(path), encoding="utf-8")
        # picologging 0.9.3's default asctime (and %(msecs)) print garbage such as
        # ",651245885" on Python 3.11: an explicit datefmt gives a real timestamp,
        # to the second (4 bytes shorter a line than the others' milliseconds).
        self.handler.setFormatter(picologging.Formatter(FMT, datefmt="%Y-%m-%d %H:%M:%S"))
        lg = picologging.getLogger("bench")
        lg.propagate = False
        lg.setLevel(picologging.INFO)
        lg.addHandler(self.handler)
        self.info = lg.info


class AiologgerAdapter(Adapter):
    is_async = True

    async def open(self, path: Path, **kw: Any) -> None:
        from aiologger import Logger
        from aiologger.formatters.base import Formatter
        from aiologger.handlers.files import AsyncFileHandler
        from aiologger.levels import LogLevel

        self.logger = Logger(name="bench", level=LogLevel.INFO)
        handler = AsyncFileHandler(str(path), encoding="utf-8")
        handler.formatter = Formatter(FMT)
        self.logger.add_handler(handler)
        self.info = self.logger.info

    def log(self, task: int, seq: int) -> Awaitable[Any]:
        return self.info(MAPPING_MSG, {"t": task, "s": seq, "p": PAYLOAD})  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.logger.shutdown()  # flushes and closes its handlers


class LoguruAdapter(Adapter):
    async def open(self, path: Path, **kw: Any) -> None:
        from loguru import logger

        logger.remove()
        self.logger = logger
        self.sink = logger.add(str(path), format=LOGURU_FMT, enqueue=True, level="INFO")
        self.info = logger.bind(name="bench").info

    def log(self, task: int, seq: int) -> None:
        self.info(LOGURU_MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        await self.logger.complete()
        self.logger.remove(self.sink)  # joins the enqueue worker and closes the file


class AiologshipAdapter(Adapter):
    async def open(self, path: Path, **kw: Any) -> None:
        from aiologship import LogManager

        overrides = {k: v for k, v in kw.items() if k in ("queue_size", "overflow")}
        self.lm = LogManager(**overrides)
        lg = self.lm.get_logger("bench")
        self.sink = lg.add(str(path), fmt=FMT)
        self.info = lg.info

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        aclose = getattr(self.lm, "aclose", None)
        if aclose is not None:
            await aclose()
        else:
            self.lm.close()

    def stats(self) -> dict[str, Any]:
        st = self.lm.stats()
        asdict = getattr(st, "_asdict", None)
        return dict(asdict()) if asdict else dict(vars(st))


class AiologshipMetricsAdapter(AiologshipAdapter):
    """The same, with ``aiologship.metrics.serve()`` scraped over HTTP every second
    (Prometheus scrapes every 15-60 s): what metrics cost the logging. The server
    stops after the timed close (its shutdown polls every 0.5 s)."""

    async def open(self, path: Path, **kw: Any) -> None:
        import urllib.request

        import aiologship.metrics

        await super().open(path, **kw)
        self.server = aiologship.metrics.serve(0)
        self.scrapes = 0
        self.stop = threading.Event()

        def scrape() -> None:
            while not self.stop.wait(1.0):
                with urllib.request.urlopen(self.server.url, timeout=10) as response:
                    response.read()
                self.scrapes += 1

        self.scraper = threading.Thread(target=scrape, daemon=True)
        self.scraper.start()

    async def close(self) -> None:
        self.stop.set()
        await super().close()

    def stats(self) -> dict[str, Any]:
        self.scraper.join(10)
        self.server.close()
        return {**super().stats(), "scrapes": self.scrapes}


# JSON: the same call with two extra= fields, one JSON object per line.
JSON_EXTRA = {"user": "u-17", "tenant": "acme"}


class AiologshipJsonAdapter(AiologshipAdapter):
    async def open(self, path: Path, **kw: Any) -> None:
        from aiologship import LogManager

        self.lm = LogManager(format="json")
        lg = self.lm.get_logger("bench")
        self.sink = lg.add(str(path))
        self.info = lg.info

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD, extra=JSON_EXTRA)


class StdlibJsonAdapter(StdlibAdapter):
    """``FileHandler`` with python-json-logger's ``JsonFormatter`` (the usual
    stdlib JSON setup); fields as aiologship's: time, level, logger, message."""

    async def open(self, path: Path, **kw: Any) -> None:
        from pythonjsonlogger.json import JsonFormatter

        await super().open(path, **kw)
        self.handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD, extra=JSON_EXTRA)


class LoguruJsonAdapter(Adapter):
    """loguru ``serialize=True`` without ``enqueue`` (its fastest JSON setting);
    the two fields bound once (loguru's idiom for fixed fields)."""

    async def open(self, path: Path, **kw: Any) -> None:
        from loguru import logger

        logger.remove()
        self.logger = logger
        self.sink = logger.add(str(path), serialize=True, level="INFO")
        self.info = logger.bind(name="bench", **JSON_EXTRA).info

    def log(self, task: int, seq: int) -> None:
        self.info(LOGURU_MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        self.logger.remove(self.sink)


class NoneAdapter(Adapter):
    """No logging at all: the ticker's noise floor on this machine right now."""

    async def open(self, path: Path, **kw: Any) -> None:
        pass

    def log(self, task: int, seq: int) -> None:
        pass

    async def close(self) -> None:
        pass


class StdlibStdoutAdapter(StdlibAdapter):
    """``logging.StreamHandler(sys.stdout)``: what ``basicConfig(stream=sys.stdout)``
    and uvicorn's access log use."""

    def make_handler(self, path: Path) -> logging.Handler:
        return logging.StreamHandler(sys.stdout)

    async def close(self) -> None:
        self.handler.flush()


class AiologshipStdoutAdapter(AiologshipAdapter):
    async def open(self, path: Path, **kw: Any) -> None:
        from aiologship import LogManager

        self.lm = LogManager()
        lg = self.lm.get_logger("bench")
        self.sink = lg.add(sys.stdout, fmt=FMT)
        self.info = lg.info


STDOUT_ADAPTERS: dict[str, Callable[[], Adapter]] = {
    "aiologship": AiologshipStdoutAdapter,
    "stdlib": StdlibStdoutAdapter,
    "none": lambda: NoneAdapter(),
}
STDOUT_LABELS = {
    "aiologship": "aiologship log.add(sys.stdout)",
    "stdlib": "stdlib StreamHandler(stdout)",
    "none": LABELS["none"],
}

ADAPTERS: dict[str, Callable[[], Adapter]] = {
    "aiologship": AiologshipAdapter,
    "aiologship-metrics": AiologshipMetricsAdapter,
    "aiologship-json": AiologshipJsonAdapter,
    "stdlib-json": StdlibJsonAdapter,
    "loguru-json": LoguruJsonAdapter,
    "stdlib": StdlibAdapter,
    "stdlib-queue": StdlibQueueAdapter,
    "aiologger": AiologgerAdapter,
    "loguru": LoguruAdapter,
    "picologging": PicologgingAdapter,
    "none": NoneAdapter,
}


def check_lines(path: Path, n_tasks: int) -> dict[str, int]:
    """Exactly-once check on disk: lost, duplicated, and out-of-order (per task)."""
    seen: set[tuple[int, int]] = set()
    dup = reordered = 0
    last = [-1] * n_tasks
    with open(path, "rb") as f:
        for line in f:
            m = LINE_RE.search(line)
            if m is None:
                continue
            t, s = int(m.group(1)), int(m.group(2))
            if (t, s) in seen:
                dup += 1
                continue
            seen.add((t, s))
            if s < last[t]:
                reordered += 1
            last[t] = max(last[t], s)
    return {"unique": len(seen), "duplicated": dup, "reordered": reordered}


# =============================================================== worker scenarios


async def w_throughput(lib: str, tmp: Path, records: int, tasks: int) -> dict[str, Any]:
    path = tmp / "bench.log"
    ad = ADAPTERS[lib]()
    await ad.open(path)
    per_task = records // tasks
    total = per_task * tasks

    async def producer(t: int) -> None:
        log = ad.log
        if ad.is_async:
            for i in range(per_task):
                await log(t, i)
        else:
            for i in range(per_task):
                log(t, i)
                if i % YIELD_EVERY == YIELD_EVERY - 1:
                    await asyncio.sleep(0)

    load0 = load_avg()
    gc_collect()
    with timed() as tm:
        await asyncio.gather(*(producer(t) for t in range(tasks)))
        t_logged = time.perf_counter()
        await ad.close()
    t_close = time.perf_counter() - t_logged
    stats = ad.stats()
    lines, marked = count_lines(path, MARKER.encode())
    chk = check_lines(path, tasks)
    return {
        "records": total,
        "wall_s": tm.wall,
        "cpu_s": tm.cpu,
        # Only records that reached the file count: a dropped record is not throughput.
        "rate": chk["unique"] / tm.wall,
        # Split of the wall time: the producers' time on the loop, then close/drain.
        "log_s": tm.wall - t_close,
        "close_s": t_close,
        "lines": lines,
        "on_disk": marked,
        "lost": total - chk["unique"],
        **chk,
        "stats": stats,
        "load": load0,
    }


async def _paced(ad: Adapter, rate: float, duration: float) -> int:
    """Log ``rate * duration`` records, paced at ``rate``: after each 1 ms sleep, log
    what is due by now (so a stalled producer catches up rather than skipping)."""
    clock = time.perf_counter
    total = int(rate * duration)
    t0 = clock()
    sent = 0
    log = ad.log
    while sent < total:
        due = min(int((clock() - t0) * rate) + 1, total)
        while sent < due:
            if ad.is_async:
                await log(0, sent)
            else:
                log(0, sent)
            sent += 1
        await asyncio.sleep(0.001)
    return sent


async def _ticked(ad: Adapter, rate: float, duration: float) -> dict[str, Any]:
    """Log at ``rate`` for ``duration`` beside a 1 ms ticker, then close ``ad``."""
    load0 = load_avg()
    ticker = LagTicker(0.001)
    ticker.start()
    t0 = time.perf_counter()
    c0 = time.process_time()  # every thread of this process: loop, pump, writers
    sent = await _paced(ad, rate, duration)
    t_prod = time.perf_counter() - t0
    await ticker.stop()
    cpu = time.process_time() - c0
    lag = ticker.summary()
    await ad.close()
    return {
        **lag,
        "cpu_ms": cpu * 1000,
        "sent": sent,
        "achieved_rate": sent / t_prod,
        "stats": ad.stats(),
        "load": load0,
    }


def _read_back(lib: str, res: dict[str, Any], reader: FifoReader) -> dict[str, Any]:
    nbytes, lines, marked = reader.result(timeout=60)
    lost = res["sent"] - marked if lib != "none" else 0
    return {**res, "on_disk": marked, "lost": lost, "lines": lines, "bytes": nbytes}


async def w_stall(
    lib: str, tmp: Path, rate: float, duration: float, pause: float
) -> dict[str, Any]:
    path = tmp / "bench.fifo"
    reader = FifoReader(path, first=64 * 1024, pause=pause, marker=MARKER)
    ad = ADAPTERS[lib]()
    try:
        if lib == "none":
            # Nobody opens the FIFO: unblock the reader with an empty writer.
            os.close(os.open(path, os.O_WRONLY))
        await ad.open(path)
        res = await _ticked(ad, rate, duration)
        return _read_back(lib, res, reader)
    finally:
        reader.kill()


async def w_stall_stdout(lib: str, rate: float, duration: float, pause: float) -> dict[str, Any]:
    """``w_stall`` with the sink on this process's stdout: fd 1 becomes a pipe whose
    reader (a subprocess) reads 64 KiB, pauses, then reads to EOF. The result line
    goes to the real stdout, put back before it is printed."""
    sys.stdout.flush()
    saved = os.dup(1)
    r, w = os.pipe()
    reader = PipeReader(r, first=64 * 1024, pause=pause, marker=MARKER)
    os.close(r)
    os.dup2(w, 1)
    os.close(w)
    try:
        try:
            ad = STDOUT_ADAPTERS[lib]()
            await ad.open(Path("/dev/stdout"))
            res = await _ticked(ad, rate, duration)
            sys.stdout.flush()
        finally:
            os.dup2(saved, 1)  # closes the pipe's last write end: the reader sees EOF
            os.close(saved)
        return _read_back(lib, res, reader)
    finally:
        reader.kill()


def w_caller(lib: str, n: int) -> dict[str, Any]:
    """The caller's own CPU time per log call (``time.thread_time`` of the calling
    thread: the pump's work, in its own thread, is not in it), for aiologship's
    ``info`` to a file sink, and the stdlib's ``info`` to a ``NullHandler`` (a
    call that writes nothing at all), in one thread, outside any event loop."""
    with tempfile.TemporaryDirectory(prefix="aiologship-bench-caller-") as d:
        if lib == "aiologship":
            from aiologship import LogManager

            lm = LogManager(queue_size=n + 10)
            lg = lm.get_logger("bench.caller")
            lg.add(str(Path(d) / "c.log"), fmt=FMT)
            info: Any = lg.info
        else:
            std = logging.getLogger("bench.caller")
            std.propagate = False
            std.setLevel(logging.INFO)
            std.addHandler(logging.NullHandler())
            info = std.info
        for i in range(1000):  # warm: caches, the runtime thread
            info(MSG, 0, i, PAYLOAD)
        gc_collect()
        t0 = time.thread_time()
        for i in range(n):
            info(MSG, 1, i, PAYLOAD)
        per_call = (time.thread_time() - t0) / n
        if lib == "aiologship":
            lm.close()
    return {"per_call_us": per_call * 1e6, "load": load_avg()}


def w_calibrate(n: int) -> dict[str, Any]:
    """Bytes per queued record: hold ``n`` records the way a queue does, measure RSS.

    A queue entry is a ``(handler, LogRecord)`` pair of a record as ``logger.info``
    makes it (not formatted yet: formatting happens in the pump, one batch at a time;
    the batch in flight is covered by the fixed allowance in ``run_memory``).
    """
    lg = logging.getLogger("bench")
    handler = logging.NullHandler()
    # Warm the allocator with one throw-away batch so arenas exist before we measure.
    warm = [
        lg.makeRecord("bench", logging.INFO, __file__, 1, MSG, (0, i, PAYLOAD), None)
        for i in range(1000)
    ]
    del warm
    gc_collect()
    before = rss_bytes()
    held: collections.deque[tuple[logging.Handler, logging.LogRecord]] = collections.deque()
    for i in range(n):
        rec = lg.makeRecord("bench", logging.INFO, __file__, 1, MSG, (0, i, PAYLOAD), None)
        held.append((handler, rec))
    gc_collect()
    after = rss_bytes()
    return {"n": len(held), "bytes_per_record": (after - before) / n, "load": load_avg()}


async def w_memory(
    lib: str, tmp: Path, rate: float, stall: float, queue_size: int
) -> dict[str, Any]:
    path = tmp / "bench.fifo"
    # The reader opens, reads nothing, then drains: the pause outlasts the producing
    # window (which starts after set-up), so the sink is stalled for all of it.
    reader = FifoReader(path, first=0, pause=stall + STALL_MARGIN, marker=MARKER)
    ad = ADAPTERS[lib]()
    try:
        await ad.open(path, queue_size=queue_size, overflow="drop_newest")
        for i in range(50):  # open the sink, start the pump, fill the pipe's first bytes
            ad.log(1, i)
        await asyncio.sleep(0.2)
        gc_collect()
        base = rss_bytes()
        load0 = load_avg()
        with RssSampler(0.02) as rss:
            t0 = time.perf_counter()
            sent = await _paced(ad, rate, stall)
            t_prod = time.perf_counter() - t0
            stats_stalled = ad.stats()
        await ad.close()
        stats = ad.stats()
        _nbytes, lines, marked = reader.result(timeout=120)
    finally:
        reader.kill()
    return {
        "rss_base": base,
        "rss_peak": rss.peak,
        "rss_growth": rss.peak - base,
        "sent": sent + 50,
        "achieved_rate": sent / t_prod,
        "on_disk": marked,
        "lines": lines,
        "stats_while_stalled": stats_stalled,
        "stats": stats,
        "load": load0,
    }


STALL_MARGIN = 1.5  # s: covers the set-up before producing starts (0.2 s) and start-up jitter


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("scenario")
    p.add_argument("lib")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--rate", type=float, default=5000)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--pause", type=float, default=1.0)
    p.add_argument("--queue-size", type=int, default=20_000)
    p.add_argument("--switchinterval", type=float, default=None)
    a = p.parse_args(argv)
    if a.switchinterval:
        sys.setswitchinterval(a.switchinterval)
    with tempfile.TemporaryDirectory(prefix="aiologship-bench-") as d:
        tmp = Path(d)
        if a.scenario == "throughput":
            res = asyncio.run(w_throughput(a.lib, tmp, a.records, a.tasks))
        elif a.scenario == "stall":
            res = asyncio.run(w_stall(a.lib, tmp, a.rate, a.duration, a.pause))
        elif a.scenario == "stall-stdout":
            res = asyncio.run(w_stall_stdout(a.lib, a.rate, a.duration, a.pause))
        elif a.scenario == "caller":
            res = w_caller(a.lib, a.records)
        elif a.scenario == "calibrate":
            res = w_calibrate(a.queue_size)
        elif a.scenario == "memory":
            res = asyncio.run(w_memory(a.lib, tmp, a.rate, a.duration, a.queue_size))
        else:
            raise SystemExit(f"unknown scenario {a.scenario}")
    emit_result(res)
    return 0


# =============================================================== parent: orchestration


def _worker(args: list[str], timeout: float) -> WorkerOutcome:
    return run_worker([str(Path(__file__).resolve()), "--worker", *args], timeout=timeout)


def _rounds(
    scenario: str, libs: list[str], runs: int, extra: list[str], timeout: float
) -> dict[str, list[WorkerOutcome]]:
    """Run every library once per round, rotating the order so no library always
    runs first (or right after the heaviest one)."""
    out: dict[str, list[WorkerOutcome]] = {lib: [] for lib in libs}
    for r in range(runs):
        order = libs[r % len(libs) :] + libs[: r % len(libs)]
        for lib in order:
            o = _worker([scenario, lib, *extra], timeout)
            status = "ok" if o.ok else f"FAILED ({o.error})"
            print(f"  [{scenario} round {r + 1}/{runs}] {lib}: {status}", flush=True)
            out[lib].append(o)
    return out


def _ok(outs: list[WorkerOutcome]) -> list[dict[str, Any]]:
    return [o.result for o in outs if o.ok]


def _loads(res: list[dict[str, Any]]) -> str:
    return "/".join(f"{r['load']:.1f}" for r in res) or "-"


def paired_ratio(outs: dict[str, list[WorkerOutcome]], ours: str, anchor: str, key: str) -> float:
    """Median over rounds of ours/anchor measured in the same round: robust to load
    that drifts over the minutes a full run takes."""
    ratios = [
        a.result[key] / b.result[key]
        for a, b in zip(outs.get(ours, []), outs.get(anchor, []), strict=False)
        if a.ok and b.ok and b.result[key]
    ]
    return median(ratios)


def cpu_ratio(outs: dict[str, list[WorkerOutcome]], anchor: str) -> float:
    """Anchor's CPU per record over aiologship's: the ratio load disturbs least."""

    def per_rec(lib: str) -> float:
        return median([r["cpu_s"] / r["records"] for r in _ok(outs.get(lib, []))])

    return per_rec(anchor) / per_rec("aiologship")


def report_throughput(
    outs: dict[str, list[WorkerOutcome]], records: int, us: str = "aiologship"
) -> dict[str, float]:
    med: dict[str, float] = {}
    rows = []
    for lib, lst in outs.items():
        res = _ok(lst)
        med[lib] = median([r["rate"] for r in res])
    ours = med.get(us, float("nan"))
    for lib, lst in outs.items():
        res = _ok(lst)
        rows.append(
            [
                LABELS[lib],
                med[lib],
                " ".join(f"{r['rate'] / 1000:.0f}k" for r in res) or "failed",
                median([r["log_s"] / r["records"] * 1e6 for r in res]),
                median([r["close_s"] for r in res]),
                median([r["cpu_s"] / r["records"] * 1e6 for r in res]),
                ours / med[lib] if lib != us else 1.0,
                paired_ratio(outs, us, lib, "rate") if lib != us else 1.0,
                _loads(res),
            ]
        )
    print_table(
        f"Throughput ({us}): {records:,} records from 100 tasks until on disk (median of runs)",
        [
            "library",
            "records/s",
            "each run",
            "loop us/rec",
            "close s",
            "cpu us/rec",
            "aiologship x",
            "paired x",
            "load 1m",
        ],
        rows,
    )
    print(
        "  loop us/rec: wall time the 100 tasks spent logging, per record; close s: the"
        " drain after;\n  cpu: all threads; aiologship x: ratio of medians; paired x:"
        " median of same-round ratios"
    )
    _print_failures(outs)
    return med


def _print_failures(outs: dict[str, list[WorkerOutcome]]) -> None:
    for lib, lst in outs.items():
        for n, o in enumerate(lst, 1):
            if not o.ok:
                print(f"  ! {LABELS[lib]} run {n} failed: {o.error}")


def _errors(lst: list[WorkerOutcome]) -> str:
    errs = [o.error for o in lst if not o.ok]
    return ("error: " + errs[0][:70]) if errs else "-"


def report_stall(
    outs: dict[str, list[WorkerOutcome]],
    rate: float,
    duration: float,
    sink: str = "FIFO sink",
    labels: dict[str, str] = LABELS,
) -> None:
    rows = []
    for lib, lst in outs.items():
        res = _ok(lst)
        rows.append(
            [
                labels[lib],
                median([r["worst_lag_ms"] for r in res]),
                " ".join(f"{r['worst_lag_ms']:.1f}" for r in res) or "failed",
                median([r["worst_adj_ms"] for r in res]),
                median([r["p99_lag_ms"] for r in res]),
                median([r["missed_ticks"] for r in res]),
                median([r["over_5ms"] for r in res]),
                median([r["achieved_rate"] for r in res]),
                median([r.get("cpu_ms", float("nan")) for r in res]),
                " ".join(f"{r.get('steal_ms', float('nan')):.0f}" for r in res),
                _loads(res),
            ]
        )
    print_table(
        f"Loop stall: {sink}, reader pauses 1 s after 64 KiB; {rate:,.0f} rec/s for "
        f"{duration:g} s; 1 ms ticker",
        [
            "library",
            "worst lag ms",
            "each run",
            "worst adj ms",
            "p99 ms",
            "missed ticks",
            "lags>5ms",
            "rec/s",
            "CPU ms",
            "steal ms",
            "load 1m",
        ],
        rows,
    )
    print(
        "  worst adj: worst lag minus the time the loop thread sat runnable waiting for a"
        " CPU\n  (other processes; /proc/thread-self/schedstat); GIL waits and blocking"
        " writes stay in it\n  CPU ms: the process's CPU time (all its threads) while it"
        " logged, ticker included\n  steal ms: CPU time the hypervisor took from this"
        " machine during each run (/proc/stat)"
    )
    _print_failures(outs)


def report_delivery(
    thr: dict[str, list[WorkerOutcome]], stall: dict[str, list[WorkerOutcome]]
) -> tuple[dict[str, bool | None], dict[str, bool | None]]:
    """Per library: (on disk == accepted in every run, on disk == logged in every run).

    ``accepted`` is what the library says it took (``lm.stats().accepted`` for
    aiologship; every call for the anchors, which have no drop counter): the
    issue's target. ``logged`` is every call made: a counted drop still fails it.
    """
    rows = []
    ok_acc: dict[str, bool | None] = {}
    ok_all: dict[str, bool | None] = {}
    for lib in LIBS:
        t = _ok(thr.get(lib, []))
        s = _ok(stall.get(lib, []))
        if not t and not s:
            ok_acc[lib] = ok_all[lib] = None
            continue
        runs = t + s

        def accepted(r: dict[str, Any]) -> int:
            st = r.get("stats") or {}
            return int(st.get("accepted", r.get("records", r.get("sent", 0))))

        def logged(r: dict[str, Any]) -> int:
            return int(r.get("records", r.get("sent", 0)))

        ok_acc[lib] = all(r["on_disk"] == accepted(r) for r in runs) and all(
            r["duplicated"] == 0 for r in t
        )
        ok_all[lib] = all(r["lost"] == 0 for r in runs) and all(r["duplicated"] == 0 for r in t)
        rows.append(
            [
                LABELS[lib],
                " ".join(str(r["lost"]) for r in t) or "-",
                " ".join(str((r.get("stats") or {}).get("dropped", "-")) for r in t) or "-",
                " ".join(str(r["duplicated"]) for r in t) or "-",
                " ".join(str(r["reordered"]) for r in t) or "-",
                " ".join(str(r["lost"]) for r in s) or "-",
                "yes" if ok_acc[lib] else "NO",
                "yes" if ok_all[lib] else "NO",
            ]
        )
    print_table(
        "Delivery: per run, records logged but not on disk (thr: throughput, stall: FIFO)",
        [
            "library",
            "lost (thr)",
            "dropped (thr)",
            "dup (thr)",
            "reordered",
            "lost (stall)",
            "disk==accepted",
            "disk==logged",
        ],
        rows,
    )
    print(
        "  dropped: refused on a full queue and counted by the library (lm.stats());"
        " '-': the library\n  has no such counter. disk==accepted is the issue's target;"
        " disk==logged also fails counted drops."
    )
    return ok_acc, ok_all


# =============================================================== parent: main


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 run, shorter stalls (smoke run)")
    p.add_argument("--runs", type=int, default=None, help="runs per library (default 3, quick 1)")
    p.add_argument(
        "--scenario",
        action="append",
        choices=[*SCENARIOS, "delivery", "memory"],
        help="run only these (repeatable); delivery needs throughput and/or stall",
    )
    p.add_argument("--libs", default=",".join(LIBS), help="comma-separated libraries")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--json", type=Path, default=None, help="write every raw result here")
    p.add_argument(
        "--switchinterval",
        type=float,
        default=None,
        help="diagnostic: sys.setswitchinterval(S) in every worker (default: Python's 0.005)",
    )
    a = p.parse_args(argv)
    runs = a.runs or (1 if a.quick else 3)
    scen = set(a.scenario or [*SCENARIOS, "delivery", "memory"])
    if "delivery" in scen and not scen & {"throughput", "stall"}:
        scen |= {"throughput", "stall"}
    libs = [x for x in a.libs.split(",") if x]
    unknown = [x for x in libs if x not in ADAPTERS]
    if unknown:
        p.error(f"unknown libraries {unknown}; choose from {', '.join(LIBS)}")
    common = ["--switchinterval", str(a.switchinterval)] if a.switchinterval else []
    stall_s = 2.0 if a.quick else 3.0
    mem_s = 3.0 if a.quick else 10.0
    mem_rate, mem_q = 50_000.0, 20_000

    print(f"bench_logging: runs={runs} python={sys.version.split()[0]} cpus={os.cpu_count()}")
    print(f"start: {uptime_line()}", flush=True)
    raw: dict[str, Any] = {}
    verdicts: list[str] = []
    thr: dict[str, list[WorkerOutcome]] = {}
    stl: dict[str, list[WorkerOutcome]] = {}

    if "throughput" in scen:
        thr = _rounds("throughput", libs, runs, ["--records", str(a.records), *common], timeout=300)
        med = report_throughput(thr, a.records)
        raw["throughput"] = {k: [o.__dict__ for o in v] for k, v in thr.items()}
        ours = med.get("aiologship", float("nan"))
        # Issue 15's targets (1.3x a logger written in C, 2.2x the stdlib), then the
        # first version's against aiologger.
        for anchor, target in (("picologging", 1.3), ("stdlib", 2.2), ("aiologger", 5.0)):
            base = med.get(anchor, float("nan"))
            ratio = ours / base
            measured = ratio == ratio  # not NaN
            verdicts.append(
                verdict(
                    f"throughput >= {target}x {LABELS[anchor]}",
                    (ratio >= target) if measured else None,
                    f"{ratio:.2f}x ({ours:,.0f} vs {base:,.0f} records/s, median of {runs}; "
                    f"paired {paired_ratio(thr, 'aiologship', anchor, 'rate'):.2f}x; "
                    f"CPU per record {cpu_ratio(thr, anchor):.2f}x less)"
                    if measured
                    else f"no successful run of aiologship and {anchor} (see above; --libs?)",
                )
            )

    if "throughput-json" in scen:
        json_libs = [x for x in ("aiologship-json", "stdlib-json", "loguru-json") if x in ADAPTERS]
        thj = _rounds("throughput", json_libs, runs, ["--records", str(a.records), *common], 300)
        med = report_throughput(thj, a.records, us="aiologship-json")
        raw["throughput-json"] = {k: [o.__dict__ for o in v] for k, v in thj.items()}
        ours = med.get("aiologship-json", float("nan"))
        for anchor, target in (("stdlib-json", 2.0), ("loguru-json", 1.5)):
            ratio = ours / med.get(anchor, float("nan"))
            measured = ratio == ratio
            verdicts.append(
                verdict(
                    f"JSON throughput >= {target}x {LABELS[anchor]}",
                    (ratio >= target) if measured else None,
                    f"{ratio:.2f}x (paired "
                    f"{paired_ratio(thj, 'aiologship-json', anchor, 'rate'):.2f}x)"
                    if measured
                    else "not measured",
                )
            )

    if "caller" in scen:
        cal = _rounds("caller", ["aiologship", "stdlib"], runs, ["--records", "100000"], 120)
        raw["caller"] = {k: [o.__dict__ for o in v] for k, v in cal.items()}
        ours_us = median([r["per_call_us"] for r in _ok(cal["aiologship"])])
        null_us = median([r["per_call_us"] for r in _ok(cal["stdlib"])])
        print_table(
            "Caller cost: CPU time of the calling thread per log call (median of runs)",
            ["call", "us/call", "each run"],
            [
                [
                    "aiologship info (file sink)",
                    ours_us,
                    " ".join(f"{r['per_call_us']:.2f}" for r in _ok(cal["aiologship"])),
                ],
                [
                    "stdlib info (NullHandler)",
                    null_us,
                    " ".join(f"{r['per_call_us']:.2f}" for r in _ok(cal["stdlib"])),
                ],
            ],
        )
        ratio = ours_us / null_us
        verdicts.append(
            verdict(
                "caller cost <= 0.5x a stdlib call to a NullHandler",
                (ratio <= 0.5) if ratio == ratio else None,
                f"{ratio:.2f}x ({ours_us:.2f} vs {null_us:.2f} us; "
                f"paired {paired_ratio(cal, 'aiologship', 'stdlib', 'per_call_us'):.2f}x)",
            )
        )

    if "stall" in scen:
        stl = _rounds(
            "stall",
            ["none", *libs],
            runs,
            ["--rate", "5000", "--duration", str(stall_s), "--pause", "1.0", *common],
            timeout=120,
        )
        report_stall(stl, 5000, stall_s)
        raw["stall"] = {k: [o.__dict__ for o in v] for k, v in stl.items()}
        verdicts.append(stall_verdict(stl))

    if "stall-stdout" in scen:
        sto = _rounds(
            "stall-stdout",
            ["none", *(x for x in ("aiologship", "stdlib") if x in libs)],
            runs,
            ["--rate", "5000", "--duration", str(stall_s), "--pause", "1.0", *common],
            timeout=120,
        )
        report_stall(sto, 5000, stall_s, "stdout on a pipe", STDOUT_LABELS)
        raw["stall-stdout"] = {k: [o.__dict__ for o in v] for k, v in sto.items()}
        verdicts.append(stdout_stall_verdict(sto))

    if "delivery" in scen:
        ok_acc, ok_all = report_delivery(thr, stl)
        our_runs = _ok(thr.get("aiologship", [])) + _ok(stl.get("aiologship", []))
        n = len(our_runs)
        verdicts.append(
            verdict(
                "delivery: aiologship records on disk == records accepted, every run",
                ok_acc.get("aiologship"),
                f"{n} runs (throughput + stall): on disk == lm.stats().accepted, 0 duplicated"
                if ok_acc.get("aiologship")
                else "see the delivery table",
            )
        )
        dropped = [(r.get("stats") or {}).get("dropped", 0) for r in our_runs]
        verdicts.append(
            verdict(
                "delivery (stricter, not an issue target): aiologship drops nothing at its "
                "default settings, every run",
                ok_all.get("aiologship"),
                f"dropped per run: {' '.join(str(d) for d in dropped)}"
                + (
                    " (counted and warned, not silent: the 100k queue filled while the "
                    "pump was short of the GIL)"
                    if any(dropped)
                    else ""
                ),
            )
        )

    if "memory" in scen and "aiologship" in libs:
        verdicts.append(run_memory(runs, mem_rate, mem_s, mem_q, raw, common))

    print(f"\nend: {uptime_line()}")
    print("\nSummary")
    for v in verdicts:
        print("  " + v)
    if a.json:
        a.json.write_text(json.dumps(raw, indent=1, default=str))
    return 0


def stall_verdict(stl: dict[str, list[WorkerOutcome]]) -> str:
    name = "loop stall: aiologship worst 1 ms-ticker lag <= 5 ms"
    res = _ok(stl.get("aiologship", []))
    if not res:
        return verdict(name, None, "aiologship did not run")
    worst = median([r["worst_lag_ms"] for r in res])
    adj = median([r["worst_adj_ms"] for r in res])
    floor = median([r["worst_lag_ms"] for r in _ok(stl.get("none", []))])
    each = " ".join(f"{r['worst_lag_ms']:.1f}/{r['worst_adj_ms']:.1f}" for r in res)
    detail = (
        f"median worst lag {worst:.2f} ms, scheduler-adjusted {adj:.2f} ms "
        f"(each run raw/adj: {each}); no-logging floor {floor:.2f} ms"
    )
    if floor <= 5.0 or adj != adj:
        return verdict(name, worst <= 5.0, detail)
    # With no logger at all the loop already lags > 5 ms: the raw figure measures the
    # machine, not the library. Judge on the lag the library can be blamed for.
    return verdict(name, adj <= 5.0, detail + "; busy machine: judged on the adjusted lag")


def stdout_stall_verdict(sto: dict[str, list[WorkerOutcome]]) -> str:
    name = "loop stall, stdout pipe: aiologship worst lag within 1.5 ms of the no-logging floor"
    res = _ok(sto.get("aiologship", []))
    floor_runs = _ok(sto.get("none", []))
    if not res or not floor_runs:
        return verdict(name, None, "aiologship or the no-logging floor did not run")

    def med(runs: list[dict[str, Any]], key: str) -> float:
        return median([r[key] for r in runs])

    worst, floor = med(res, "worst_lag_ms"), med(floor_runs, "worst_lag_ms")
    adj, floor_adj = med(res, "worst_adj_ms"), med(floor_runs, "worst_adj_ms")
    stdlib = _ok(sto.get("stdlib", []))
    delivered = all(r["on_disk"] == r["sent"] for r in res)
    detail = (
        f"median worst lag {worst:.2f} ms vs floor {floor:.2f} ms ({worst - floor:+.2f} ms); "
        f"scheduler-adjusted {adj:.2f} vs {floor_adj:.2f} ms ({adj - floor_adj:+.2f} ms); "
        f"stdlib StreamHandler {med(stdlib, 'worst_lag_ms') if stdlib else float('nan'):.1f} ms;"
        f" every record read: {'yes' if delivered else 'NO'}"
    )
    if floor <= 5.0 or adj != adj:
        return verdict(name, worst - floor <= 1.5 and delivered, detail)
    # The floor alone lags > 5 ms: the raw figures measure the machine (see stall_verdict).
    return verdict(
        name,
        adj - floor_adj <= 1.5 and delivered,
        detail + "; busy machine: judged on the adjusted lags",
    )


def run_memory(
    runs: int, rate: float, stall: float, qsize: int, raw: dict[str, Any], common: list[str]
) -> str:
    cal = [_worker(["calibrate", "none", "--queue-size", str(qsize)], 120) for _ in range(runs)]
    bpr = median([r["bytes_per_record"] for r in _ok(cal)])
    outs = []
    for r in range(runs):
        o = _worker(
            [
                "memory",
                "aiologship",
                "--rate",
                str(rate),
                "--duration",
                str(stall),
                "--queue-size",
                str(qsize),
                *common,
            ],
            timeout=stall + 180,
        )
        print(
            f"  [memory round {r + 1}/{runs}] aiologship: "
            f"{'ok' if o.ok else 'FAILED (' + o.error + ')'}",
            flush=True,
        )
        outs.append(o)
    raw["memory"] = {
        "calibrate": [o.__dict__ for o in cal],
        "aiologship": [o.__dict__ for o in outs],
    }
    res = _ok(outs)
    # Allowance beyond the queue: a batch being formatted/written, thread stacks,
    # allocator slack. Fixed, so it cannot hide growth proportional to what was offered.
    allowance = 16 * 2**20
    bound = qsize * bpr + allowance
    rows: list[list[Any]] = []
    for run in res:
        st = run["stats"]
        rows.append(
            [
                f"run (load {run['load']:.1f})",
                run["rss_growth"] / 2**20,
                bound / 2**20,
                run["sent"] * bpr / 2**20,
                run["sent"],
                run["achieved_rate"],
                st.get("dropped", "?"),
                st.get("accepted", "?"),
                run["on_disk"],
            ]
        )
    print_table(
        f"Memory: aiologship, FIFO sink stalled {stall:g} s, {rate:,.0f} rec/s offered, "
        f"queue_size={qsize:,} drop_newest; {bpr:.0f} bytes/record (calibrated)",
        [
            "",
            "RSS growth MiB",
            "bound MiB",
            "unbounded MiB",
            "offered",
            "rec/s",
            "dropped",
            "accepted",
            "on disk",
        ],
        rows,
    )
    if not res:
        return verdict("memory: RSS growth within queue bound", None, _errors(outs))
    growth = median([r["rss_growth"] for r in res])
    # Overflow warnings are the library's own lines (no marker); whether they count
    # as "accepted" is the library's choice, so accept either reading, nothing looser.
    delivered = all(r["stats"].get("accepted") in (r["on_disk"], r["lines"]) for r in res)
    detail = (
        f"median growth {growth / 2**20:.1f} MiB <= bound {bound / 2**20:.1f} MiB "
        f"({qsize:,} x {bpr:.0f} B + {allowance / 2**20:.0f} MiB); "
        f"dropped {median([r['stats'].get('dropped', float('nan')) for r in res]):,.0f}; "
        f"accepted on disk: {'yes' if delivered else 'NO'}"
    )
    return verdict("memory: RSS growth within queue bound", growth <= bound, detail)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except KeyboardInterrupt:
        sys.exit(130)
