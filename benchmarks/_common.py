"""Shared helpers for the benchmarks: timing, medians, tables, loop lag, RSS, FIFOs.

Nothing here imports aiologship: the helpers measure any library the same way.
Every benchmark figure is produced by a worker subprocess (fresh interpreter, so
state and memory never leak from one library into the next) that prints one JSON
line; the parent collects those lines, takes medians and prints tables.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULT_PREFIX = "BENCH-RESULT "
PAGE = os.sysconf("SC_PAGE_SIZE")


# ------------------------------------------------------------------ load / timing


def load_avg() -> float:
    """One-minute load average: printed next to every figure (2 shared cores)."""
    return os.getloadavg()[0]


def uptime_line() -> str:
    try:
        out = subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout
        return out.strip()
    except (OSError, subprocess.SubprocessError):
        one, five, fifteen = os.getloadavg()
        return f"load average: {one:.2f}, {five:.2f}, {fifteen:.2f}"


def cpu_seconds() -> float:
    """User+system CPU of this process, all threads: a figure less sensitive to load."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


@dataclass
class Timer:
    wall: float = 0.0
    cpu: float = 0.0


@contextmanager
def timed() -> Iterator[Timer]:
    t = Timer()
    w0, c0 = time.perf_counter(), cpu_seconds()
    try:
        yield t
    finally:
        t.wall = time.perf_counter() - w0
        t.cpu = cpu_seconds() - c0


def gc_collect() -> None:
    """Collect twice: the first pass can free objects whose finalizers free more."""
    gc.collect()
    gc.collect()


def median(values: Sequence[float]) -> float:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else float("nan")


# ------------------------------------------------------------------ files


def count_lines(path: Path | str, marker: bytes | None = None) -> tuple[int, int]:
    """(all lines, lines containing ``marker``) of a file, read in 1 MiB blocks."""
    total = marked = 0
    carry = b""
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            data = carry + block
            lines = data.split(b"\n")
            carry = lines.pop()
            total += len(lines)
            if marker is not None:
                marked += sum(1 for ln in lines if marker in ln)
    if carry:
        total += 1
        if marker is not None and marker in carry:
            marked += 1
    return total, marked


# ------------------------------------------------------------------ loop lag


class LagTicker:
    """A task that sleeps 1 ms in a loop and records how late each wake-up was.

    Honest by construction: each lag is ``actual wake-up - (sleep start + period)``
    measured with ``perf_counter``, so a loop blocked by a write shows up as one
    long wake-up; ``missed_ticks`` counts the 1 ms wake-ups that never came.

    On a busy machine most lag is the OS running other processes while the loop
    thread is runnable. Linux counts that per thread (``run_delay``, 2nd field of
    ``/proc/thread-self/schedstat``), so each tick also gets an *adjusted* lag: the
    lag minus the time the loop thread spent waiting for a CPU. Waiting for the GIL
    or in a blocking ``write()`` is sleeping, not runnable: it stays in the
    adjusted figure, which is what a library can be blamed for.
    """

    def __init__(self, period: float = 0.001) -> None:
        self.period = period
        self.lags: list[float] = []
        self.woke: list[float] = []  # wake-up times (perf_counter), to place the worst lag
        self.adjusted: list[float] = []  # lag minus the loop thread's run-queue wait
        self._schedstat: int | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = False
        self._t0 = 0.0
        self._t1 = 0.0
        self._steal0 = self._steal1 = 0.0

    async def _run(self) -> None:
        period, lags, woke, adjusted = self.period, self.lags, self.woke, self.adjusted
        clock = time.perf_counter
        fd = self._schedstat
        pread = os.pread
        while not self._stop:
            before = clock()
            waited0 = int(pread(fd, 64, 0).split()[1]) if fd is not None else 0
            await asyncio.sleep(period)
            now = clock()
            lag = now - before - period
            lags.append(lag)
            woke.append(now)
            if fd is not None:
                waited = (int(pread(fd, 64, 0).split()[1]) - waited0) / 1e9
                adjusted.append(max(0.0, lag - waited))

    def start(self) -> None:
        # Opened on the loop thread, so "thread-self" is the loop thread.
        try:
            self._schedstat = os.open("/proc/thread-self/schedstat", os.O_RDONLY)
        except OSError:
            self._schedstat = None  # not Linux or no schedstats: raw lag only
        self._t0 = time.perf_counter()
        self._steal0 = steal_ms()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stop = True
        self._t1 = time.perf_counter()
        self._steal1 = steal_ms()
        if self._task is not None:
            await self._task
        if self._schedstat is not None:
            os.close(self._schedstat)

    def summary(self) -> dict[str, Any]:
        lags = sorted(self.lags) or [0.0]
        span = self._t1 - self._t0
        worst_i = max(range(len(self.lags)), key=self.lags.__getitem__, default=None)
        worst_at = self.woke[worst_i] - self._t0 if worst_i is not None else 0.0

        def pct(p: float) -> float:
            return lags[min(len(lags) - 1, int(p * len(lags)))]

        return {
            "worst_lag_ms": lags[-1] * 1000,
            # NaN when schedstat is unavailable.
            "worst_adj_ms": max(self.adjusted) * 1000 if self.adjusted else float("nan"),
            "adj_over_5ms": sum(1 for lag in self.adjusted if lag > 0.005),
            # When (s after start) each adjusted lag > 5 ms came: bursts or steady?
            "adj_over_5ms_at": [
                round(w - self._t0, 3)
                for w, lag in zip(self.woke, self.adjusted, strict=False)
                if lag > 0.005
            ],
            # When the worst wake-up came (s after the ticker started): with the FIFO
            # reader resuming ~1 s in, tells a stall at the resume from random noise.
            "worst_at_s": worst_at,
            "over_5ms": sum(1 for lag in lags if lag > 0.005),
            "p99_lag_ms": pct(0.99) * 1000,
            "median_lag_ms": pct(0.5) * 1000,
            "ticks": len(self.lags),
            # 1 ms slots in which the loop could not wake the ticker at all.
            "missed_ticks": sum(int(lag / self.period) for lag in self.lags),
            # Each tick costs at least one period; fewer ticks than span/period
            # means the loop was held somewhere.
            "expected_ticks": int(span / self.period),
            # CPU time the hypervisor took from this machine's vCPUs meanwhile (all
            # of them: a thread holding the GIL on a stolen vCPU delays the loop too).
            "steal_ms": self._steal1 - self._steal0,
        }


def steal_ms() -> float:
    """``steal`` of ``/proc/stat`` (all CPUs) in ms; NaN where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
        return int(fields[8]) * 1000 / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


# ------------------------------------------------------------------ RSS


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class RssSampler:
    """Samples this process's RSS from a thread every ``interval`` seconds."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), rss_bytes()))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    @property
    def peak(self) -> int:
        return max((s for _, s in self.samples), default=rss_bytes())


# ------------------------------------------------------------------ FIFO reader

_FIFO_READER = r"""
import sys, time
path, first, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
marker = sys.argv[4].encode()
got = lines = marked = 0
carry = b""

def feed(chunk):
    global carry, lines, marked
    parts = (carry + chunk).split(b"\n")
    carry = parts.pop()
    lines += len(parts)
    marked += sum(1 for p in parts if marker in p)

with open(path, "rb", buffering=0) as f:
    while got < first:
        chunk = f.read(min(65536, first - got))
        if not chunk:
            break
        got += len(chunk)
        feed(chunk)
    time.sleep(pause)
    while chunk := f.read(1 << 20):
        got += len(chunk)
        feed(chunk)
if carry:
    lines += 1
    marked += marker in carry
print(f"done {got} {lines} {marked}", flush=True)
"""


class FifoReader:
    """A FIFO whose reader (a subprocess, so it takes no GIL from the measured
    process) reads the first ``first`` bytes, pauses ``pause`` seconds, then reads
    to EOF and reports (bytes, lines, lines with ``marker``)."""

    def __init__(self, path: Path, *, first: int, pause: float, marker: str) -> None:
        self.path = path
        os.mkfifo(path)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FIFO_READER, str(path), str(first), str(pause), marker],
            stdout=subprocess.PIPE,
            text=True,
        )

    def result(self, timeout: float) -> tuple[int, int, int]:
        """Wait for EOF (every writer closed) and return (bytes, lines, marked)."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate(timeout=5)
            raise
        for line in out.splitlines():
            if line.startswith("done "):
                b, n, m = (int(x) for x in line.split()[1:])
                return b, n, m
        raise RuntimeError(f"FIFO reader gave no result: {out!r}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


class PipeReader(FifoReader):
    """The same reader on a pipe: its stdin is the pipe's read end ``fd`` (the
    writer is the measured process's own stdout)."""

    def __init__(self, fd: int, *, first: int, pause: float, marker: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _FIFO_READER, "/dev/stdin", str(first), str(pause), marker],
            stdin=fd,
            stdout=subprocess.PIPE,
            text=True,
        )


# ------------------------------------------------------------------ workers


def emit_result(result: dict[str, Any]) -> None:
    """Worker side: print the one JSON line the parent looks for."""
    print(RESULT_PREFIX + json.dumps(result), flush=True)


@dataclass
class WorkerOutcome:
    ok: bool
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""


def run_worker(args: Sequence[str], *, timeout: float) -> WorkerOutcome:
    """Run ``python <args>`` in a fresh interpreter (repo root on the path); parse its
    result line. Never raises: a crash, a timeout or a missing line is an outcome."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    try:
        proc = subprocess.run(
            [sys.executable, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO_ROOT,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return WorkerOutcome(False, error=f"timed out after {timeout:.0f}s")
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return WorkerOutcome(True, json.loads(line[len(RESULT_PREFIX) :]))
    # The last line of a traceback names the exception: enough for a table cell.
    tail = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
    last = tail[-1].strip() if tail else "no output"
    return WorkerOutcome(False, error=f"exit {proc.returncode}: {last}")


# ------------------------------------------------------------------ tables


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A plain fixed-width table (no dependency), right-aligned numbers."""
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print()
    print(title)
    print("-" * len(title))
    for n, row in enumerate(cells):
        parts = []
        for i, c in enumerate(row):
            parts.append(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]))
        print("  ".join(parts).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))
    sys.stdout.flush()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if v != v:  # NaN
            return "n/a"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def verdict(name: str, ok: bool | None, detail: str) -> str:
    """One PASS/FAIL line per target; ``ok=None`` means it could not be measured."""
    word = "PASS" if ok else ("FAIL" if ok is not None else "FAIL (not measured)")
    line = f"{word}: {name}: {detail}"
    print(line, flush=True)
    return line
