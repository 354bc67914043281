"""A model-based test of roll-up copies (Hypothesis ``RuleBasedStateMachine``).

A writer appends to ``app.log`` and rotates it (rename to a dated name, or
logrotate's numbered shift ``app.log.N`` -> ``app.log.N+1``, at times with equal
mtimes); time passes (files seal); copy cycles run; the copier crashes
between an append to a roll file and the manifest's commit (and the roll file
may then hold half a member more), or loses its manifest. Sources only grow
and are never deleted, so each inode's bytes are known for good.

Invariants, after every cycle that finishes:

* each roll file decompresses to exactly the source bytes its recorded spans
  name (inode and range), in order;
* the spans of each inode tile a prefix of it, with no gap and no overlap (no
  byte rolled twice, none skipped), and reach its end once it is sealed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow as pa
from anyio.from_thread import start_blocking_portal
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from aiologship._copy import CopyEngine, CopySpec, _rollrun
from aiologship._copy._manifest import MANIFEST_NAME
from aiologship._copy._rollstate import LEDGER_SUFFIX
from aiologship._copy._transfer import TMP_MARK

SETTLE = 30.0


class Crash(Exception):
    """Stands for SIGKILL after an append reached the roll file, before its
    commit (an Exception: a BaseException would end the portal's loop)."""


class RollupModel(RuleBasedStateMachine):
    COMPRESSION: str | None = "gzip"

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="rollup-model-"))
        self.src = self.tmp / "src"
        self.dst = self.tmp / "dst"
        self.state = self.tmp / "state"
        self.src.mkdir()
        self.now = 1_800_000_000.0
        self.content: dict[int, bytes] = {}  # inode -> every byte written to it
        self.parked: dict[int, Path] = {}  # inode -> where it waits, out of the pattern
        self.rotations = 0
        self.lines = 0
        self.spec = CopySpec.from_params(
            copy_name="model",
            path_patterns=[str(self.src / "app.log*")],
            hdfs_destination=str(self.dst),
            copy_interval=None,
            retry_delay=0,
            compression=self.COMPRESSION,
            rollup={"size": 12_000, "interval": 1200, "settle": SETTLE},
        )
        self._portal_cm = start_blocking_portal()
        self.portal = self._portal_cm.__enter__()
        self.engine: CopyEngine | None = None

    # ------------------------------------------------------------ helpers

    def open_engine(self) -> CopyEngine:
        if self.engine is None:
            engine = CopyEngine(self.spec, state_dir=self.state, clock=lambda: self.now, workers=2)
            self.portal.call(engine.open)
            self.engine = engine
        return self.engine

    def stop_engine(self) -> None:
        engine, self.engine = self.engine, None
        if engine is not None:
            self.portal.call(lambda: engine.stop(final_cycle=False))

    def manifest_path(self) -> Path:
        return self.state / self.spec.state_key / MANIFEST_NAME

    def decode(self, data: bytes) -> bytes:
        if self.COMPRESSION is None:
            return data
        out: bytes = pa.CompressedInputStream(pa.BufferReader(data), self.COMPRESSION).read()
        return out

    def check(self, sealed: bool) -> None:
        empty = {"rolls": [], "pending": None}
        rollup = json.loads(self.manifest_path().read_bytes()).get("rollup", empty)
        assert rollup["pending"] is None
        recorded = {r["name"]: r for r in rollup["rolls"]}
        files = {
            p.name: p.read_bytes()
            for p in self.dst.iterdir()
            if p.is_file() and not p.name.startswith(".")
        }
        assert sorted(files) == sorted(recorded)
        tiles: dict[int, list[tuple[int, int]]] = {}
        for name, data in files.items():
            roll = recorded[name]
            assert len(data) == roll["dest_size"]
            want = b"".join(self.content[ino][a:b] for _, ino, a, b in roll["spans"])
            assert self.decode(data) == want, name
            for _, ino, a, b in roll["spans"]:
                tiles.setdefault(ino, []).append((a, b))
        for ino, data in self.content.items():
            pos = 0
            for a, b in sorted(tiles.get(ino, [])):
                assert a == pos, f"inode {ino}: a gap or an overlap at {pos}"
                pos = b
            assert pos <= len(data)
            if sealed and ino not in self.parked:
                assert pos == len(data), f"inode {ino}: rolled {pos} of {len(data)}"
        hidden = [p.name for p in self.dst.iterdir() if p.name.startswith(".")]
        assert [n for n in hidden if not n.endswith(LEDGER_SUFFIX)] == []
        assert not [p for p in self.dst.iterdir() if TMP_MARK in p.name]

    def cycle_now(self) -> None:
        engine = self.open_engine()
        result = self.portal.call(engine.flush)
        assert result.destination_error is None, result.destination_error
        assert not result.file_errors, result.file_errors

    # ------------------------------------------------------------ rules

    @rule(n=st.integers(1, 40))
    def write(self, n: int) -> None:
        path = self.src / "app.log"
        data = b"".join(f"{self.lines + i:06d} {'w' * (i % 50)}\n".encode() for i in range(n))
        self.lines += n
        with open(path, "ab") as f:
            f.write(data)
        ino = os.stat(path).st_ino
        self.content[ino] = self.content.get(ino, b"") + data
        os.utime(path, (self.now, self.now))

    @precondition(lambda self: (self.src / "app.log").exists())
    @rule()
    def rotate(self) -> None:
        self.rotations += 1
        # Dated names, as our own sinks rotate to (never one the numbered scheme uses).
        os.rename(self.src / "app.log", self.src / f"app.log-{self.rotations:04d}")

    @precondition(lambda self: (self.src / "app.log").exists())
    @rule(same_mtime=st.booleans())
    def rotate_numbered(self, same_mtime: bool) -> None:
        """logrotate's numbered scheme: each app.log.N becomes app.log.N+1, then
        app.log becomes app.log.1 (a name now holds what another name held)."""
        numbered = sorted(
            (int(p.name.rsplit(".", 1)[1]), p)
            for p in self.src.glob("app.log.*")
            if p.name.rsplit(".", 1)[1].isdigit()
        )
        for n, path in reversed(numbered):
            os.rename(path, self.src / f"app.log.{n + 1}")
        os.rename(self.src / "app.log", self.src / "app.log.1")
        if same_mtime:
            for path in self.src.iterdir():
                os.utime(path, (self.now - 1, self.now - 1))

    @precondition(lambda self: (self.src / "app.log").exists())
    @rule()
    def move_away(self) -> None:
        """app.log moved out of the pattern (an operator's mv); the next write
        starts a new app.log at its path."""
        away = self.tmp / "away"
        away.mkdir(exist_ok=True)
        ino = os.stat(self.src / "app.log").st_ino
        os.rename(self.src / "app.log", away / str(ino))
        self.parked[ino] = away / str(ino)

    @precondition(lambda self: bool(self.parked))
    @rule()
    def bring_back(self) -> None:
        """A file moved away returns under a matching (dated) name."""
        _ino, path = self.parked.popitem()
        self.rotations += 1
        os.rename(path, self.src / f"app.log-{self.rotations:04d}")

    @rule(seconds=st.sampled_from([1.0, SETTLE, 400.0]))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def cycle(self) -> None:
        self.cycle_now()
        self.check(sealed=False)

    @rule()
    def cycle_after_settle(self) -> None:
        self.now += SETTLE
        self.cycle_now()
        self.check(sealed=True)

    @rule(junk=st.booleans(), n=st.integers(1, 20))
    def crash_between_append_and_commit(self, junk: bool, n: int) -> None:
        self.write(n)  # something to roll
        engine = self.open_engine()

        def crash(*args: Any, **kwargs: Any) -> None:
            raise Crash

        self.now += SETTLE
        with mock.patch.object(_rollrun.Roller, "_committed", crash), contextlib.suppress(Crash):
            self.portal.call(engine.flush)
        self.stop_engine()
        pending = json.loads(self.manifest_path().read_bytes()).get("rollup", {}).get("pending")
        # A new roll file is written under a temporary name and moved whole:
        # only an append to a committed one can be cut short under its name.
        if junk and pending is not None and pending["roll"]["dest_size"] > 0:
            with open(self.dst / pending["roll"]["name"], "ab") as f:
                f.write(b"\x1f\x8b\x08 half a member")

    @rule()
    def lose_manifest(self) -> None:
        self.stop_engine()
        self.manifest_path().unlink(missing_ok=True)

    def teardown(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self.stop_engine()
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)


# The suite's time is budgeted (about 1.5 s each here); ``nox -s soak``
# (AIOLOGSHIP_MODEL_PROFILE=long) runs many more, longer examples.
_LONG = os.environ.get("AIOLOGSHIP_MODEL_PROFILE") == "long"
_SETTINGS = settings(
    max_examples=300 if _LONG else 12,
    stateful_step_count=40 if _LONG else 14,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow],
)

TestRollupModel = RollupModel.TestCase
TestRollupModel.settings = _SETTINGS


class PlainRollupModel(RollupModel):
    COMPRESSION = None


TestPlainRollupModel = PlainRollupModel.TestCase
TestPlainRollupModel.settings = _SETTINGS
