"""Soak: log numbered records at a steady rate through a rotating, retaining file sink
while an ``aiologship copy`` subprocess ships ``app.log*`` to a MiniDFSCluster (or a
local folder with ``--local``), and inject faults at random times: NameNode restarts,
DataNode stops, SIGKILLs of the copier. At the end: stop logging, one final copy,
then count every record number at the destination.

    python benchmarks/soak.py                 # 10 minutes, HDFS mini-cluster
    python benchmarks/soak.py --minutes 2     # a short run
    python benchmarks/soak.py --local         # local destination, copier kills only

Figures printed: records logged, bytes shipped, faults injected by kind, records (and
bytes) missing and duplicated at the destination, records lost to retention before
they were shipped (kept 0 by a generous retention). Exit 1 when anything is lost,
duplicated or garbled, or a source still present differs from its destination copy.
Not run in CI: ``nox -s soak``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import importlib.util
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiologship import LogManager  # noqa: E402
from aiologship._copy._transfer import TMP_MARK  # noqa: E402
from aiologship._fs import resolve_destination  # noqa: E402

# Replication 2 on 2 DataNodes: one DataNode may stop while writes go on.
CLUSTER_CONF = {
    "dfs.replication": "2",
    "dfs.namenode.file.close.num-committed-allowed": "1",
}
RECORD_RE = re.compile(rb"^(\d{9}) ")
PAD = "p" * 48  # ~60-byte records: 20,000/s is ~1.2 MB/s
TICK = 0.01
COPY_INTERVAL = "2"
STOP_WAIT = 180.0  # a copier's final cycle after SIGTERM
FINAL_ATTEMPTS = 4
FINAL_TIMEOUT = 300.0


def _harness() -> Any:
    spec = importlib.util.spec_from_file_location("soak_minidfs", ROOT / "tests/minidfs/minidfs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Copier:
    """``aiologship copy --interval`` in a subprocess, so it can be SIGKILLed."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.unexpected_exits: list[int] = []
        self._lock = threading.Lock()

    def _cmd(self, *extra: str) -> list[str]:
        return [
            sys.executable,
            "-c",
            "import sys; from aiologship.cli import main; sys.exit(main(sys.argv[1:]))",
            "copy",
            *self.args,
            *extra,
        ]

    def start(self) -> None:
        with self._lock:
            with open(self.log, "ab") as err:
                self.proc = subprocess.Popen(
                    self._cmd("--interval", COPY_INTERVAL),
                    env=self.env,
                    stdout=err,
                    stderr=err,
                    cwd=ROOT,
                )
            self.starts += 1

    def kill(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(30)

    def watch(self) -> None:
        """Restart a copier that exited without being killed (and remember it)."""
        with self._lock:
            proc = self.proc
        if proc is not None and proc.poll() is not None and proc.returncode != -signal.SIGKILL:
            self.unexpected_exits.append(proc.returncode)
            self.start()

    def stop(self) -> int | None:
        """SIGTERM: the copier runs its final cycle and exits (bounded)."""
        with self._lock:
            proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(STOP_WAIT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
            return None

    def once(self) -> int:
        with open(self.log, "ab") as err:
            try:
                return subprocess.run(
                    self._cmd("--once", "--no-progress"),
                    env=self.env,
                    stdout=err,
                    stderr=err,
                    cwd=ROOT,
                    timeout=FINAL_TIMEOUT,
                ).returncode
            except subprocess.TimeoutExpired:
                return -1


class Faults:
    """Injects one fault at a random moment every ``gap`` seconds (on average)."""

    def __init__(self, copier: Copier, cluster: Any | None, rng: random.Random, gap: float):
        self.copier = copier
        self.cluster = cluster
        self.rng = rng
        self.gap = gap
        self.counts: collections.Counter[str] = collections.Counter()
        self.errors: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="faults", daemon=True)

    def _run(self) -> None:
        kinds = ["copier SIGKILL"]
        if self.cluster is not None:
            kinds += ["NameNode restart", "DataNode stop"]
        order: list[str] = []
        while not self.stop.wait(self.rng.uniform(0.5 * self.gap, 1.5 * self.gap)):
            # Every kind once per round, in a random order: a short run sees them all.
            if not order:
                order = self.rng.sample(kinds, len(kinds))
            kind = order.pop()
            try:
                self._inject(kind)
                self.counts[kind] += 1
            except Exception as exc:  # reported at the end; the soak goes on
                self.errors.append(f"{kind}: {exc}")

    def _inject(self, kind: str) -> None:
        if kind == "copier SIGKILL":
            self.copier.kill()
            self.stop.wait(self.rng.uniform(0.0, 2.0))
            self.copier.start()
        elif kind == "NameNode restart":
            assert self.cluster is not None
            self.cluster.command("restart-namenode")
        else:
            assert self.cluster is not None
            index = self.rng.randrange(2)
            self.cluster.command(f"stop-datanode {index}")
            self.stop.wait(self.rng.uniform(3.0, 15.0))
            self.cluster.command(f"start-datanode {index}")

    def heal(self) -> None:
        if self.cluster is None:
            return
        state = self.cluster.command("status")
        if not state.get("namenode_up"):
            self.cluster.command("start-namenode")
        for index in state.get("stopped_datanodes", []):
            self.cluster.command(f"start-datanode {index}")


class RotatedWatcher:
    """Remembers the record range of each rotated file while it exists, so records
    of a file that retention deleted before it was shipped can be told apart."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ranges: dict[str, tuple[int, int]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="watcher", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.2):
            self.poll()

    def poll(self) -> None:
        for p in self.folder.iterdir():
            if p.name == "app.log" or p.name in self.ranges:
                continue
            with contextlib.suppress(OSError, ValueError):
                data = p.read_bytes()  # a rotated file never changes again
                lines = data.splitlines()
                if lines:
                    self.ranges[p.name] = (int(lines[0][:9]), int(lines[-1][:9]))


def log_steadily(log: Any, rate: int, seconds: float) -> tuple[int, int]:
    """Log records numbered 0.. at ``rate`` per second; (records, bytes)."""
    n = 0
    nbytes = 0
    start = time.monotonic()
    end = start + seconds
    while True:
        now = time.monotonic()
        if now >= end:
            break
        due = int((now - start) * rate)
        while n < due:
            log.info("%09d %s", n, PAD)
            nbytes += 10 + len(PAD) + 1
            n += 1
        time.sleep(TICK)
    return n, nbytes


def destination_files(uri: str) -> dict[str, bytes]:
    dest = resolve_destination(uri)
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(dest.base_path, recursive=True, allow_not_found=True)
    out: dict[str, bytes] = {}
    prefix = dest.base_path.rstrip("/") + "/"
    for info in dest.filesystem.get_file_info(selector):
        if info.type == pafs.FileType.File:
            rel = info.path[len(prefix) :] if info.path.startswith(prefix) else info.path
            with dest.filesystem.open_input_stream(info.path) as f:
                out[rel] = f.read()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=20_000, help="records per second")
    parser.add_argument("--rotation", default="4 MB", help="size-based rotation of app.log")
    parser.add_argument("--retention", type=int, default=60, help="rotated files kept")
    parser.add_argument("--fault-every", type=float, default=20.0, help="mean seconds")
    parser.add_argument("--local", action="store_true", help="local destination, no HDFS")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="aiologship-soak-"))
    logs = work / "logs"
    state = work / "state"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cluster = None
    print(f"soak: {args.minutes:g} min at {args.rate} records/s, seed {seed}, work {work}")
    try:
        if args.local:
            uri = str(work / "dest")
        else:
            minidfs = _harness()
            missing = minidfs.missing_tools()
            if missing:
                print(f"soak needs {' and '.join(missing)} (or --local)")
                return 2
            started = time.monotonic()
            cluster = minidfs.MiniDfs.start(work / "dfs", conf=CLUSTER_CONF)
            print(f"mini-cluster up in {time.monotonic() - started:.1f}s")
            os.environ["HADOOP_CONF_DIR"] = env["HADOOP_CONF_DIR"] = str(cluster.conf_dir)
            uri = cluster.uri.rstrip("/") + "/soak"
        copier = Copier(
            [
                str(logs / "app.log*"),
                "--to",
                uri,
                "--root-dir",
                str(logs),
                "--name",
                "soak",
                "--state-dir",
                str(state),
                "--retry-delay",
                "1",
            ],
            env,
            work / "copier.log",
        )
        return run(args, rng, logs, uri, copier, cluster, work)
    finally:
        if cluster is not None:
            cluster.close()
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(
    args: argparse.Namespace,
    rng: random.Random,
    logs: Path,
    uri: str,
    copier: Copier,
    cluster: Any | None,
    work: Path,
) -> int:
    lm = LogManager()
    log = lm.get_logger("soak")
    log.logger.propagate = False  # only our sink: the fast path
    log.logger.setLevel(logging.INFO)
    log.add(logs / "app.log", fmt="%(message)s", rotation=args.rotation, retention=args.retention)
    watcher = RotatedWatcher(logs)
    faults = Faults(copier, cluster, rng, args.fault_every)
    copier.start()
    watcher.thread.start()
    faults.thread.start()
    t0 = time.monotonic()
    keeper = threading.Event()

    def keep_copier_alive() -> None:
        while not keeper.wait(1.0):
            copier.watch()

    alive = threading.Thread(target=keep_copier_alive, daemon=True)
    alive.start()
    try:
        logged, logged_bytes = log_steadily(log, args.rate, args.minutes * 60)
    finally:
        faults.stop.set()
        faults.thread.join(60)
        keeper.set()
        alive.join(10)
        lm.close()
    stats = lm.stats()
    logging_s = time.monotonic() - t0
    faults.heal()
    watcher.stop.set()
    watcher.thread.join(10)
    watcher.poll()
    stop_code = copier.stop()
    final_codes = []
    for _ in range(FINAL_ATTEMPTS):
        code = copier.once()
        final_codes.append(code)
        if code == 0:
            break
    dest = destination_files(uri)
    return report(
        args,
        logged,
        logged_bytes,
        logging_s,
        stats,
        faults,
        copier,
        stop_code,
        final_codes,
        logs,
        dest,
        watcher,
        work,
    )


def report(
    args: argparse.Namespace,
    logged: int,
    logged_bytes: int,
    logging_s: float,
    stats: Any,
    faults: Faults,
    copier: Copier,
    stop_code: int | None,
    final_codes: list[int],
    logs: Path,
    dest: dict[str, bytes],
    watcher: RotatedWatcher,
    work: Path,
) -> int:
    seen = bytearray(logged)
    garbled = 0
    beyond = 0
    temps = [rel for rel in dest if TMP_MARK in rel]
    shipped_bytes = 0
    for rel, data in dest.items():
        if TMP_MARK in rel:
            continue
        shipped_bytes += len(data)
        for line in data.splitlines():
            m = RECORD_RE.match(line)
            if m is None:
                garbled += 1
                continue
            n = int(m.group(1))
            if n >= logged:
                beyond += 1
            elif seen[n] < 255:
                seen[n] += 1
    missing = [n for n in range(logged) if seen[n] == 0]
    duplicated = sum(c - 1 for c in seen if c > 1)
    # What the copier's pattern matches (app.log*, no dotfiles such as the
    # sink's .app.log.lock).
    sources = {p.name: p.read_bytes() for p in logs.glob("app.log*") if p.is_file()}
    differ = sorted(name for name, data in sources.items() if dest.get(name) != data)
    # Missing records inside a rotated file that retention deleted, unshipped.
    gone = {name: r for name, r in watcher.ranges.items() if name not in sources}
    unshipped = {name: r for name, r in gone.items() if name not in dest}
    to_retention = sum(1 for n in missing if any(a <= n <= b for a, b in unshipped.values()))
    lost = len(missing) - to_retention
    record_bytes = 10 + len(PAD) + 1
    print(
        f"logging:   {logged:,} records in {logging_s:.0f}s ({logged / logging_s:,.0f}/s), "
        f"{logged_bytes / 1e6:.1f} MB; accepted {stats.accepted:,}, written {stats.written:,}, "
        f"dropped {stats.dropped:,}"
    )
    print(
        f"rotation:  {args.rotation} each, retention {args.retention}; {len(watcher.ranges)} "
        f"rotated files seen, {len(gone)} deleted by retention ({len(unshipped)} unshipped)"
    )
    print(
        f"shipped:   {shipped_bytes / 1e6:.1f} MB in {len(dest) - len(temps)} files at the "
        f"destination; {len(temps)} temporary files left"
    )
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(faults.counts.items())) or "none"
    print(f"faults:    {sum(faults.counts.values())} injected: {kinds}")
    if faults.errors:
        print(f"           fault errors: {faults.errors[:5]}")
    print(
        f"copier:    {copier.starts} starts, unexpected exits {copier.unexpected_exits}, "
        f"stop exit {stop_code}, final --once exits {final_codes}"
    )
    print(
        f"records:   missing {len(missing):,} (lost {lost:,}, lost to retention before "
        f"shipping {to_retention:,}), duplicated {duplicated:,}, garbled lines {garbled:,}, "
        f"unknown numbers {beyond:,}"
    )
    print(f"bytes:     lost {lost * record_bytes:,}, duplicated {duplicated * record_bytes:,}")
    print(
        f"sources:   {len(sources)} still present, {len(differ)} differ from the destination"
        + (f": {differ[:5]}" if differ else "")
    )
    if missing:
        print(f"           first missing record numbers: {missing[:10]}")
    bad = (
        missing
        or duplicated
        or garbled
        or beyond
        or differ
        or stats.dropped
        or (final_codes and final_codes[-1] != 0)
    )
    if bad:
        print(f"SOAK FAILED (copier log: {work / 'copier.log'}, use --keep to inspect)")
        tail = (work / "copier.log").read_text(errors="replace").splitlines()[-15:]
        print("\n".join("  | " + line for line in tail))
        return 1
    print("SOAK OK: nothing lost, nothing duplicated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
