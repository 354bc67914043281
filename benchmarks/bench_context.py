"""Context benchmark: records carrying bound per-request fields, JSON output.

    python benchmarks/bench_context.py [--quick] [--runs N] [--libs a,b] [--records N]

200,000 records from 100 asyncio tasks; each task binds its own ``request_id``
and two more fields (``user``, ``tenant``) once, then logs its share; every line
is JSON with those fields as keys. Libraries:

  aiologship  ``aiologship.bind_context`` + a ``LogManager`` JSON sink
  structlog   ``bind_contextvars`` + ``merge_contextvars`` and ``JSONRenderer``,
              written through a stdlib ``logging.FileHandler``
  loguru      ``logger.contextualize`` + ``serialize=True`` (``enqueue=True``, as
              the loguru anchor of bench_logging.py)

Each (library, run) runs in a fresh interpreter; the parent prints the medians,
the ratios against the anchors measured in the same run, and one PASS/FAIL line
per target (aiologship >= 2x structlog, >= 2x loguru). Every run also checks on
disk that each line carries the fields of the task that logged it (``mixed``) and
that no record is missing; a run that fails the check counts as failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    REPO_ROOT,
    WorkerOutcome,
    emit_result,
    gc_collect,
    load_avg,
    median,
    print_table,
    run_worker,
    timed,
    uptime_line,
    verdict,
)

if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

MARKER = "bench-record"
MSG = MARKER + " task=%d seq=%d payload=%s"
LOGURU_MSG = MARKER + " task={} seq={} payload={}"
PAYLOAD = "x" * 40
TASK_RE = re.compile(r"task=(\d+) seq=(\d+)")
YIELD_EVERY = 20  # as bench_logging.py: the 100 tasks interleave like request handlers
LIBS = ["aiologship", "structlog", "loguru"]
LABELS = {
    "aiologship": "aiologship bind_context, JSON sink",
    "structlog": "structlog contextvars + JSONRenderer",
    "loguru": "loguru contextualize serialize=True",
}
TARGETS = {"structlog": 2.0, "loguru": 2.0}


def fields_of(task: int) -> dict[str, Any]:
    return {"request_id": f"req-{task:04d}", "user": f"user{task % 7}", "tenant": "acme"}


# =============================================================== library adapters
#
#   await open(path)                 a JSON sink at path
#   async with bound(task):          the task's fields bound for its records
#   log(task, seq)                   one record
#   await close()                    returns once every record is written
#   fields(line) -> (task, dict)     what a written line says (for the check)


class Aiologship:
    async def open(self, path: Path) -> None:
        import aiologship

        self.aiologship = aiologship
        self.lm = aiologship.LogManager(format="json")
        log = self.lm.get_logger("bench")
        log.add(str(path))
        self.info = log.info

    def bind(self, task: int) -> Any:
        return self.aiologship.context(**fields_of(task))

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        await self.lm.aclose()

    @staticmethod
    def parse(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return obj["message"], obj


class Structlog:
    async def open(self, path: Path) -> None:
        import structlog

        self.handler = logging.FileHandler(path, encoding="utf-8")
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        std = logging.getLogger("bench")
        std.propagate = False
        std.setLevel(logging.INFO)
        std.addHandler(self.handler)
        # The configuration structlog's docs show for rendering in structlog and
        # writing through the stdlib, with contextvars merged first.
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso"),
                structlog.processors.JSONRenderer(),
            ],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=True,
        )
        self.structlog = structlog
        self.info = structlog.get_logger("bench").info

    def bind(self, task: int) -> Any:
        return self.structlog.contextvars.bound_contextvars(**fields_of(task))

    def log(self, task: int, seq: int) -> None:
        self.info(MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        self.handler.close()

    @staticmethod
    def parse(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return obj["event"], obj


class Loguru:
    async def open(self, path: Path) -> None:
        from loguru import logger

        logger.remove()
        self.logger = logger
        self.sink = logger.add(str(path), serialize=True, enqueue=True, level="INFO")
        self.info = logger.info

    def bind(self, task: int) -> Any:
        return self.logger.contextualize(**fields_of(task))

    def log(self, task: int, seq: int) -> None:
        self.info(LOGURU_MSG, task, seq, PAYLOAD)

    async def close(self) -> None:
        await self.logger.complete()
        self.logger.remove(self.sink)

    @staticmethod
    def parse(obj: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        record = obj["record"]
        return record["message"], record["extra"]


ADAPTERS: dict[str, Callable[[], Any]] = {
    "aiologship": Aiologship,
    "structlog": Structlog,
    "loguru": Loguru,
}


# =============================================================== worker


def check(path: Path, parse: Callable[[dict[str, Any]], Any], tasks: int) -> dict[str, int]:
    """Every record on disk once, each with its own task's fields and no other's."""
    seen: set[tuple[int, int]] = set()
    mixed = unparsed = 0
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                message, fields = parse(json.loads(line))
            except (ValueError, KeyError):
                unparsed += 1
                continue
            m = TASK_RE.search(message)
            if m is None:
                unparsed += 1
                continue
            task, seq = int(m.group(1)), int(m.group(2))
            seen.add((task, seq))
            want = fields_of(task)
            if any(fields.get(k) != v for k, v in want.items()):
                mixed += 1
    return {"unique": len(seen), "mixed": mixed, "unparsed": unparsed}


async def w_context(lib: str, tmp: Path, records: int, tasks: int) -> dict[str, Any]:
    path = tmp / "bench.json"
    ad = ADAPTERS[lib]()
    await ad.open(path)
    per_task = records // tasks
    total = per_task * tasks

    async def producer(t: int) -> None:
        log = ad.log
        with ad.bind(t):
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
    chk = check(path, ad.parse, tasks)
    return {
        "records": total,
        "wall_s": tm.wall,
        "cpu_s": tm.cpu,
        "rate": chk["unique"] / tm.wall,
        "log_s": tm.wall - t_close,
        "close_s": t_close,
        "bytes_per_line": path.stat().st_size / max(total, 1),
        "lost": total - chk["unique"],
        **chk,
        "load": load0,
    }


def worker_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("lib")
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--tasks", type=int, default=100)
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="aiologship-bench-ctx-") as d:
        res = asyncio.run(w_context(a.lib, Path(d), a.records, a.tasks))
    if res["lost"] or res["mixed"] or res["unparsed"]:
        raise SystemExit(
            f"check failed: lost={res['lost']} mixed={res['mixed']} unparsed={res['unparsed']}"
        )
    emit_result(res)
    return 0


# =============================================================== parent


def _rounds(libs: list[str], runs: int, extra: list[str]) -> dict[str, list[WorkerOutcome]]:
    out: dict[str, list[WorkerOutcome]] = {lib: [] for lib in libs}
    script = str(Path(__file__).resolve())
    for r in range(runs):
        order = libs[r % len(libs) :] + libs[: r % len(libs)]
        for lib in order:
            o = run_worker([script, "--worker", lib, *extra], timeout=600)
            print(f"  [round {r + 1}/{runs}] {lib}: {'ok' if o.ok else o.error}", flush=True)
            out[lib].append(o)
    return out


def _paired(outs: dict[str, list[WorkerOutcome]], anchor: str) -> float:
    return median(
        [
            a.result["rate"] / b.result["rate"]
            for a, b in zip(outs["aiologship"], outs[anchor], strict=False)
            if a.ok and b.ok
        ]
    )


def main(argv: list[str]) -> int:
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 run (smoke run)")
    p.add_argument("--runs", type=int, default=None, help="runs per library (default 3)")
    p.add_argument("--libs", default=",".join(LIBS))
    p.add_argument("--records", type=int, default=200_000)
    p.add_argument("--tasks", type=int, default=100)
    p.add_argument("--json", type=Path, default=None, help="write every raw result here")
    a = p.parse_args(argv)
    runs = a.runs or (1 if a.quick else 3)
    libs = [x for x in a.libs.split(",") if x]
    unknown = [x for x in libs if x not in ADAPTERS]
    if unknown:
        p.error(f"unknown libraries {unknown}; choose from {', '.join(LIBS)}")
    print(f"bench_context: runs={runs} python={sys.version.split()[0]} cpus={os.cpu_count()}")
    print(f"start: {uptime_line()}", flush=True)
    outs = _rounds(libs, runs, ["--records", str(a.records), "--tasks", str(a.tasks)])
    med = {lib: median([o.result["rate"] for o in lst if o.ok]) for lib, lst in outs.items()}
    ours = med.get("aiologship", float("nan"))
    rows = []
    for lib, lst in outs.items():
        res = [o.result for o in lst if o.ok]
        rows.append(
            [
                LABELS[lib],
                med[lib],
                " ".join(f"{r['rate'] / 1000:.0f}k" for r in res) or "failed",
                median([r["log_s"] / r["records"] * 1e6 for r in res]),
                median([r["close_s"] for r in res]),
                median([r["cpu_s"] / r["records"] * 1e6 for r in res]),
                median([r["bytes_per_line"] for r in res]),
                ours / med[lib] if lib != "aiologship" else 1.0,
                _paired(outs, lib) if lib != "aiologship" and "aiologship" in outs else 1.0,
                "/".join(f"{r['load']:.1f}" for r in res) or "-",
            ]
        )
    print_table(
        f"Context: {a.records:,} JSON records from {a.tasks} tasks, each with its own "
        "request_id + 2 fields bound (median of runs)",
        [
            "library",
            "records/s",
            "each run",
            "loop us/rec",
            "close s",
            "cpu us/rec",
            "bytes/line",
            "aiologship x",
            "paired x",
            "load 1m",
        ],
        rows,
    )
    for lib, lst in outs.items():
        for o in lst:
            if not o.ok:
                print(f"  {lib} failed: {o.error}")
    print("  every run checked on disk: no record lost, each line has its own task's fields")
    verdicts = []
    for anchor, target in TARGETS.items():
        if anchor not in med or "aiologship" not in med:
            continue
        ratio = ours / med[anchor]
        measured = ratio == ratio
        verdicts.append(
            verdict(
                f"context throughput >= {target}x {LABELS[anchor]}",
                (ratio >= target) if measured else None,
                f"{ratio:.2f}x ({ours:,.0f} vs {med[anchor]:,.0f} records/s, median of {runs}; "
                f"paired {_paired(outs, anchor):.2f}x)"
                if measured
                else f"no successful run of aiologship and {anchor}",
            )
        )
    print(f"\nend: {uptime_line()}")
    if a.json:
        a.json.write_text(json.dumps({k: [o.__dict__ for o in v] for k, v in outs.items()}))
    print("\nSummary")
    for line in verdicts:
        print("  " + line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
