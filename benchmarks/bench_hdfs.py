"""Upload throughput to a real HDFS mini-cluster.

    python benchmarks/bench_hdfs.py            # 1 GiB in 4 files + 2,000 small files
    python benchmarks/bench_hdfs.py --quick    # 64 MiB in 4 files + 20 small files
    AIOLOGSHIP_BENCH_QUICK=1 python benchmarks/bench_hdfs.py

The mini-cluster runs 2 DataNodes with replication 2 (see CLUSTER_CONF). Each case
uploads the same local files into a fresh HDFS folder; the median of the runs
is reported with the ratio to the anchor measured in the same run:

- anchor ``hdfs-native plain``: ``hdfs_native.Client.create`` + 1 MiB writes, no pyarrow;
- ``native driver (pyarrow.fs)``: our hdfs-native handler through ``pyarrow.fs``, the
  calls the copy engine makes (temporary name, write, rename);
- ``native driver (engine)``: one ``CopyEngine.flush()`` cycle over the same files;
- ``webhdfs driver (pyarrow.fs)``: the WebHDFS handler, same calls.

Then the NameNode is stopped and a copy started against it, once per driver: the
worst lag of a 1 ms ticker on that copy's loop, next to an idle loop's.

Targets from the issue: native driver >= 0.9x the plain hdfs-native upload; loop lag
with the NameNode down <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import LagTicker  # noqa: E402

from aiologship._config import HdfsDriver  # noqa: E402
from aiologship._fs import resolve_destination  # noqa: E402

CHUNK = 1 << 20

# The same for every contender. A close calls complete() on the NameNode, which says
# "not yet" until a DataNode has reported the last block; clients then back off
# 0.4-0.5 s, so with the tests' settings (replication 1) every small file costs
# ~0.5 s whatever the driver (2,000 files: 17 minutes per case). With replication 2
# over the two DataNodes, the NameNode may close a file whose last block is
# committed but not yet reported (HDFS-8999), as production clusters with
# replication > 1 can: ~12 ms per small file.
CLUSTER_CONF = {
    "dfs.replication": "2",
    "dfs.namenode.file.close.num-committed-allowed": "1",
}


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bench_minidfs", ROOT / "tests/minidfs/minidfs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_files(base: Path, big: int, big_size: int, small: int, small_size: int) -> list[Path]:
    base.mkdir(parents=True, exist_ok=True)
    files = []
    block = os.urandom(CHUNK)
    for i in range(big):
        path = base / f"big{i}.log"
        with open(path, "wb") as f:
            left = big_size
            while left > 0:
                n = min(left, CHUNK)
                f.write(block[:n])
                left -= n
        files.append(path)
    for i in range(small):
        path = base / f"small{i:05d}.log"
        path.write_bytes(block[: small_size - 8] + f"{i:08d}".encode())
        files.append(path)
    return files


def upload_plain(uri: str, files: list[Path], folder: str) -> None:
    import hdfs_native

    client = hdfs_native.Client(uri)
    client.mkdirs(folder, 0o755, True)
    for path in files:
        with open(path, "rb") as src, client.create(f"{folder}/{path.name}") as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)


def upload_pyarrow(uri: str, driver: HdfsDriver, files: list[Path], folder: str) -> None:
    dest = resolve_destination(uri + folder, hdfs_driver=driver)
    fs = dest.filesystem
    fs.create_dir(folder, recursive=True)
    for path in files:
        tmp, final = f"{folder}/.{path.name}.tmp", f"{folder}/{path.name}"
        with open(path, "rb") as src, fs.open_output_stream(tmp) as out:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        fs.move(tmp, final)


def upload_engine(uri: str, driver: HdfsDriver, src_dir: Path, folder: str, state: Path) -> None:
    from aiologship._copy import CopyEngine, CopySpec

    async def main() -> None:
        spec = CopySpec.from_params(
            copy_name=f"bench{folder.replace('/', '_')}",
            path_patterns=[str(src_dir / "*.log")],
            hdfs_destination=uri + folder,
            copy_interval=None,
        )
        engine = CopyEngine(spec, state_dir=state, hdfs_driver=driver)
        await engine.open()
        result = await engine.flush()
        await engine.stop(final_cycle=False)
        if not result.ok:
            raise RuntimeError(f"engine cycle failed: {result}")

    asyncio.run(main())


def outage_lag(
    uri: str, driver: HdfsDriver, src_dir: Path, state: Path, seconds: float
) -> tuple[float, float]:
    """Worst lag of a 1 ms ticker on the loop that runs a copy whose NameNode is down
    (target: at most 5 ms): failing cycles every 0.5 s, each retried with backoff.
    Returns (raw, adjusted) in seconds; adjusted takes out the time the loop thread
    sat runnable waiting for a CPU (other processes: see LagTicker)."""
    from aiologship._copy import CopyEngine, CopySpec

    async def main() -> tuple[float, float]:
        spec = CopySpec.from_params(
            copy_name=f"outage-{driver.value}",
            path_patterns=[str(src_dir / "*.log")],
            hdfs_destination=uri + f"/bench/outage-{driver.value}",
            copy_interval=0.5,
            retry_delay=0.05,
        )
        engine = CopyEngine(spec, state_dir=state, hdfs_driver=driver)
        await engine.open()
        runner = asyncio.create_task(engine.run())
        # The first failure (connection refused, resolver built): then measure.
        deadline = time.monotonic() + 30
        while engine.status().consecutive_failures == 0:
            if time.monotonic() > deadline:
                raise RuntimeError("no failure seen in 30 s with the NameNode down")
            await asyncio.sleep(0.01)
        ticker = LagTicker(0.001)
        ticker.start()
        await asyncio.sleep(seconds)
        await ticker.stop()
        failures = engine.status().consecutive_failures
        runner.cancel()
        try:
            await runner
        except asyncio.CancelledError:
            pass
        await engine.stop(final_cycle=False)
        if failures < 2:
            raise RuntimeError(f"only {failures} failing cycles while measuring")
        return _worst(ticker)

    return asyncio.run(main())


def idle_lag(seconds: float) -> tuple[float, float]:
    async def main() -> tuple[float, float]:
        ticker = LagTicker(0.001)
        ticker.start()
        await asyncio.sleep(seconds)
        await ticker.stop()
        return _worst(ticker)

    return asyncio.run(main())


def _worst(ticker: LagTicker) -> tuple[float, float]:
    summary = ticker.summary()
    return summary["worst_lag_ms"] / 1000, summary["worst_adj_ms"] / 1000


def run_outage(cluster: Any, src: Path, runs: int, state: Path, seconds: float) -> None:
    cluster.command("stop-namenode")
    try:
        worst: dict[str, list[tuple[float, float]]] = {
            "idle loop (anchor)": [],
            "native": [],
            "webhdfs": [],
        }
        for run in range(runs):
            worst["idle loop (anchor)"].append(idle_lag(seconds))
            for driver in (HdfsDriver.NATIVE, HdfsDriver.WEBHDFS):
                worst[driver.value].append(
                    outage_lag(cluster.uri, driver, src, state / f"o{run}", seconds)
                )
    finally:
        cluster.command("start-namenode")
    print(
        f"NameNode down at start: worst 1 ms-ticker lag over {seconds:g} s, median of {runs};"
        " adj = minus the loop thread's wait for a CPU"
    )
    for name, samples in worst.items():
        raw = statistics.median(r for r, _ in samples) * 1000
        adj = statistics.median(a for _, a in samples) * 1000
        each = " ".join(f"{r * 1000:.1f}/{a * 1000:.1f}" for r, a in samples)
        verdict = "" if name.startswith("idle") else "  (target <= 5 ms)"
        print(f"  {name:20s} {raw:6.1f} ms, adj {adj:5.1f} ms  runs raw/adj: {each}{verdict}")


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_set(
    uri: str, label: str, src: Path, files: list[Path], runs: int, state: Path
) -> dict[str, list[float]]:
    import hdfs_native

    cases: dict[str, Callable[[str], None]] = {
        "hdfs-native plain": lambda d: upload_plain(uri, files, d),
        "native driver (pyarrow.fs)": lambda d: upload_pyarrow(uri, HdfsDriver.NATIVE, files, d),
        "native driver (engine)": lambda d: upload_engine(uri, HdfsDriver.NATIVE, src, d, state),
        "webhdfs driver (pyarrow.fs)": lambda d: upload_pyarrow(uri, HdfsDriver.WEBHDFS, files, d),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    cleaner = hdfs_native.Client(uri)
    for run in range(runs):
        # Interleave the cases so drift (other load on the machine) hits all alike.
        for i, (name, fn) in enumerate(cases.items()):
            folder = f"/bench/{label}/r{run}c{i}"
            times[name].append(timed(lambda fn=fn, folder=folder: fn(folder)))
            cleaner.delete(folder, True)
    return times


def report(title: str, times: dict[str, list[float]], files: list[Path]) -> None:
    total = sum(p.stat().st_size for p in files)
    mib = total / (1 << 20)
    anchor = statistics.median(times["hdfs-native plain"])
    runs = len(times["hdfs-native plain"])
    print(f"{title}: {len(files)} files, {mib:.1f} MiB, median of {runs} runs")
    for name, samples in times.items():
        med = statistics.median(samples)
        print(
            f"  {name:30s} {med:7.2f}s  {mib / med:7.1f} MiB/s  {len(files) / med:7.1f} files/s"
            f"  {anchor / med:5.2f}x plain hdfs-native"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only", choices=["upload", "outage"], default=None, help="run one of the two parts"
    )
    args = parser.parse_args()
    quick = args.quick or os.environ.get("AIOLOGSHIP_BENCH_QUICK") == "1"
    big_size = (16 if quick else 256) << 20
    small = 20 if quick else 2000
    minidfs = _harness()
    missing = minidfs.missing_tools()
    if missing:
        print(f"bench_hdfs skipped: needs {' and '.join(missing)}")
        return
    work = Path(tempfile.mkdtemp(prefix="bench-hdfs-"))
    try:
        big_files = make_files(work / "big", 4, big_size, 0, 0)
        small_files = make_files(work / "small", 0, 0, small, 4096)
        started = time.monotonic()
        # Full JIT for the benchmark (the tests' JVM stops at C1 to start faster).
        cluster = minidfs.MiniDfs.start(
            work / "dfs",
            block_size=128 << 20,
            jvm_flags=("-Xmx1g", "-XX:+UseSerialGC"),
            conf=CLUSTER_CONF,
        )
        print(f"mini-cluster up in {time.monotonic() - started:.1f}s")
        os.environ["HADOOP_CONF_DIR"] = str(cluster.conf_dir)
        try:
            if args.only in (None, "upload"):
                big = run_set(cluster.uri, "big", work / "big", big_files, args.runs, work / "s1")
                few = run_set(
                    cluster.uri, "small", work / "small", small_files, args.runs, work / "s2"
                )
                report("large files", big, big_files)
                report("small files", few, small_files)
            if args.only in (None, "outage"):
                run_outage(cluster, work / "small", max(args.runs, 3), work / "s3", 3.0)
        finally:
            cluster.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
