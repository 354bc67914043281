"""The demo: 100 async tasks log through one LogManager to local JSON files,
and a copy operation ships those files to a local destination folder. A few
lines go to the terminal as well, through a stream sink (coloured by level on a
terminal, plain in a pipe).

Run: ``nox -s demo``, ``aiologship demo [--out DIR] [--timezone TZ]`` or
``python examples/quickstart.py``. This module is the demo's one source.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .. import Logger, LogManager

TASKS = 100
RECORDS_PER_TASK = 1_000


async def worker(log: Logger, task: int) -> None:
    for seq in range(RECORDS_PER_TASK):
        log.info("task %d step %d", task, seq, extra={"task": task, "seq": seq})
        if seq % 100 == 0:
            await asyncio.sleep(0)


async def main(out: Path, timezone: str) -> None:
    logs = out / "logs"
    shipped = out / "shipped"
    started = time.perf_counter()
    async with LogManager(timezone=timezone, format="json", state_dir=out / "state") as lm:
        for name in ("ingest", "score"):
            lm.get_logger(name).add(logs / f"{name}.json")
        loggers = [lm.get_logger("ingest"), lm.get_logger("score")]
        console = lm.get_logger("demo")
        console.logger.propagate = False  # the terminal only, not the root logger's handlers
        console.add(sys.stdout, fmt="%(asctime)s %(levelname)s %(message)s", json=False)
        console.info("%d tasks log %s records to %s", TASKS, f"{TASKS * RECORDS_PER_TASK:,}", logs)
        op = await lm.start_hdfs_copy(
            copy_name="demo_logs",
            path_patterns=["logs/*.json"],
            hdfs_destination=shipped.as_uri(),  # or hdfs://namenode:8020/logs/, s3://...
            root_dir=out,
            copy_interval=1,
            preserve_structure=True,
        )
        await asyncio.gather(*(worker(loggers[t % 2], t) for t in range(TASKS)))
        console.info("every record handed over; leaving the block drains them")
        console.warning("then a final copy cycle ships the files to %s", shipped)
        elapsed = time.perf_counter() - started
    # Leaving the block drained every record and ran a final copy cycle.
    status = op.status()
    stats = lm.stats()
    files = sorted(logs.glob("*.json"))
    lines = sum(len(f.read_text(encoding="utf-8").splitlines()) for f in files)
    first = json.loads(files[0].read_text(encoding="utf-8").splitlines()[0])
    print(f"records accepted: {stats.accepted:,}  written: {stats.written:,}", end="")
    print(f" ({lines:,} to files, {stats.written - lines} to the terminal)", end="")
    print(f"  dropped: {stats.dropped}")
    print(f"files: {', '.join(str(f) for f in files)} ({lines:,} lines)")
    print(f"throughput: {stats.written / elapsed:,.0f} records/s (until on disk)")
    print(f"first record: {json.dumps(first)}")
    copies = sorted(shipped.rglob("*.json"))
    print(
        f"shipped to {shipped}: {len(copies)} files, {status.bytes_shipped:,} bytes "
        f"({status.files_shipped} transfers, state {status.state})"
    )
    if lines != TASKS * RECORDS_PER_TASK:
        raise SystemExit(f"expected {TASKS * RECORDS_PER_TASK} lines, found {lines}")
    for copy in copies:
        if copy.read_bytes() != (out / copy.relative_to(shipped)).read_bytes():
            raise SystemExit(f"{copy} differs from its source")


def add_demo_command(subparsers: Any) -> None:
    parser = subparsers.add_parser("demo", help="run the demo (logs, then ships them locally)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: temporary)")
    parser.add_argument("--timezone", default="Asia/Singapore")
    parser.set_defaults(func=_command)


def _command(args: argparse.Namespace) -> int:
    out = args.out or Path(tempfile.mkdtemp(prefix="aiologship-demo-"))
    asyncio.run(main(out, args.timezone))
    return 0
