"""A model-based test of the copy engine against a writer, an attacker and a careless
operator, all acting on one real folder tree (Hypothesis ``RuleBasedStateMachine``).

The machine keeps a model of every name under ``root/``: regular files (an identity
and their bytes), symlinks (to a file inside root, or to a SECRET file outside it)
and FIFOs. Rules write, rotate (rename, numbered, copytruncate), truncate, rewrite in
place, delete, plant symlinks and FIFOs, swap a file for a FIFO or a symlink between
the copier's scan and its transfer, run copy cycles in process, SIGKILL an
``aiologship copy`` subprocess at a random moment, delete destination files and the
manifest. The copier is a ``CopyEngine`` on its own event-loop thread, as the
manager runs it, opened again after every kill or restart.

Invariants (DESIGN.md, "Guarantees"):

* what the copier's manifest reports as shipped is at the destination: the first
  ``size`` bytes of the destination file are the source's bytes when it was shipped;
* nothing outside ``root`` is ever at the destination (the SECRET never appears);
* the copier never reports a FIFO or an outside symlink as shipped;
* after a cycle, every regular file under ``root`` is byte-identical at the
  destination and no temporary file is left;
* a cycle ends (a FIFO must not block it);
* bytes shipped never exceed the bytes written (a renamed file is not uploaded
  again), except after a kill, a lost manifest or a lost destination file, which
  allow a full re-upload.

``CompressedCopyModel`` plays the same game with ``compression="gzip"``: the
destination files are ``NAME.gz``, read decompressed (a member cut short by a
kill reads as far as it goes), and the budget counts source bytes read.

``AIOLOGSHIP_MODEL_PROFILE=long`` (``nox -s soak``) runs many more, longer examples.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from concurrent.futures import Future, wait
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any
from unittest import mock

from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, assume, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from aiologship._copy import CopyEngine, CopySpec
from aiologship._copy import _cycle as cycle_module
from aiologship._copy._manifest import MANIFEST_NAME, Manifest
from aiologship._copy._statedir import engine_lock_path
from aiologship._copy._transfer import TMP_MARK

REPO = Path(__file__).resolve().parents[2]
SECRET = b"SECRET-7f3c9a1e-never-ship-me"
COPY_NAME = "model"
BASES = ("app.log", "web.log")
LEAK = "leak.log"  # symlink to the secret outside root
ALIAS = "alias.log"  # symlink to a file inside root
PIPE = "pipe.log"  # FIFO
# A cycle over a few small local files takes milliseconds; these bound a hang.
CYCLE_TIMEOUT = 20.0
FIFO_GRACE = 1.0  # then look for a reader stuck opening one of our FIFOs
STOP_TIMEOUT = 20.0
KILL_WAIT = 20.0

_PROFILES = {
    "suite": settings(
        max_examples=60,
        stateful_step_count=20,
        deadline=None,
        # One minimal failure, quickly: shrinking several at once took up to 4 min.
        report_multiple_bugs=False,
        suppress_health_check=[HealthCheck.too_slow],
    ),
    "long": settings(
        max_examples=400,
        stateful_step_count=60,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    ),
}
PROFILE = os.environ.get("AIOLOGSHIP_MODEL_PROFILE", "suite")
if PROFILE not in _PROFILES:
    raise ValueError(f"AIOLOGSHIP_MODEL_PROFILE={PROFILE!r}: expected one of {sorted(_PROFILES)}")
# Each kill costs a Python start (~1 s here): a few per example.
MAX_KILLS = 1 if PROFILE == "suite" else 3


@dataclass
class Obj:
    """A regular file of the model: an identity (what survives a rename) and bytes."""

    ident: int
    data: bytes
    # Rewritten in place since the last full cycle: growing it now would be the
    # README's documented limit (rewritten in place *and* grown between two cycles:
    # only the new bytes ship), which this model does not play.
    rewritten: bool = False


@dataclass
class Report:
    """A manifest entry as first seen, with the source bytes it covered then."""

    dest: str
    key: tuple[Any, ...]
    expected: bytes | None  # None: the source was not a regular file under root


@dataclass
class Budget:
    """Bytes the copier may ship: what the writer added, plus full re-uploads
    allowed by events that lose the copier's knowledge."""

    allowed: int = 0
    shipped: int = 0
    events: list[str] = field(default_factory=list)


class _Hooks:
    """The scan seen by the engine, with a hook run right after it (the attacker's
    window between the scan's checks and the transfer's open)."""

    def __init__(self) -> None:
        self.after_scan: Callable[[], None] | None = None
        self.real_scan = cycle_module.scan

    async def scan(self, *args: Any, **kwargs: Any) -> Any:
        result = await self.real_scan(*args, **kwargs)
        hook, self.after_scan = self.after_scan, None
        if hook is not None:
            hook()
        return result


class CopyModel(RuleBasedStateMachine):
    COMPRESSION: str | None = None
    SUFFIX = ""

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="aiologship-model-"))
        self.root = self.tmp / "root"
        self.dest = self.tmp / "dest"
        self.state = self.tmp / "state"
        self.outside = self.tmp / "outside"
        for d in (self.root, self.outside):
            d.mkdir()
        self.secret = self.outside / "secret.log"
        self.secret.write_bytes(SECRET + b"\n")
        self.spec = CopySpec.from_params(
            copy_name=COPY_NAME,
            path_patterns=[str(self.root / "*.log*")],
            hdfs_destination=str(self.dest),
            root_dir=str(self.root),
            preserve_structure=True,
            copy_interval=None,
            retry_delay=0,
            max_retries=1,
            compression=self.COMPRESSION,
        )
        self.files: dict[str, Obj] = {}
        self.links: dict[str, str | None] = {}  # name -> target name in root, None: SECRET
        self.fifos: set[str] = set()
        self.ids = count(1)
        self.seq = count()
        self.stamps = count(1)
        self.reports: dict[str, Report] = {}
        # Every manifest entry ever seen, with the bytes it covered: an engine that
        # still holds an entry in memory writes it again after the manifest is lost.
        self.history: dict[tuple[str, tuple[Any, ...]], bytes | None] = {}
        self.shipped_by_closed = 0
        self.disturbed: set[str] = set()  # destination names someone else deleted
        self.budget = Budget()
        self.kills = 0
        # After a SIGKILL and until the next completed cycle, a destination file may
        # hold a newer version than the manifest says: the copier died between the
        # upload and the manifest save. Only the current source's bytes may be there.
        self.unsettled = False
        self.killed_view: dict[str, tuple[int, bytes]] = {}
        self.hooks = _Hooks()
        self._patch = mock.patch.object(cycle_module, "scan", self.hooks.scan)
        self._patch.start()
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal: BlockingPortal = self._portal_cm.__enter__()
        self.engine: CopyEngine | None = None

    # ------------------------------------------------------------ model helpers

    def path(self, name: str) -> Path:
        return self.root / name

    def view(self) -> dict[str, tuple[int, bytes]]:
        """What a copier may ship: name -> (identity, bytes), symlinks resolved
        inside root; the secret and FIFOs are not in it."""
        out = {name: (o.ident, o.data) for name, o in self.files.items()}
        for name, target in self.links.items():
            if target is not None and target in self.files:
                o = self.files[target]
                out[name] = (o.ident, o.data)
        return out

    def charge(self, before: dict[str, tuple[int, bytes]]) -> None:
        """Add to the budget what the last writer step made new. A renamed file
        (its identity left its old name) costs only what it gained."""
        after = self.view()
        claimed: set[int] = set()
        # Regular names first: a symlink is a second name, never the renamed one.
        for name in sorted(after, key=lambda n: (n in self.links, n)):
            ident, data = after[name]
            old = before.get(name)
            if old == (ident, data):
                continue
            if old is not None and old[0] == ident and data.startswith(old[1]):
                self.budget.allowed += len(data) - len(old[1])
                continue
            moved = [
                d
                for n, (i, d) in before.items()
                if i == ident and n != name and after.get(n, (None, b""))[0] != ident
            ]
            if moved and ident not in claimed and data.startswith(moved[0]):
                claimed.add(ident)
                self.budget.allowed += len(data) - len(moved[0])
                continue
            self.budget.allowed += len(data)

    def allow_full_reupload(self, why: str) -> None:
        self.budget.allowed += sum(len(d) for _, d in self.view().values())
        self.budget.events.append(why)

    def write(self, name: str, data: bytes, mode: str) -> None:
        """Write and make sure the new version has a new mtime: with coarse
        timestamps two versions of one size could otherwise be told apart only
        by reading them, which the guarantee ("per version") does not ask."""
        path = self.path(name)
        try:
            before = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            before = None
        with open(path, mode) as f:
            f.write(data)
        self._advance_mtime(path, before)

    @staticmethod
    def _advance_mtime(path: Path, before: int | None) -> None:
        if before is not None and os.stat(path).st_mtime_ns <= before:
            later = before + 1_000_000
            os.utime(path, ns=(later, later))

    def lines(self, name: str, n: int, width: int) -> bytes:
        return b"".join(f"{name} {next(self.seq):08d} {'x' * width}\n".encode() for _ in range(n))

    def regular(self) -> list[str]:
        return sorted(self.files)

    def remove_name(self, name: str) -> None:
        p = self.path(name)
        if p.is_symlink() or p.exists():
            p.unlink()
        self.files.pop(name, None)
        self.links.pop(name, None)
        self.fifos.discard(name)

    # ------------------------------------------------------------ copier helpers

    def open_engine(self) -> CopyEngine:
        if self.engine is None:
            lost = not (self.state / self.spec.state_key / MANIFEST_NAME).exists()
            if lost and self.dest_files():
                self.allow_full_reupload("opened without a manifest")
            engine = CopyEngine(self.spec, state_dir=self.state, workers=2)
            self.portal.call(engine.open)
            self.engine = engine
        return self.engine

    def stop_engine(self, final_cycle: bool) -> None:
        engine, self.engine = self.engine, None
        if engine is None:
            return
        fut = self.portal.start_task_soon(lambda: engine.stop(final_cycle=final_cycle))
        try:
            self.wait_cycle(fut, "stop()")
        finally:
            self.shipped_by_closed += self.source_bytes_shipped(engine)

    def wait_cycle(self, fut: Future[Any], what: str) -> Any:
        """The cycle's result, failing the example (not hanging the suite) when it
        does not end. A copier thread stuck opening one of our FIFOs is released
        (a writer opens and closes it), so the engine can finish and be stopped."""
        try:
            return fut.result(timeout=FIFO_GRACE)
        except FutureTimeout:
            pass
        deadline = time.monotonic() + CYCLE_TIMEOUT
        stuck: set[str] = set()
        while not fut.done() and time.monotonic() < deadline:
            stuck.update(self.release_fifo_readers())
            wait([fut], timeout=0.05)
        if stuck:
            cause = fut.exception() if fut.done() else None
            raise AssertionError(
                f"{what} hung: the copier opened the FIFO(s) {sorted(stuck)} and blocked "
                f"(released by the test; the cycle then ended with {cause!r})"
            ) from cause
        if not fut.done():
            raise AssertionError(f"{what} hung: not done after {CYCLE_TIMEOUT:.0f} s")
        return fut.result()

    def release_fifo_readers(self) -> list[str]:
        """Names of FIFOs under root that a reader holds open (it can only be the
        copier); opening them for writing and closing again releases the reader."""
        stuck = []
        for p in self.root.iterdir():
            try:
                if not stat.S_ISFIFO(os.lstat(p).st_mode):
                    continue
                fd = os.open(p, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno in (errno.ENXIO, errno.ENOENT):
                    continue  # no reader: nobody is blocked on it
                raise
            os.close(fd)
            stuck.append(p.name)
        return stuck

    def run_cycle(self) -> None:
        engine = self.open_engine()
        fut = self.portal.start_task_soon(engine.flush)
        self.wait_cycle(fut, "a copy cycle")
        self.sync_reports()
        self.unsettled = False
        for obj in self.files.values():
            obj.rewritten = False

    def load_manifest(self) -> dict[str, Any]:
        loaded = Manifest.load(
            self.state / self.spec.state_key / MANIFEST_NAME,
            copy_name=COPY_NAME,
            destination=self.spec.destination_redacted,
        )
        return {} if loaded is None else dict(loaded.entries)

    def sync_reports(self) -> None:
        """Take what the manifest now reports. An entry seen for the first time
        covers the source's bytes as they are now: no writer acts while a copier
        runs in this model (the swap rule's attacker aside)."""
        entries = self.load_manifest()
        view = self.view()
        reports: dict[str, Report] = {}
        for source, entry in entries.items():
            key = (entry.dest, entry.size, entry.mtime_ns, entry.ino, entry.dev)
            if (source, key) not in self.history:
                name = os.path.relpath(source, self.root)
                self.history[source, key] = view[name][1][: entry.size] if name in view else None
                self.disturbed.discard(entry.dest)
            reports[source] = Report(entry.dest, key, self.history[source, key])
        self.reports = reports

    def dest_files(self) -> dict[str, bytes]:
        """Destination name -> what it holds (decompressed, for a compressed copy)."""
        if not self.dest.exists():
            return {}
        return {
            str(p.relative_to(self.dest)): self.decode(p.read_bytes())
            for p in sorted(self.dest.rglob("*"))
            if p.is_file() and not p.is_symlink()
        }

    @staticmethod
    def decode(data: bytes) -> bytes:
        return data

    @staticmethod
    def source_bytes_shipped(engine: CopyEngine) -> int:
        return engine.status().bytes_shipped

    # ------------------------------------------------------------ writer rules

    @initialize()
    def a_shipped_log(self) -> None:
        """Start where users are: a live log past its fingerprints, shipped once."""
        self.append("app.log", 100, 60)
        self.run_cycle()

    # Up to ~36 KB per append: files grow past the 4 KiB fingerprints at each end,
    # so a change in the middle is seen only by what the copier really compares.
    @rule(base=st.sampled_from(BASES), n=st.integers(1, 300), width=st.integers(0, 100))
    def append(self, base: str, n: int, width: int) -> None:
        before = self.view()
        data = self.lines(base, n, width)
        obj = self.files.get(base)
        assume(obj is None or not obj.rewritten)
        if obj is None:
            self.remove_name(base)
            obj = self.files[base] = Obj(next(self.ids), b"")
        self.write(base, data, "ab")
        obj.data += data
        self.charge(before)

    @precondition(lambda self: any(b in self.files for b in BASES))
    @rule(data=st.data())
    def rotate_by_rename(self, data: st.DataObject) -> None:
        base = data.draw(st.sampled_from([b for b in BASES if b in self.files]))
        before = self.view()
        new = f"{base}.20261201-{next(self.stamps):06d}"
        os.rename(self.path(base), self.path(new))
        self.files[new] = self.files.pop(base)
        self.charge(before)

    def _shift(self, base: str, keep: int) -> None:
        """logrotate's numbered scheme: drop base.keep, base.k -> base.k+1."""
        last = f"{base}.{keep}"
        if last in self.files or last in self.links or last in self.fifos:
            self.remove_name(last)
        for k in range(keep - 1, 0, -1):
            old, new = f"{base}.{k}", f"{base}.{k + 1}"
            if old in self.files:
                self.remove_name(new)
                os.rename(self.path(old), self.path(new))
                self.files[new] = self.files.pop(old)

    @precondition(lambda self: any(b in self.files for b in BASES))
    @rule(data=st.data(), keep=st.integers(1, 3))
    def rotate_numbered(self, data: st.DataObject, keep: int) -> None:
        base = data.draw(st.sampled_from([b for b in BASES if b in self.files]))
        before = self.view()
        self._shift(base, keep)
        self.remove_name(f"{base}.1")
        os.rename(self.path(base), self.path(f"{base}.1"))
        self.files[f"{base}.1"] = self.files.pop(base)
        self.charge(before)

    @precondition(lambda self: any(b in self.files for b in BASES))
    @rule(data=st.data(), keep=st.integers(1, 3))
    def copytruncate(self, data: st.DataObject, keep: int) -> None:
        base = data.draw(st.sampled_from([b for b in BASES if b in self.files]))
        before = self.view()
        self._shift(base, keep)
        self.remove_name(f"{base}.1")
        shutil.copyfile(self.path(base), self.path(f"{base}.1"))
        self.files[f"{base}.1"] = Obj(next(self.ids), self.files[base].data)
        self._truncate(base, 0)
        self.charge(before)

    def _truncate(self, name: str, size: int) -> None:
        path = self.path(name)
        before = os.stat(path).st_mtime_ns
        os.truncate(path, size)
        self._advance_mtime(path, before)
        self.files[name].data = self.files[name].data[:size]

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def truncate(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(self.regular()))
        size = data.draw(st.integers(0, max(0, len(self.files[name].data) - 1)))
        before = self.view()
        self._truncate(name, size)
        self.charge(before)

    @precondition(lambda self: any(o.data for o in self.files.values()))
    @rule(data=st.data())
    def rewrite_in_place(self, data: st.DataObject) -> None:
        """Same size, new bytes in the middle (a preallocated file written into)."""
        name = data.draw(st.sampled_from([n for n in self.regular() if self.files[n].data]))
        obj = self.files[name]
        offset = data.draw(st.integers(0, len(obj.data) - 1))
        n = data.draw(st.integers(1, min(16, len(obj.data) - offset)))
        new = bytes(ord("Z") if c != ord("Z") else ord("Q") for c in obj.data[offset : offset + n])
        before = self.view()
        path = self.path(name)
        mtime = os.stat(path).st_mtime_ns
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(new)
        self._advance_mtime(path, mtime)
        obj.data = obj.data[:offset] + new + obj.data[offset + n :]
        obj.rewritten = True
        self.charge(before)

    @precondition(lambda self: bool(self.files or self.links or self.fifos))
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(sorted({*self.files, *self.links, *self.fifos})))
        before = self.view()
        self.remove_name(name)
        self.charge(before)

    @rule()
    def symlink_to_secret_outside(self) -> None:
        before = self.view()
        self.remove_name(LEAK)
        os.symlink(self.secret, self.path(LEAK))
        self.links[LEAK] = None
        self.charge(before)

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data())
    def symlink_inside(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(self.regular()))
        before = self.view()
        self.remove_name(ALIAS)
        os.symlink(target, self.path(ALIAS))  # relative: stays inside root
        self.links[ALIAS] = target
        self.charge(before)

    @rule()
    def make_fifo(self) -> None:
        before = self.view()
        self.remove_name(PIPE)
        os.mkfifo(self.path(PIPE))
        self.fifos.add(PIPE)
        self.charge(before)

    # ------------------------------------------------------------ copier rules

    @rule()
    def cycle(self) -> None:
        self.run_cycle()
        self.check_converged()
        self.check_budget()

    @precondition(lambda self: bool(self.files))
    @rule(data=st.data(), into=st.sampled_from(["fifo", "secret"]))
    def cycle_with_swap_after_scan(self, data: st.DataObject, into: str) -> None:
        """An attacker swaps a scanned regular file for a FIFO or a symlink to the
        secret before the transfer opens it."""
        victim = data.draw(st.sampled_from(self.regular()))
        self.allow_full_reupload("a file swapped during a cycle")

        def swap() -> None:
            self.remove_name(victim)
            if into == "fifo":
                os.mkfifo(self.path(victim))
                self.fifos.add(victim)
            else:
                os.symlink(self.secret, self.path(victim))
                self.links[victim] = None

        self.hooks.after_scan = swap
        try:
            self.run_cycle()
        finally:
            self.hooks.after_scan = None

    @precondition(lambda self: self.kills < MAX_KILLS)
    @rule(delay=st.floats(0.0, 0.1), go=st.integers(0, 2))
    def sigkill_copier_subprocess(self, delay: float, go: int) -> None:
        """``aiologship copy --once`` in another process, SIGKILLed ``delay`` seconds
        after it took the copy's lock (its cycle is then under way; a cycle over
        these files takes milliseconds), or done before; the next in-process cycle
        is the restarted copier. Drawn rarely (``go``): each costs a Python start."""
        if go:
            return
        self.kills += 1
        self.unsettled = True
        # What the killed copier could have shipped: no writer acts while it runs.
        self.killed_view = self.view()
        self.stop_engine(final_cycle=False)
        self.allow_full_reupload("a copier SIGKILLed")
        env = dict(os.environ, PYTHONPATH=str(REPO))
        cmd = [
            sys.executable,
            "-c",
            "import sys; from aiologship.cli import main; sys.exit(main(sys.argv[1:]))",
            "copy",
            str(self.root / "*.log*"),
            "--to",
            str(self.dest),
            "--root-dir",
            str(self.root),
            "--preserve-structure",
            "--name",
            COPY_NAME,
            "--state-dir",
            str(self.state),
            "--max-retries",
            "1",
            "--retry-delay",
            "0",
            "--no-progress",
            *(["--compression", self.COMPRESSION] if self.COMPRESSION else []),
        ]
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err)
            lock = engine_lock_path(self.state, self.spec.state_key)
            deadline = time.monotonic() + KILL_WAIT
            while proc.poll() is None and not _holds(proc.pid, lock):
                assert time.monotonic() < deadline, "the copier subprocess never took its lock"
                time.sleep(0.002)  # polling /proc: nothing to wait on across processes
            try:
                proc.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
            try:
                code = proc.wait(timeout=KILL_WAIT)
            except subprocess.TimeoutExpired:
                # Blocked on a FIFO with SIGKILL pending is impossible; anything else
                # that survives SIGKILL this long is a bug of the test machine.
                proc.kill()
                proc.wait(timeout=KILL_WAIT)
                raise AssertionError("the copier subprocess outlived SIGKILL") from None
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        assert code in (0, 1, -signal.SIGKILL), f"copier exited {code}: {stderr[-2000:]}"
        self.sync_reports()

    @rule(final_cycle=st.booleans())
    def restart_copier(self, final_cycle: bool) -> None:
        """stop() (with or without its final cycle), then a new engine."""
        if final_cycle and self.engine is not None:
            self.stop_engine(final_cycle=True)
            self.sync_reports()
        else:
            self.stop_engine(final_cycle=False)

    @rule(pick=st.integers(0, 63))
    def destination_loses_a_file(self, pick: int) -> None:
        # What is at the destination depends on timing (a SIGKILL lands anywhere), so
        # it must not decide what is drawn: Hypothesis replays a run by its draws
        # (drawing from the real listing failed as FlakyStrategyDefinition).
        have = sorted(self.dest_files())
        if not have:
            return
        rel = have[pick % len(have)]
        # Its bytes must be uploaded again, under whatever name the source now
        # has (it may have been renamed since it was shipped).
        lost = len(self.decode((self.dest / rel).read_bytes()))
        (self.dest / rel).unlink()
        self.disturbed.add(rel)
        self.budget.allowed += lost
        self.budget.events.append("a destination file deleted")

    @rule()
    def manifest_deleted(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.state / self.spec.state_key / MANIFEST_NAME).unlink()
        self.sync_reports()

    # ------------------------------------------------------------ checks

    def check_converged(self) -> None:
        """After a cycle every regular file under root is at the destination."""
        have = self.dest_files()
        wrong = {
            name: (len(obj.data), len(have[name]) if name in have else None)
            for name, obj in self.files.items()
            if have.get(name + self.SUFFIX) != obj.data
        }
        assert not wrong, f"after a cycle, not byte-identical (source size, dest size): {wrong}"
        temps = [rel for rel in have if TMP_MARK in rel]
        assert not temps, f"temporary files left after a cycle: {temps}"
        # Nothing the copier reported is missing any more: it re-shipped or knows.
        shipped = {name + self.SUFFIX for name in self.files}
        self.disturbed = {rel for rel in self.disturbed if rel not in shipped}

    def check_budget(self) -> None:
        b = self.budget
        b.shipped = self.shipped_by_closed + (
            self.source_bytes_shipped(self.engine) if self.engine else 0
        )
        assert b.shipped <= b.allowed, (
            f"shipped {b.shipped} bytes where the writer added {b.allowed} "
            f"(re-uploads allowed for: {b.events}): a renamed or unchanged file was "
            "uploaded again"
        )

    @invariant()
    def nothing_outside_root_at_destination(self) -> None:
        for rel, data in self.dest_files().items():
            assert SECRET not in data, f"the SECRET from outside root_dir is at {rel}"

    @invariant()
    def reported_sources_were_regular_files_in_root(self) -> None:
        bad = sorted(s for s, r in self.reports.items() if r.expected is None)
        assert not bad, f"the copier reports as shipped what is not a regular file in root: {bad}"

    @invariant()
    def reported_shipped_is_at_destination(self) -> None:
        have = self.dest_files()
        for source, report in self.reports.items():
            if report.dest in self.disturbed or report.expected is None:
                continue
            size = report.key[1]
            got = have.get(report.dest)
            assert got is not None, f"{source} reported shipped, {report.dest} missing"
            holds = len(got) >= size and got[:size] == report.expected
            if self.unsettled and not holds:
                name = os.path.relpath(source, self.root)
                # A newer version the killed copier shipped, unrecorded: the
                # source's bytes at the kill (writers may have changed it since).
                then = self.killed_view.get(name)
                if then is not None and then[1].startswith(got):
                    continue
                now = self.view().get(name)
                if now is not None and now[1].startswith(got):
                    continue
            assert holds, (
                f"{source} reported shipped ({size} bytes) but {report.dest} holds "
                f"{len(got)} bytes that differ from the source's bytes when shipped"
            )

    def teardown(self) -> None:
        try:
            self.release_fifo_readers()
            with contextlib.suppress(AssertionError):
                self.stop_engine(final_cycle=False)
        finally:
            self.hooks.after_scan = None
            self._patch.stop()
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)


def _holds(pid: int, path: Path) -> bool:
    """Has process ``pid`` the file ``path`` open? (Linux /proc, no side effect:
    trying the flock ourselves could make the copier fail to take it.)"""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/{pid}/fd/{fd}") == os.path.realpath(path):
                return True
    return False


TestCopyModel = CopyModel.TestCase
TestCopyModel.settings = _PROFILES[PROFILE]


class CompressedCopyModel(CopyModel):
    COMPRESSION = "gzip"
    SUFFIX = ".gz"

    @staticmethod
    def decode(data: bytes) -> bytes:
        """Every gzip member in turn; a member a kill cut short gives what it holds."""
        out = []
        while data:
            d = zlib.decompressobj(wbits=31)
            try:
                out.append(d.decompress(data))
            except zlib.error:
                out.append(b"<not gzip>")
                break
            if not d.eof:
                break
            data = d.unused_data
        return b"".join(out)

    @staticmethod
    def source_bytes_shipped(engine: CopyEngine) -> int:
        return engine.status().bytes_read


# Fewer examples: the same engine paths, compressed (the suite's time is budgeted).
TestCompressedCopyModel = CompressedCopyModel.TestCase
TestCompressedCopyModel.settings = settings(
    _PROFILES[PROFILE], max_examples=20 if PROFILE == "suite" else 200
)
