"""What the copy engine knows about a file and what the destination holds:
in-place writes, destination files changed or removed by someone else, numbered
rotation (renamed generations are moved at the destination, never re-sent), and
the manifest kept to the sources that still exist."""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anyio.from_thread import start_blocking_portal
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from aiologship._copy import CopyEngine
from aiologship._fs import Destination
from tests.copy.test_engine import Env, LocalHandler, lines

pytestmark = pytest.mark.anyio


Resolver = Callable[[str], Destination] | None


def _local(env: Env) -> Resolver:
    return None


def _pyarrow(env: Env) -> Resolver:
    # The generic (non-local) transfer path, through a PyFileSystem handler.
    return LocalHandler(env.dst).resolver


DESTINATIONS = pytest.mark.parametrize("make", [_local, _pyarrow], ids=["local", "pyarrow"])


def manifest_entries(engine: CopyEngine) -> dict[str, Any]:
    data = json.loads((engine.state_path / "manifest.json").read_bytes())
    files: dict[str, Any] = data["files"]
    return files


def status_file(engine: CopyEngine) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((engine.state_path / "status.json").read_bytes())
    return data


def bump_mtime(path: Path, by_ns: int = 1_000_000_000) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + by_ns))


# ---------------------------------------------------------------- in-place writes


@DESTINATIONS
async def test_same_size_write_in_the_middle_is_shipped(env: Env, make: Any) -> None:
    # A preallocated file written in the middle: its size does not change and
    # neither do its first and last bytes.
    path = env.write("pre.log", b"\0" * 100_000)
    engine = await env.engine(resolver=make(env))
    await engine.flush()
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), b"written in place\n", 50_000)
    bump_mtime(path)
    result = await engine.flush()
    assert result.ok
    assert (result.files_shipped, result.files_replaced) == (1, 1)
    assert env.dest_files() == {"pre.log": path.read_bytes()}


async def test_an_in_place_write_that_restores_the_mtime_is_shipped(env: Env) -> None:
    path = env.write("pre.log", b"\0" * 100_000)
    engine = await env.engine()
    await engine.flush()
    st = path.stat()
    with open(path, "r+b") as f:
        os.pwrite(f.fileno(), b"sneaky\n", 40_000)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # only the ctime tells
    result = await engine.flush()
    assert result.files_replaced == 1
    assert env.dest_files() == {"pre.log": path.read_bytes()}


async def test_a_touch_ships_nothing_and_then_is_unchanged(env: Env) -> None:
    path = env.write("a.log", lines(0, 1000))
    engine = await env.engine()
    await engine.flush()
    bump_mtime(path)
    touched = await engine.flush()
    assert touched.ok and (touched.files_shipped, touched.bytes_shipped) == (0, 0)
    again = await engine.flush()
    assert (again.files_shipped, again.pending_files) == (0, 0)
    # Growth after the touch is still an append of the new bytes only.
    env.write("a.log", lines(1000, 3), mode="ab")
    grown = await engine.flush()
    assert (grown.files_appended, grown.bytes_shipped) == (1, len(lines(1000, 3)))
    assert env.dest_files() == {"a.log": path.read_bytes()}


# ---------------------------------------------------------------- the destination


@DESTINATIONS
async def test_a_destination_file_deleted_by_someone_else_is_shipped_again(
    env: Env, make: Any
) -> None:
    env.write("a.log", lines(0, 10))
    env.write("sub/b.log", lines(10, 10))
    engine = await env.engine(
        resolver=make(env),
        path_patterns=["**/*.log"],
        root_dir=str(env.src),
        preserve_structure=True,
    )
    await engine.flush()
    (env.dst / "sub" / "b.log").unlink()
    result = await engine.flush()
    assert result.ok and (result.files_shipped, result.bytes_shipped) == (1, len(lines(10, 10)))
    assert env.dest_files() == {"a.log": lines(0, 10), "sub/b.log": lines(10, 10)}


async def test_status_counts_only_what_is_at_the_destination(env: Env) -> None:
    env.write("a.log", lines(0, 10))
    env.write("b.log", lines(10, 10))
    broken = False
    handler = LocalHandler(env.dst, fail=lambda name, path: broken and name == "open_output_stream")
    engine = await env.engine(resolver=handler.resolver, max_retries=0)
    await engine.flush()
    assert status_file(engine)["manifest_files"] == 2
    (env.dst / "b.log").unlink()
    broken = True  # the destination lists but refuses new files
    result = await engine.flush()
    assert result.pending_files == 1
    status = status_file(engine)
    assert (status["manifest_files"], status["manifest_bytes"]) == (1, len(lines(0, 10)))
    broken = False
    assert (await engine.flush()).ok
    assert status_file(engine)["manifest_files"] == 2
    assert env.dest_files() == {"a.log": lines(0, 10), "b.log": lines(10, 10)}


async def test_an_unchanged_cycle_lists_each_destination_folder_once(env: Env) -> None:
    for i in range(30):
        env.write(f"d{i % 3}/f{i}.log", lines(i, 2))
    handler = LocalHandler(env.dst)
    engine = await env.engine(
        resolver=handler.resolver,
        path_patterns=["**/*.log"],
        root_dir=str(env.src),
        preserve_structure=True,
    )
    await engine.flush()
    handler.calls.clear()
    result = await engine.flush()
    assert result.ok and result.files_shipped == 0
    assert sorted(handler.calls) == ["get_file_info_selector"] * 3


@DESTINATIONS
async def test_append_never_lands_on_someone_elses_file(env: Env, make: Any) -> None:
    path = env.write("app.log", lines(0, 100))
    engine = await env.engine(resolver=make(env))
    await engine.flush()
    # Another writer replaces the destination file with one of the same size.
    foreign = lines(500, 100)
    assert len(foreign) == path.stat().st_size
    (env.dst / "app.log").write_bytes(foreign)
    env.write("app.log", lines(100, 5), mode="ab")
    result = await engine.flush()
    assert result.ok and (result.files_appended, result.files_replaced) == (0, 1)
    assert env.dest_files() == {"app.log": path.read_bytes()}


async def test_a_destination_file_changed_in_place_at_the_tail_is_replaced(env: Env) -> None:
    path = env.write("app.log", lines(0, 100))
    engine = await env.engine()
    await engine.flush()
    with open(env.dst / "app.log", "r+b") as f:
        os.pwrite(f.fileno(), b"XXXX", path.stat().st_size - 10)
    env.write("app.log", lines(100, 5), mode="ab")
    result = await engine.flush()
    assert result.files_replaced == 1
    assert env.dest_files() == {"app.log": path.read_bytes()}


# ---------------------------------------------------------------- numbered rotation


def logrotate(src: Path, name: str, keep: int) -> None:
    """``rotate keep``: name.(keep-1) -> name.keep, ..., name -> name.1."""
    for n in range(keep - 1, 0, -1):
        older = src / f"{name}.{n}"
        if older.exists():
            older.rename(src / f"{name}.{n + 1}")
    (src / name).rename(src / f"{name}.1")


@DESTINATIONS
async def test_numbered_logrotate_ships_every_byte_once(env: Env, make: Any) -> None:
    engine = await env.engine(resolver=make(env))
    written = 0
    shipped = 0
    serial = 0
    for rotation in range(5):
        for step in range(3):
            data = lines(serial, 40 + rotation + step)
            serial += 1000
            env.write("app.log", data, mode="ab")
            written += len(data)
            if step < 2:  # the last bytes of a generation ship after its rename
                result = await engine.flush()
                assert result.ok
                shipped += result.bytes_shipped
        logrotate(env.src, "app.log", keep=2)
        env.write("app.log", b"")
        result = await engine.flush()
        assert result.ok
        shipped += result.bytes_shipped
        # Every destination name mirrors the current source of that name.
        assert env.dest_files() == {
            p.name: p.read_bytes() for p in env.src.iterdir() if p.is_file()
        }
    # Generations deleted by the rotation had been shipped before their deletion.
    assert shipped == written
    assert engine.status().bytes_shipped == written
    assert env.temp_files() == []


@DESTINATIONS
async def test_a_rename_seen_by_the_first_cycle_of_a_new_copier_is_moved(
    env: Env, make: Any
) -> None:
    # The first cycle of a process lists the whole destination before it follows
    # renames; that listing must not make the moved file look missing (found by
    # tests/copy/test_model.py: the file was uploaded a second time).
    env.write("app.log", lines(0, 50))
    first = await env.engine(resolver=make(env))
    assert (await first.flush()).ok
    await first.stop(final_cycle=False)
    (env.src / "app.log").rename(env.src / "app.log.1")
    second = await env.engine(resolver=make(env))
    result = await second.flush()
    assert result.ok
    assert result.bytes_shipped == 0
    assert env.dest_files() == {"app.log.1": lines(0, 50)}


async def test_a_rename_whose_destination_file_was_changed_is_shipped_in_full(
    env: Env,
) -> None:
    env.write("app.log", lines(0, 50))
    engine = await env.engine()
    await engine.flush()
    (env.dst / "app.log").write_bytes(lines(900, 50))  # someone else's bytes
    (env.src / "app.log").rename(env.src / "app.log.1")
    result = await engine.flush()
    assert result.ok
    assert env.dest_files()["app.log.1"] == lines(0, 50)


async def test_inode_reuse_is_not_taken_for_a_rename(env: Env) -> None:
    # A new file may get the inode of a deleted one: the head fingerprint tells.
    # Another process (a parallel test worker) may take the freed inode first:
    # the scenario is tried again with fresh names before the test gives up.
    engine = await env.engine()
    reused = None
    for attempt in range(5):
        name = f"a{attempt}.log"
        path = env.write(name, lines(0, 50))
        await engine.flush()
        ino = path.stat().st_ino
        path.unlink()
        for i in range(50):
            candidate = env.write(f"b{attempt}-{i}.log", lines(700, 60))
            if candidate.stat().st_ino == ino:
                reused = candidate
                break
        if reused is not None:
            break
    if reused is None:
        pytest.skip("the filesystem reused no freed inode in 5 tries")
    result = await engine.flush()
    assert result.ok
    assert env.dest_files()[reused.name] == lines(700, 60)
    assert env.dest_files()[name] == lines(0, 50)


async def test_swapped_names_are_shipped_correctly(env: Env) -> None:
    a = env.write("a.log", lines(0, 30))
    b = env.write("b.log", lines(100, 40))
    engine = await env.engine()
    await engine.flush()
    tmp = env.src / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    result = await engine.flush()
    assert result.ok
    assert env.dest_files() == {"a.log": lines(100, 40), "b.log": lines(0, 30)}


async def test_rename_after_a_lost_manifest_converges(env: Env) -> None:
    env.write("app.log", lines(0, 30))
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    (engine.state_path / "manifest.json").unlink()
    logrotate(env.src, "app.log", keep=2)
    env.write("app.log", lines(500, 5))
    again = await env.engine()
    assert (await again.flush()).ok
    assert env.dest_files() == {p.name: p.read_bytes() for p in env.src.iterdir()}


# ---------------------------------------------------------------- the manifest


async def test_the_manifest_forgets_deleted_sources(env: Env) -> None:
    for i in range(5):
        env.write(f"f{i}.log", lines(i, 3))
    engine = await env.engine()
    await engine.flush()
    for i in range(1, 5):
        (env.src / f"f{i}.log").unlink()
    # Kept one cycle (a rename seen half-way by the scan shows up next cycle).
    await engine.flush()
    await engine.flush()
    assert sorted(manifest_entries(engine)) == [str(env.src / "f0.log")]
    assert status_file(engine)["manifest_files"] == 1


async def test_a_copier_run_once_at_a_time_prunes_too(env: Env) -> None:
    # ``aiologship copy --once`` from cron: one cycle per process.
    for i in range(3):
        env.write(f"f{i}.log", lines(i, 3))
    first = await env.engine()
    await first.flush()
    await first.stop(final_cycle=False)
    (env.src / "f1.log").unlink()
    for _ in range(2):
        run = await env.engine()
        await run.flush()
        await run.stop(final_cycle=False)
    assert sorted(manifest_entries(run)) == [str(env.src / f"f{i}.log") for i in (0, 2)]


async def test_an_unchanged_cycle_does_not_rewrite_the_manifest(env: Env) -> None:
    for i in range(5):
        env.write(f"f{i}.log", lines(i, 3))
    engine = await env.engine()
    await engine.flush()
    await engine.flush()
    manifest = engine.state_path / "manifest.json"
    before = manifest.stat()
    await engine.flush()
    after = manifest.stat()
    # write_atomic always renames a new inode into place.
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("size", -5),
        ("ino", -1),
        ("dest", "../escape.log"),
        ("dest", "/abs.log"),
        ("dest", ""),
        ("head", "not-a-hash"),
    ],
)
async def test_a_manifest_with_nonsense_values_is_rebuilt(
    env: Env, field: str, value: Any, caplog: pytest.LogCaptureFixture
) -> None:
    path = env.write("a.log", lines(0, 10))
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    manifest = engine.state_path / "manifest.json"
    data = json.loads(manifest.read_bytes())
    data["files"][str(path)][field] = value
    manifest.write_text(json.dumps(data))
    env.write("a.log", lines(10, 2), mode="ab")
    with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
        again = await env.engine()
    assert any(r.levelno == logging.WARNING and "corrupt" in r.getMessage() for r in caplog.records)
    result = await again.flush()
    assert result.ok and result.bytes_shipped == len(lines(10, 2))
    assert env.dest_files() == {"a.log": path.read_bytes()}


async def test_renames_on_a_destination_without_move_over_existing_files(env: Env) -> None:
    # HDFS refuses to rename onto an existing file: the engine deletes first.
    class NoOverwrite(LocalHandler):
        def move(self, src: str, dest: str) -> None:
            if os.path.exists(dest):
                raise OSError(f"{dest} exists")
            super().move(src, dest)

    handler = NoOverwrite(env.dst)
    engine = await env.engine(resolver=handler.resolver)
    for rotation in range(3):
        env.write("app.log", lines(rotation * 100, 20))
        assert (await engine.flush()).ok
        logrotate(env.src, "app.log", keep=2)
    env.write("app.log", b"")
    result = await engine.flush()
    assert result.ok and result.bytes_shipped == 0
    assert env.dest_files() == {p.name: p.read_bytes() for p in env.src.iterdir()}


async def test_a_crash_between_a_move_and_the_manifest_save_converges(env: Env) -> None:
    # The destination moves are done, the manifest that records them is not:
    # the next run must not move someone's bytes under a wrong name.
    env.write("app.log", lines(0, 30))
    engine = await env.engine()
    await engine.flush()
    manifest = engine.state_path / "manifest.json"
    before_rotation = manifest.read_bytes()
    logrotate(env.src, "app.log", keep=2)
    env.write("app.log", lines(100, 20))
    assert (await engine.flush()).ok
    await engine.stop()
    manifest.write_bytes(before_rotation)  # as if killed before the save
    logrotate(env.src, "app.log", keep=2)
    env.write("app.log", lines(200, 10))
    again = await env.engine()
    assert (await again.flush()).ok
    assert env.dest_files() == {p.name: p.read_bytes() for p in env.src.iterdir()}
    assert (await again.flush()).files_shipped == 0


# ---------------------------------------------------------------- a model


class CopierMachine(RuleBasedStateMachine):
    """A writer doing what log writers and other people do to the files, and a
    copier running cycles, killed and restarted; after each cycle every source
    is byte-identical at the destination under its current name."""

    pyarrow_path = False

    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="aiologship-identity-"))
        self.env = Env(self.tmp)
        self._portal_cm = start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.resolver = LocalHandler(self.env.dst).resolver if self.pyarrow_path else None
        self.engine = self._start()
        self.serial = 0
        self.before_last_cycle: bytes | None = None
        self.live = self.env.src / "app.log"
        self._append(5)

    def _start(self) -> CopyEngine:
        engine = CopyEngine(
            self.env.spec(max_retries=0),
            state_dir=self.env.state,
            sleep=self.env.sleep,
            resolver=self.resolver,
        )
        self.portal.call(engine.open)
        return engine

    def _append(self, n: int) -> None:
        self.env.write("app.log", lines(self.serial, n), mode="ab")
        self.serial += n

    @rule(n=st.integers(1, 40))
    def append(self, n: int) -> None:
        self._append(n)

    @rule()
    def rotate(self) -> None:
        if self.live.exists():
            logrotate(self.env.src, "app.log", keep=3)
            self.env.write("app.log", b"")

    @rule()
    def copytruncate(self) -> None:
        if self.live.exists():
            rotated = self.env.src / "app.log.1"
            if rotated.exists():
                rotated.rename(self.env.src / "app.log.2")
            shutil.copyfile(self.live, rotated)
            os.truncate(self.live, 0)

    @rule()
    def write_in_place_then_cycle(self) -> None:
        # Same size between two cycles: a file written in place that also
        # grows between them ships only its new bytes (telling that from
        # plain growth would mean reading the whole file every cycle).
        if self.live.exists() and self.live.stat().st_size > 20:
            self.cycle()
            with open(self.live, "r+b") as f:
                os.pwrite(f.fileno(), b"#", self.live.stat().st_size // 2)
            bump_mtime(self.live)
            self.cycle()

    @rule(name=st.sampled_from(["app.log.1", "app.log.2", "app.log.3"]))
    def delete_source(self, name: str) -> None:
        (self.env.src / name).unlink(missing_ok=True)

    @rule(name=st.sampled_from(["app.log", "app.log.1", "app.log.2", "app.log.3"]))
    def lose_at_destination(self, name: str) -> None:
        (self.env.dst / name).unlink(missing_ok=True)

    @rule()
    def foreign_then_append(self) -> None:
        # A same-size foreign file is noticed when the engine next works on
        # that file (an append, a rename, an in-place write); an unchanged
        # source is not read back from the destination every cycle.
        path = self.env.dst / "app.log"
        if path.exists():
            path.write_bytes(b"?" * path.stat().st_size)
        self._append(1)

    @rule(manifest=st.sampled_from(["kept", "lost", "unsaved"]))
    def kill_and_restart(self, manifest: str) -> None:
        self.portal.call(functools.partial(self.engine.stop, final_cycle=False))
        path = self.engine.state_path / "manifest.json"
        if manifest == "lost":
            path.unlink(missing_ok=True)
        elif manifest == "unsaved" and self.before_last_cycle is not None:
            # Killed after the last cycle's destination work, before its save.
            path.write_bytes(self.before_last_cycle)
        self.engine = self._start()

    @rule()
    def cycle(self) -> None:
        path = self.engine.state_path / "manifest.json"
        self.before_last_cycle = path.read_bytes() if path.exists() else None
        result = self.portal.call(self.engine.flush)
        assert result.ok, result
        sources = {p.name: p.read_bytes() for p in self.env.src.iterdir()}
        held = self.env.dest_files()
        assert {name: held.get(name) for name in sources} == sources
        status = json.loads((self.engine.state_path / "status.json").read_bytes())
        assert status["manifest_files"] <= len(held)

    def teardown(self) -> None:
        try:
            self.portal.call(functools.partial(self.engine.stop, final_cycle=False))
        finally:
            self._portal_cm.__exit__(None, None, None)
            shutil.rmtree(self.tmp, ignore_errors=True)


class CopierMachinePyarrow(CopierMachine):
    pyarrow_path = True


_MACHINE_SETTINGS = settings(max_examples=20, stateful_step_count=25, deadline=None)
TestCopierModel = CopierMachine.TestCase
TestCopierModel.settings = _MACHINE_SETTINGS
TestCopierModelPyarrow = CopierMachinePyarrow.TestCase
TestCopierModelPyarrow.settings = _MACHINE_SETTINGS


async def test_a_manifest_of_the_previous_format_is_rebuilt_quietly(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    path = env.write("a.log", lines(0, 10))
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    manifest = engine.state_path / "manifest.json"
    data = json.loads(manifest.read_bytes())
    data["version"] = 1
    for item in data["files"].values():
        del item["ctime_ns"], item["crc"]
    manifest.write_text(json.dumps(data))
    with caplog.at_level(logging.INFO, logger="aiologship.copy"):
        again = await env.engine()
        result = await again.flush()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("older format" in r.getMessage() for r in caplog.records)
    assert result.ok and result.bytes_shipped == 0
    assert env.dest_files() == {"a.log": path.read_bytes()}
