"""Copy engine benchmarks, as ratios against anchors measured in the same run.

    python benchmarks/bench_copy.py             # the target sizes (needs ~4 GiB of disk)
    python benchmarks/bench_copy.py --quick     # small sizes, a few seconds

Each figure is the median of --runs runs. Anchors: ``cp -r`` and
``pyarrow.fs.copy_files`` on the same trees. Targets:

    big files, local -> local          >= 0.8x cp -r throughput
    many small files, first cycle      >= 1.0x pyarrow.fs.copy_files
    unchanged cycle over N files       <= 0.3 s
    1 MiB appended to a 1 GiB file     ships ~1 MiB, <= 0.05 s
    event-loop lag during a 1 GiB copy <= 5 ms
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

try:
    import aiologship  # noqa: F401
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import anyio
import pyarrow.fs as pafs
from _common import LagTicker

from aiologship._config import parse_size
from aiologship._copy import CopyEngine, CopySpec

MiB = 1 << 20


def fill(path: Path, size: int, block: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            chunk = block[: min(len(block), left)]
            f.write(chunk)
            left -= len(chunk)


def block_of(size: int) -> bytes:
    line = b"2026-01-01T00:00:00.000 INFO app: a log line with some payload 0123456789\n"
    return (line * (size // len(line) + 1))[:size]


def fresh(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def engine_cycle(
    src_pattern: str, dst: Path, state: Path, root: Path | None = None, preserve: bool = False
) -> tuple[float, Any]:
    spec = CopySpec.from_params(
        copy_name="bench",
        path_patterns=[src_pattern],
        hdfs_destination=str(dst),
        root_dir=None if root is None else str(root),
        preserve_structure=preserve,
        copy_interval=None,
    )

    async def main() -> tuple[float, Any]:
        engine = CopyEngine(spec, state_dir=state)
        await engine.open()
        start = time.perf_counter()
        result = await engine.flush()
        elapsed = time.perf_counter() - start
        await engine.stop(final_cycle=False)
        return elapsed, result

    return anyio.run(main)


def copy_files(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True)  # copy_files creates subfolders, not the top one
    pafs.copy_files(str(src), str(dst))


def median(values: list[float]) -> float:
    return statistics.median(values)


def bench_big(work: Path, files: int, size: int, runs: int) -> None:
    src = work / "big-src"
    block = block_of(8 * MiB)
    for i in range(files):
        fill(src / f"big{i}.log", size, block)
    total = files * size
    cp_t, pa_t, ours_t = [], [], []
    for _ in range(runs):
        dst = work / "big-dst"
        fresh(dst)
        cp_t.append(
            timed(lambda dst=dst: subprocess.run(["cp", "-r", str(src), str(dst)], check=True))
        )
        fresh(dst)
        pa_t.append(timed(lambda dst=dst: copy_files(src, dst)))
        fresh(dst)
        fresh(work / "state")
        elapsed, result = engine_cycle(str(src / "*.log"), dst, work / "state")
        assert result.ok and result.bytes_shipped == total, result
        ours_t.append(elapsed)
        fresh(dst)
    cp, pa, ours = median(cp_t), median(pa_t), median(ours_t)
    print(
        f"big files    {files} x {size // MiB} MiB: cp -r {total / cp / MiB:7.0f} MiB/s, "
        f"copy_files {total / pa / MiB:7.0f} MiB/s, aiologship {total / ours / MiB:7.0f} MiB/s"
        f"  -> {cp / ours:.2f}x cp -r (target >= 0.8), {pa / ours:.2f}x copy_files"
    )
    shutil.rmtree(src)


def bench_small(work: Path, files: int, size: int, dirs: int, runs: int) -> None:
    src = work / "small-src"
    data = block_of(size)
    for i in range(files):
        p = src / f"d{i % dirs:02d}" / f"f{i:05d}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    pa_t, ours_t = [], []
    for _ in range(runs):
        dst = work / "small-dst"
        fresh(dst)
        pa_t.append(timed(lambda dst=dst: copy_files(src, dst)))
        fresh(dst)
        fresh(work / "state")
        elapsed, result = engine_cycle(
            str(src / "*" / "*.log"), dst, work / "state", root=src, preserve=True
        )
        assert result.ok and result.files_shipped == files, result
        ours_t.append(elapsed)
        fresh(dst)
    pa, ours = median(pa_t), median(ours_t)
    print(
        f"small files  {files} x {size // 1024} KiB in {dirs} dirs: copy_files {pa:.3f} s, "
        f"aiologship {ours:.3f} s -> {pa / ours:.2f}x copy_files (target >= 1.0)"
    )
    shutil.rmtree(src)


def bench_unchanged(work: Path, files: int, runs: int) -> None:
    src = work / "nochange-src"
    for i in range(files):
        p = src / f"d{i % 50:02d}" / f"f{i:05d}.log"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x\n")
    dst, state = work / "nochange-dst", work / "state"
    fresh(dst)
    fresh(state)
    spec = CopySpec.from_params(
        copy_name="bench",
        path_patterns=[str(src / "*" / "*.log")],
        hdfs_destination=str(dst),
        root_dir=str(src),
        preserve_structure=True,
        copy_interval=None,
    )

    async def main() -> list[float]:
        engine = CopyEngine(spec, state_dir=state)
        await engine.open()
        await engine.flush()
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            result = await engine.flush()
            times.append(time.perf_counter() - start)
            assert result.ok and result.files_shipped == 0 and result.files_scanned == files
        await engine.stop(final_cycle=False)
        return times

    t = median(anyio.run(main))
    print(f"unchanged    cycle over {files} files: {t:.3f} s (target <= 0.3 s)")
    shutil.rmtree(src)
    fresh(dst)


def bench_append_and_lag(work: Path, base: int, added: int, runs: int) -> None:
    src = work / "append-src"
    fill(src / "huge.log", base, block_of(8 * MiB))
    dst, state = work / "append-dst", work / "state"
    spec = CopySpec.from_params(
        copy_name="bench",
        path_patterns=[str(src / "*.log")],
        hdfs_destination=str(dst),
        copy_interval=None,
    )
    extra = block_of(added)

    def raw_copy() -> None:
        # Anchor: the kernel copy alone, in a worker thread, no engine around it.
        fd_in = os.open(src / "huge.log", os.O_RDONLY)
        fd_out = os.open(work / "raw-copy", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        pos = 0
        size = os.fstat(fd_in).st_size
        while pos < size:
            pos += os.copy_file_range(fd_in, fd_out, min(8 * MiB, size - pos), pos, pos)
        os.close(fd_in)
        os.close(fd_out)

    async def worst_lag_during(work_fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
        """The 1 ms ticker's worst lag while ``work_fn`` runs on the same loop."""
        ticker = LagTicker(0.001)
        ticker.start()
        try:
            result = await work_fn()
        finally:
            await ticker.stop()
        return ticker.summary()["worst_lag_ms"] / 1000, result

    async def one_copy() -> tuple[float, float, float, float]:
        """A fresh destination: the full copy's lag, and its two anchors."""
        fresh(dst)
        fresh(state)
        raw, _ = await worst_lag_during(lambda: anyio.to_thread.run_sync(raw_copy))
        os.unlink(work / "raw-copy")
        engine = CopyEngine(spec, state_dir=state)
        await engine.open()
        start = time.perf_counter()
        busy, first = await worst_lag_during(engine.flush)
        seconds = time.perf_counter() - start
        await engine.stop(final_cycle=False)
        assert first.bytes_shipped == os.path.getsize(src / "huge.log"), first
        # The same probe on an idle loop for as long: the machine's own noise.
        idle, _ = await worst_lag_during(lambda: anyio.sleep(seconds))
        return busy, raw, idle, seconds

    async def appends() -> tuple[list[float], list[int]]:
        engine = CopyEngine(spec, state_dir=state)
        await engine.open()
        await engine.flush()  # already shipped by the last full copy: nothing to do
        times, sent = [], []
        for _ in range(runs):
            with open(src / "huge.log", "ab") as f:
                f.write(extra)
            start = time.perf_counter()
            result = await engine.flush()
            times.append(time.perf_counter() - start)
            sent.append(result.bytes_shipped)
        await engine.stop(final_cycle=False)
        return times, sent

    async def main() -> tuple[list[tuple[float, float, float, float]], list[float], list[int]]:
        copies = [await one_copy() for _ in range(runs)]
        times, sent = await appends()
        return copies, times, sent

    copies, times, sent = anyio.run(main)
    busy = [c[0] * 1000 for c in copies]
    print(
        f"append       {added // MiB} MiB to a {base // MiB} MiB file: ships "
        f"{statistics.median(sent) / MiB:.2f} MiB in {median(times):.4f} s (target <= 0.05 s)"
    )
    print(
        f"loop lag     during a {base // MiB} MiB copy: median worst {median(busy):.1f} ms "
        f"(target <= 5 ms; runs {' '.join(f'{b:.1f}' for b in busy)}); anchors, median worst: "
        f"bare copy_file_range thread {median([c[1] for c in copies]) * 1000:.1f} ms, "
        f"idle loop {median([c[2] for c in copies]) * 1000:.1f} ms; "
        f"copy {median([c[3] for c in copies]):.2f} s"
    )
    shutil.rmtree(src)
    fresh(dst)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    p.add_argument("--runs", type=int, default=None, help="runs per figure (default 5, quick 3)")
    p.add_argument("--big-files", type=int, default=4)
    p.add_argument("--big-size", default="256 MiB")
    p.add_argument("--small-files", type=int, default=5000)
    p.add_argument("--small-size", default="8 KiB")
    p.add_argument("--small-dirs", type=int, default=20)
    p.add_argument("--unchanged-files", type=int, default=10_000)
    p.add_argument("--append-base", default="1 GiB")
    p.add_argument("--append-size", default="1 MiB")
    p.add_argument(
        "--only",
        action="append",
        choices=["big", "small", "unchanged", "append"],
        help="run only these figures (repeatable)",
    )
    p.add_argument("--workdir", default=None, help="where the trees go (default: a temp dir)")
    args, _unknown = p.parse_known_args(argv)  # nox passes its posargs to every script
    if args.quick:
        args.big_size, args.small_files, args.unchanged_files = "16 MiB", 1000, 2000
        args.append_base = "64 MiB"
    runs = args.runs or (3 if args.quick else 5)
    with tempfile.TemporaryDirectory(prefix="bench-copy-", dir=args.workdir) as tmp:
        work = Path(tmp)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"aiologship copy benchmarks (median of {runs} runs, in {work}; "
            f"{os.cpu_count()} CPUs, load average {load})"
        )
        only = set(args.only or ["big", "small", "unchanged", "append"])
        if "big" in only:
            bench_big(work, args.big_files, parse_size(args.big_size, "big_size"), runs)
        if "small" in only:
            bench_small(
                work,
                args.small_files,
                parse_size(args.small_size, "small_size"),
                args.small_dirs,
                runs,
            )
        if "unchanged" in only:
            bench_unchanged(work, args.unchanged_files, runs)
        if "append" in only:
            bench_append_and_lag(
                work,
                parse_size(args.append_base, "append_base"),
                parse_size(args.append_size, "append_size"),
                runs,
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
