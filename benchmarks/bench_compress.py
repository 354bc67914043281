"""Compressed shipping, as ratios against anchors measured in the same run.

    python benchmarks/bench_compress.py                  # 1 GiB of JSON lines
    python benchmarks/bench_compress.py --size 256MiB --runs 3

One file of realistic JSON-lines log text (distinct lines: timestamps, levels,
request ids, paths, durations) is shipped local -> local by the copy engine with
``compression="gzip"`` and ``"zstd"``, against the engine's uncompressed copy and
against ``gzip -6`` / ``zstd -T1 -3`` (the same levels) piped to a file. Each
figure is the median of --runs runs. Targets:

    zstd copy            >= 0.9x the throughput of zstd -T1 -3
    event-loop lag       <= 5 ms worst, during a compressed copy
    to the HDFS mini-cluster (``--no-hdfs`` skips it; needs Java 17 and Maven):
    zstd copy            <= 1.25x the uncompressed copy's wall time,
                         writing <= 1/4 of its bytes
"""

from __future__ import annotations

import argparse
import json
import os
import random
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
from _common import LagTicker

from aiologship._config import parse_size
from aiologship._copy import CopyEngine, CopySpec

MiB = 1 << 20
# Distinct text, longer than any window the codecs use (gzip 32 KiB, zstd -3 a
# few MiB), then repeated: a repeat is never a match for either codec.
BLOCK = 32 * MiB
TOOLS = {"gzip": ["gzip", "-6", "-c"], "zstd": ["zstd", "-T1", "-3", "-c", "-q"]}
ANCHORS = {"gzip": "gzip -6", "zstd": "zstd -T1 -3"}


def json_lines(size: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    levels = ["INFO"] * 8 + ["DEBUG"] * 5 + ["WARNING", "ERROR"]
    paths = ["/api/orders", "/api/users/{}", "/health", "/api/cart/{}/items", "/login"]
    messages = ["request done", "cache miss", "retrying upstream", "slow query", "user login"]
    t = 1_796_000_000.0
    out: list[bytes] = []
    total = 0
    while total < size:
        t += rng.expovariate(200.0)
        record = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z",
            "level": rng.choice(levels),
            "logger": "app.http",
            "msg": rng.choice(messages),
            "request_id": f"{rng.getrandbits(64):016x}",
            "path": rng.choice(paths).format(rng.randrange(100_000)),
            "status": rng.choice((200, 200, 200, 201, 204, 404, 500)),
            "ms": round(rng.lognormvariate(3, 1), 2),
            "node": f"node-{rng.randrange(8)}",
        }
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        out.append(line)
        total += len(line)
    return b"".join(out)[:size]


def write_source(path: Path, size: int) -> None:
    block = json_lines(min(size, BLOCK))
    with open(path, "wb") as f:
        left = size
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def fresh(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


async def engine_copy(
    src: Path, work: Path, compression: str | None, destination: str | None = None
) -> tuple[float, dict[str, Any], int]:
    """(seconds, the loop-lag ticker's summary, destination bytes) of one first
    cycle, to a fresh local folder or to ``destination`` (a new folder each time)."""
    dst, state = work / "dst", work / "state"
    fresh(dst)
    fresh(state)
    spec = CopySpec.from_params(
        copy_name="bench",
        path_patterns=[str(src)],
        hdfs_destination=destination or str(dst),
        copy_interval=None,
        compression=compression,
    )
    engine = CopyEngine(spec, state_dir=state)
    await engine.open()
    ticker = LagTicker(0.001)
    ticker.start()
    start = time.perf_counter()
    try:
        result = await engine.flush()
    finally:
        elapsed = time.perf_counter() - start
        await ticker.stop()
        await engine.stop(final_cycle=False)
    assert result.ok, result
    return elapsed, ticker.summary(), result.bytes_shipped


async def idle_loop(seconds: float) -> dict[str, Any]:
    """The same ticker on a loop with nothing else to do: this machine's floor."""
    ticker = LagTicker(0.001)
    ticker.start()
    try:
        await anyio.sleep(seconds)
    finally:
        await ticker.stop()
    summary: dict[str, Any] = ticker.summary()
    return summary


def tool_copy(src: Path, work: Path, codec: str) -> tuple[float, int]:
    """(seconds, output bytes) of the command-line tool, output piped to a file."""
    out = work / f"tool.{codec}"
    start = time.perf_counter()
    with open(src, "rb") as fin, open(out, "wb") as fout:
        subprocess.run(TOOLS[codec], stdin=fin, stdout=fout, check=True)
    elapsed = time.perf_counter() - start
    size = out.stat().st_size
    out.unlink()
    return elapsed, size


def median(values: list[float]) -> float:
    return statistics.median(values)


def run(size: int, runs: int, work: Path) -> dict[str, Any]:
    src = work / "app.jsonl"
    write_source(src, size)
    codecs = [c for c in TOOLS if shutil.which(TOOLS[c][0])]
    missing = sorted(set(TOOLS) - set(codecs))
    rows: dict[str, dict[str, list[float]]] = {}

    def add(name: str, **values: float) -> None:
        row = rows.setdefault(name, {})
        for key, value in values.items():
            row.setdefault(key, []).append(value)

    def add_lag(name: str, lag: dict[str, Any], **values: float) -> None:
        add(
            name,
            **values,
            lag=lag["worst_lag_ms"],
            # The worst lag less the loop thread's wait for a CPU (other processes).
            adj=lag["worst_adj_ms"],
            p99=lag["p99_lag_ms"],
            steal=lag["steal_ms"],
        )

    async def engine_run(name: str, compression: str | None) -> None:
        seconds, lag, out = await engine_copy(src, work, compression)
        add_lag(name, lag, seconds=seconds, out=out)
        if compression == "gzip":  # as long as the longest copy: a worst case has as many chances
            add_lag("idle loop (anchor)", await idle_loop(seconds))

    runner: Callable[[str, str | None], Awaitable[None]] = engine_run
    for _ in range(runs):  # interleaved, so load drifts hit every row alike
        anyio.run(runner, "copy", None)
        for codec in ("gzip", "zstd"):
            anyio.run(runner, f"copy {codec}", codec)
            if codec in codecs:
                seconds, out = tool_copy(src, work, codec)
                add(ANCHORS[codec], seconds=seconds, out=out)
    return {"size": size, "rows": rows, "missing": missing}


def _harness() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "bench_minidfs", Path(__file__).resolve().parents[1] / "tests/minidfs/minidfs.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_hdfs(size: int, runs: int, work: Path) -> None:
    """The same file shipped to the HDFS mini-cluster (native driver, 2 DataNodes,
    replication 2), uncompressed, zstd and gzip, interleaved. Targets: zstd at
    most 1.25x the uncompressed copy's wall time, writing at most 1/4 of its bytes."""
    minidfs = _harness()
    missing = minidfs.missing_tools()
    if missing:
        print(f"mini-cluster part skipped: needs {' and '.join(missing)}")
        return
    src = work / "app.jsonl"
    if not src.exists():
        write_source(src, size)
    cluster = minidfs.MiniDfs.start(
        work / "dfs",
        block_size=128 << 20,
        jvm_flags=("-Xmx1g", "-XX:+UseSerialGC"),
        conf={"dfs.replication": "2"},
    )
    times: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    try:
        os.environ["HADOOP_CONF_DIR"] = str(cluster.conf_dir)
        n = 0
        for _ in range(runs):
            for codec in (None, "zstd", "gzip"):
                n += 1
                name = codec or "uncompressed"

                async def one(codec: str | None = codec, n: int = n) -> tuple[float, int]:
                    seconds, _, out = await engine_copy(
                        src, work, codec, f"{cluster.uri}/bench/{n}"
                    )
                    return seconds, out

                seconds, out = anyio.run(one)
                times.setdefault(name, []).append(seconds)
                sizes.setdefault(name, []).append(out)
    finally:
        cluster.close()
    base_t, base_b = median(times["uncompressed"]), median(sizes["uncompressed"])
    print(f"\nto the HDFS mini-cluster (native driver, replication 2; median of {runs}):")
    for name in times:
        t, b = median(times[name]), median(sizes[name])
        print(
            f"  {name:13} {t:6.2f} s  {t / base_t:5.2f}x the wall time   "
            f"{b / MiB:8.1f} MiB written  {b / base_b:5.3f}x the bytes"
        )
    zt, zb = median(times["zstd"]) / base_t, median(sizes["zstd"]) / base_b
    ok = zt <= 1.25 and zb <= 0.25
    print(
        f"{'PASS' if ok else 'FAIL'}: zstd to HDFS <= 1.25x the uncompressed copy's wall time "
        f"and <= 1/4 of its bytes: {zt:.2f}x, {zb:.3f}x"
    )


def report(figures: dict[str, Any]) -> None:
    size = figures["size"]
    rows = figures["rows"]
    print(
        f"{'':24} {'MiB/s':>8} {'ratio':>7} {'worst lag ms':>13} {'adjusted':>9} "
        f"{'p99 ms':>7} {'steal ms':>9}"
    )
    speed: dict[str, float] = {}
    for name, row in rows.items():
        if "seconds" not in row:
            print(f"{name:24} {'':8} {'':7} {median(row['lag']):13.1f} {median(row['adj']):9.1f}")
            continue
        speed[name] = size / MiB / median(row["seconds"])
        lag = (
            f"{median(row['lag']):13.1f} {median(row['adj']):9.1f} {median(row['p99']):7.2f} "
            f"{median(row['steal']):9.0f}"
            if "lag" in row
            else ""
        )
        ratio = median(row["out"]) / size
        print(f"{name:24} {speed[name]:8.1f} {ratio:7.3f} {lag}")
    print()
    for codec, tool in ANCHORS.items():
        if tool in speed:
            print(f"copy {codec} / {tool}: {speed[f'copy {codec}'] / speed[tool]:.2f}x throughput")
        print(f"copy {codec} / copy (uncompressed): {speed[f'copy {codec}'] / speed['copy']:.2f}x")
    for key, what in (("lag", "worst loop lag"), ("adj", "adjusted worst lag")):
        lags = rows["copy zstd"][key] + rows["copy gzip"][key]
        print(
            f"{what} during compressed copies: median {median(lags):.1f} ms, "
            f"max {max(lags):.1f} ms (target <= 5 ms)"
        )
    for tool in figures["missing"]:
        print(f"{tool}: not installed, its anchor is missing")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--size", default="1 GiB", help="size of the log file (default 1 GiB)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="64 MiB: a smoke run")
    p.add_argument("--workdir", default=None, help="where the files go (default: a temp dir)")
    p.add_argument("--no-hdfs", action="store_true", help="skip the part on the HDFS mini-cluster")
    args, _unknown = p.parse_known_args(argv)  # nox passes its posargs to every script
    size = parse_size("64 MiB" if args.quick else args.size, "size")
    with tempfile.TemporaryDirectory(prefix="bench-compress-", dir=args.workdir) as tmp:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(
            f"compressed shipping of {size / MiB:.0f} MiB of JSON lines, local -> local "
            f"(median of {args.runs} runs; {os.cpu_count()} CPUs, load average {load})"
        )
        report(run(size, args.runs, Path(tmp)))
        if not args.no_hdfs:
            run_hdfs(size, args.runs, Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
