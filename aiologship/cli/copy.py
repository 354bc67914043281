"""``aiologship copy``: ship files matching glob patterns to a destination, once
or every interval, with a progress bar."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, TextIO

import anyio

from .._config import HdfsDriver, default_state_dir
from .._exceptions import ConfigError, CopyError
from ._exits import EXIT_ABORTED, EXIT_INCOMPLETE, EXIT_OK, EXIT_USAGE

DEFAULT_CLI_COPY_NAME = "aiologship-cli"
_BAR_WIDTH = 28
_REFRESH_SECONDS = 0.1


def add_copy_command(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "copy",
        help="ship files matching glob patterns to a destination",
        description=(
            "Copy files matching PATTERN (globs; ** recurses) to DEST: a path, file://, "
            "hdfs://, s3://... Incremental: a later run ships only what changed. "
            "Exit 0 when everything matched is at the destination, 1 otherwise."
        ),
    )
    p.add_argument("patterns", nargs="+", metavar="PATTERN", help="glob pattern of files to ship")
    p.add_argument(
        "--to",
        dest="destination",
        required=True,
        metavar="DEST",
        help="destination path or URI; may hold {date:%%Y/%%m/%%d}, {hostname}, {node_id}, "
        "{copy_name} (a file stays under the date it was first seen, local time)",
    )
    p.add_argument(
        "--root-dir", metavar="D", help="base of relative patterns and of --preserve-structure"
    )
    p.add_argument(
        "--preserve-structure",
        action="store_true",
        help="keep paths relative to --root-dir (default: base names only)",
    )
    when = p.add_mutually_exclusive_group()
    when.add_argument(
        "--interval", metavar="S", help="copy every S seconds (or '5 min') until Ctrl-C / SIGTERM"
    )
    when.add_argument("--once", action="store_true", help="copy once and exit (the default)")
    p.add_argument(
        "--name",
        default=DEFAULT_CLI_COPY_NAME,
        help=f"copy operation name, keys its manifest (default {DEFAULT_CLI_COPY_NAME})",
    )
    p.add_argument(
        "--state-dir", metavar="DIR", help=f"where manifests live (default {default_state_dir()})"
    )
    p.add_argument("--max-retries", type=int, default=3, metavar="N")
    p.add_argument("--retry-delay", default="5", metavar="S")
    p.add_argument(
        "--no-create-dest-dirs",
        action="store_true",
        help="fail instead of creating the destination folder",
    )
    p.add_argument(
        "--compression",
        choices=["none", "gzip", "zstd"],
        default="none",
        help="ship each file compressed as NAME.gz / NAME.zst: each run appends its new "
        "bytes as a gzip member or zstd frame (zcat, zstd -d, hdfs dfs -text read it whole)",
    )
    p.add_argument(
        "--rollup",
        nargs="?",
        const="",
        metavar="LIMITS",
        help="concatenate sealed files (not modified for a while) into few large roll "
        "files per destination folder instead of one file per source; live files wait. "
        "Alone, the limits size=256MiB,interval=1h,settle=60s; LIMITS like "
        "'size=64MiB,interval=1h,settle=30s': a size or interval left out is no limit "
        "(one of them is needed), settle defaults to 60s",
    )
    p.add_argument("--hdfs-driver", choices=[d.value for d in HdfsDriver], default="auto")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar (default: when stderr is a terminal)",
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("-v", "--verbose", action="count", default=0)
    p.set_defaults(func=run_copy)


def run_copy(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="aiologship: %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    from .._copy import CopySpec

    try:
        spec = CopySpec.from_params(
            copy_name=args.name,
            path_patterns=args.patterns,
            hdfs_destination=args.destination,
            root_dir=args.root_dir,
            copy_interval=None if args.interval is None else args.interval,
            create_dest_dirs=not args.no_create_dest_dirs,
            preserve_structure=args.preserve_structure,
            max_retries=args.max_retries,
            retry_delay=args.retry_delay,
            compression=args.compression,
            rollup=rollup_option(args.rollup),
        )
    except ConfigError as exc:
        print(f"aiologship copy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    state_dir = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    show_bar = args.progress if args.progress is not None else sys.stderr.isatty()
    once = spec.copy_interval is None
    try:
        code = anyio.run(_copy, spec, state_dir, HdfsDriver(args.hdfs_driver), show_bar and once)
        exit_if_threads_hang(code)
        return code
    except ConfigError as exc:
        print(f"aiologship copy: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CopyError as exc:
        print(f"aiologship copy: {exc}", file=sys.stderr)
        return EXIT_INCOMPLETE


def rollup_option(text: str | None) -> bool | dict[str, str] | None:
    """``--rollup`` (defaults) or ``--rollup size=256MiB,interval=1h``; the
    values are checked by the spec, which names a bad one."""
    if text is None:
        return None
    if not text.strip():
        return True
    limits: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--rollup", text, f"expected KEY=VALUE items, got {item!r}")
        limits[key.strip()] = value.strip()
    return limits


def exit_if_threads_hang(code: int, grace: float = 1.0) -> None:
    """Exit now with ``code`` if a worker thread is still blocked after
    ``grace`` seconds: a transfer the stop bound abandoned inside a
    destination's client that never answers. The interpreter joins every
    non-daemon thread at exit, so it would otherwise hang there instead."""
    deadline = time.monotonic() + grace
    others = [
        t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
    ]
    for thread in others:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(t.is_alive() for t in others)
    if not stuck:
        return
    print(
        f"aiologship copy: exiting with {stuck} transfer(s) still blocked in the "
        "destination's client (not recorded as shipped; the next run redoes them)",
        file=sys.stderr,
    )
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


async def _copy(spec: Any, state_dir: Path, driver: HdfsDriver, show_bar: bool) -> int:
    from .._copy import CopyEngine

    engine = CopyEngine(spec, state_dir=state_dir, hdfs_driver=driver)
    await engine.open()
    aborted = False
    async with anyio.create_task_group() as tg:

        async def on_signals(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal aborted
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                task_status.started()
                seen = 0
                async for _ in signals:
                    seen += 1
                    if seen == 1:
                        print(
                            "\naiologship copy: stopping after a final cycle "
                            "(Ctrl-C again to abort)",
                            file=sys.stderr,
                        )
                        if spec.copy_interval is not None:
                            tg.start_soon(engine.stop)
                        # --once: the cycle in progress is the final one.
                    else:
                        aborted = True
                        tg.cancel_scope.cancel()
                        return

        await tg.start(on_signals)  # handlers in place before the first cycle
        if spec.copy_interval is None:
            bar = _ProgressBar(engine, sys.stderr) if show_bar else None
            if bar is not None:
                tg.start_soon(bar.run)
            await engine.flush()
            if bar is not None:
                bar.finish()
            # The one cycle is the final one: no second pass on the way out.
            await engine.stop(final_cycle=False)
        else:
            await engine.run()
        tg.cancel_scope.cancel()
    if aborted:
        return EXIT_ABORTED
    status = engine.status()
    size = _size(status.bytes_shipped)
    if spec.compression is not None:
        size = f"{_size(status.bytes_read)} as {size} {spec.compression}"
    print(
        f"aiologship copy: {status.files_shipped} files ({size}) "
        f"shipped to {status.destination}; {status.pending_files} pending, "
        f"{len(status.file_errors)} with errors",
        file=sys.stderr,
    )
    for path, reason in status.file_errors:
        print(f"  {path}: {reason}", file=sys.stderr)
    for pattern in status.unmatched_patterns:
        print(f"  {pattern}: matches no file", file=sys.stderr)
    if status.consecutive_failures and status.last_error:
        print(f"  destination: {status.last_error}", file=sys.stderr)
    complete = (
        status.pending_files == 0 and not status.file_errors and status.consecutive_failures == 0
    )
    return EXIT_OK if complete else EXIT_INCOMPLETE


class _ProgressBar:
    """A one-line bar on ``stream``, redrawn from the engine's live counters."""

    def __init__(self, engine: Any, stream: TextIO) -> None:
        self._engine = engine
        self._stream = stream
        self._last = ""

    async def run(self) -> None:
        while True:
            self.draw()
            await anyio.sleep(_REFRESH_SECONDS)

    def draw(self) -> None:
        p = self._engine.progress()
        if not p.planned:
            line = "\rscanning..."
            if line != self._last:
                self._stream.write(line)
                self._stream.flush()
                self._last = line
            return
        total = max(p.bytes_total, 1)
        done = min(p.bytes_done, total)
        fraction = done / total if p.bytes_total else (1.0 if p.files_total == 0 else 0.0)
        filled = int(fraction * _BAR_WIDTH)
        line = (
            f"\r[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {fraction * 100:5.1f}%  "
            f"{p.files_done}/{p.files_total} files  {_size(done)}/{_size(p.bytes_total)}"
        )
        if line != self._last:
            self._stream.write(line)
            self._stream.flush()
            self._last = line

    def finish(self) -> None:
        self.draw()
        self._stream.write("\n")
        self._stream.flush()


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"
