"""Copy engine against real local destinations (plain paths); a few tests wrap
the local filesystem in a ``pyarrow.fs.PyFileSystem`` handler to observe or
break one layer (threads, failures)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pyarrow.fs as pafs
import pytest

from aiologship._copy import CopyEngine, CopySpec, CopyState
from aiologship._copy._transfer import TMP_MARK
from aiologship._exceptions import ConfigError, CopyError
from aiologship._fs import Destination

pytestmark = pytest.mark.anyio


class Env:
    def __init__(self, tmp: Path) -> None:
        self.src = tmp / "src"
        self.dst = tmp / "dst"
        self.state = tmp / "state"
        self.src.mkdir()
        self.engines: list[CopyEngine] = []
        self.sleeps: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def spec(self, **overrides: Any) -> CopySpec:
        params: dict[str, Any] = {
            "copy_name": "app",
            "path_patterns": [str(self.src / "*.log*")],
            "hdfs_destination": str(self.dst),
            "copy_interval": None,
            "retry_delay": 0,
        }
        params.update(overrides)
        return CopySpec.from_params(**params)

    async def engine(
        self,
        resolver: Callable[[str], Destination] | None = None,
        workers: int = 4,
        **overrides: Any,
    ) -> CopyEngine:
        engine = CopyEngine(
            self.spec(**overrides),
            state_dir=self.state,
            sleep=self.sleep,
            resolver=resolver,
            workers=workers,
        )
        await engine.open()
        self.engines.append(engine)
        return engine

    def write(self, rel: str, data: bytes, mode: str = "wb") -> Path:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, mode) as f:
            f.write(data)
        return path

    def dest_files(self) -> dict[str, bytes]:
        out = {}
        for path in sorted(self.dst.rglob("*")):
            if path.is_file():
                out[str(path.relative_to(self.dst))] = path.read_bytes()
        return out

    def temp_files(self) -> list[str]:
        return [p.name for p in self.dst.rglob("*") if TMP_MARK in p.name]


def lines(start: int, count: int, width: int = 100) -> bytes:
    return b"".join(f"{i:08d} {'x' * (width - 10)}\n".encode() for i in range(start, start + count))


# ---------------------------------------------------------------- basics


async def test_first_cycle_ships_everything_and_nothing_else(env: Env) -> None:
    env.write("a.log", b"alpha\n")
    env.write("b.log", b"beta\n")
    env.write("ignored.txt", b"no\n")
    engine = await env.engine()
    result = await engine.flush()
    assert result.ok
    assert (result.files_shipped, result.files_replaced, result.bytes_shipped) == (2, 2, 11)
    assert env.dest_files() == {"a.log": b"alpha\n", "b.log": b"beta\n"}
    # The manifest lives in the state directory, never at the destination.
    assert (env.state / engine.spec.state_key / "manifest.json").is_file()
    status = engine.status()
    assert (status.files_shipped, status.bytes_shipped, status.pending_files) == (2, 11, 0)
    assert status.state is CopyState.RUNNING
    assert status.last_cycle_at is not None


async def test_unchanged_cycle_ships_nothing(env: Env) -> None:
    for i in range(50):
        env.write(f"f{i}.log", lines(0, 3))
    engine = await env.engine()
    assert (await engine.flush()).files_shipped == 50
    again = await engine.flush()
    assert again.ok and again.files_scanned == 50
    assert (again.files_shipped, again.bytes_shipped) == (0, 0)


async def test_growing_file_costs_only_new_bytes(env: Env) -> None:
    path = env.write("app.log", lines(0, 10_000))  # ~1 MB
    engine = await env.engine()
    first = await engine.flush()
    assert first.bytes_shipped == path.stat().st_size
    for step in range(3):
        added = lines(10_000 + step * 7, 7)
        env.write("app.log", added, mode="ab")
        result = await engine.flush()
        assert (result.files_appended, result.files_replaced) == (1, 0)
        assert result.bytes_shipped == len(added)
    assert env.dest_files() == {"app.log": path.read_bytes()}
    assert engine.status().bytes_shipped == path.stat().st_size


async def test_without_append_support_a_grown_file_is_replaced_whole(env: Env) -> None:
    def no_append(uri: str) -> Destination:
        return Destination(pafs.LocalFileSystem(), uri, uri, can_append=False)

    path = env.write("app.log", lines(0, 100))
    engine = await env.engine(resolver=no_append)
    await engine.flush()
    env.write("app.log", lines(100, 5), mode="ab")
    result = await engine.flush()
    assert (result.files_appended, result.files_replaced) == (0, 1)
    assert result.bytes_shipped == path.stat().st_size
    assert env.dest_files() == {"app.log": path.read_bytes()}
    assert env.temp_files() == []


async def test_oldest_files_ship_first(env: Env) -> None:
    order: list[str] = []
    for i, name in enumerate(["c.log", "a.log", "b.log"]):
        p = env.write(name, b"x")
        os.utime(p, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))
    handler = LocalHandler(env.dst, on_move=lambda src, dst: order.append(os.path.basename(dst)))
    engine = await env.engine(resolver=handler.resolver, workers=1)
    await engine.flush()
    assert order == ["c.log", "a.log", "b.log"]


# ---------------------------------------------------------------- rotation


async def test_rename_rotation(env: Env) -> None:
    live = env.write("app.log", lines(0, 50))
    engine = await env.engine()
    await engine.flush()
    env.write("app.log", lines(50, 10), mode="ab")
    await engine.flush()
    old_content = live.read_bytes()
    live.rename(env.src / "app.log.1")
    env.write("app.log", lines(1000, 3))
    env.write("app.log", lines(1003, 3), mode="ab")
    result = await engine.flush()
    assert result.ok
    assert env.dest_files() == {"app.log": lines(1000, 6), "app.log.1": old_content}
    # A second rotation shifts names; every rotated content is there once.
    (env.src / "app.log.1").rename(env.src / "app.log.2")
    (env.src / "app.log").rename(env.src / "app.log.1")
    env.write("app.log", lines(2000, 2))
    await engine.flush()
    assert env.dest_files() == {
        "app.log": lines(2000, 2),
        "app.log.1": lines(1000, 6),
        "app.log.2": old_content,
    }
    assert env.temp_files() == []


@pytest.mark.parametrize("regrow", [3, 200], ids=["shorter", "longer-than-before"])
async def test_copytruncate(env: Env, regrow: int) -> None:
    live = env.write("app.log", lines(0, 100))
    engine = await env.engine()
    await engine.flush()
    env.write("app.log", lines(100, 20), mode="ab")
    shutil.copyfile(live, env.src / "app.log.1")
    os.truncate(live, 0)
    # The live file grows again under the same inode, possibly past the size
    # the manifest remembers: it must not be mistaken for a grown file.
    env.write("app.log", lines(5000, regrow), mode="ab")
    result = await engine.flush()
    assert result.ok
    assert env.dest_files() == {"app.log": lines(5000, regrow), "app.log.1": lines(0, 120)}
    assert result.files_appended == 0
    env.write("app.log", lines(9000, 4), mode="ab")
    grown = await engine.flush()
    assert (grown.files_appended, grown.bytes_shipped) == (1, len(lines(9000, 4)))
    assert env.dest_files()["app.log"] == lines(5000, regrow) + lines(9000, 4)


# ---------------------------------------------------------------- manifest


async def test_lost_manifest_is_rebuilt_without_reupload(env: Env) -> None:
    for i in range(5):
        env.write(f"f{i}.log", lines(i * 100, 20))
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    manifest = env.state / engine.spec.state_key / "manifest.json"
    manifest.unlink()
    # One source grew while the copier was down: only its new bytes travel.
    env.write("f0.log", lines(7000, 3), mode="ab")
    handler = LocalHandler(env.dst)
    again = await env.engine(resolver=handler.resolver)
    result = await again.flush()
    assert result.ok
    assert (result.files_shipped, result.files_appended) == (1, 1)
    assert result.bytes_shipped == len(lines(7000, 3))
    assert handler.calls.count("open_output_stream") == 0
    assert env.dest_files() == {f"f{i}.log": (env.src / f"f{i}.log").read_bytes() for i in range(5)}
    assert manifest.is_file()


@pytest.mark.parametrize(
    "garbage",
    [
        b"{not json",
        b"[]",
        b'{"version": 1, "destination": "elsewhere", "files": {}}',
        b'{"version": 1, "files": {"x": {"size": "big"}}}',
        b"",
    ],
)
async def test_corrupt_manifest_is_rebuilt(
    env: Env, garbage: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    env.write("a.log", lines(0, 10))
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    (env.state / engine.spec.state_key / "manifest.json").write_bytes(garbage)
    env.write("b.log", b"new\n")
    with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
        again = await env.engine()
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    result = await again.flush()
    assert result.ok
    assert (result.files_shipped, result.bytes_shipped) == (1, 4)  # only b.log
    assert env.dest_files() == {"a.log": lines(0, 10), "b.log": b"new\n"}


async def test_rebuild_replaces_a_destination_file_that_differs(env: Env) -> None:
    env.write("a.log", b"the real content\n")
    env.dst.mkdir()
    (env.dst / "a.log").write_bytes(b"something else\n")
    engine = await env.engine()
    result = await engine.flush()
    assert (result.files_replaced, result.bytes_shipped) == (1, 17)
    assert env.dest_files() == {"a.log": b"the real content\n"}


async def test_stale_temporary_files_are_removed_by_a_later_run(env: Env) -> None:
    env.write("a.log", b"a\n")
    engine = await env.engine()
    await engine.flush()
    await engine.stop()
    tag = engine._temps.tag
    env.dst.joinpath("sub").mkdir()
    ours = env.dst / "sub" / f".a.log{TMP_MARK}{tag}-0badc0de-3"
    ours.write_bytes(b"partial")
    theirs = env.dst / f".a.log{TMP_MARK}ffffffff-0badc0de-3"  # another copy's
    theirs.write_bytes(b"partial")
    again = await env.engine()
    await again.flush()
    assert not ours.exists()
    assert theirs.exists()


async def test_state_dir_unwritable_is_a_config_error(env: Env, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    engine = CopyEngine(env.spec(), state_dir=blocker / "state")
    with pytest.raises(ConfigError) as info:
        await engine.open()
    assert info.value.key == "state_dir"
    assert engine.status().state is CopyState.FAILED


async def test_one_engine_per_state(env: Env) -> None:
    await env.engine()
    second = CopyEngine(env.spec(), state_dir=env.state)
    with pytest.raises(CopyError, match="already running"):
        await second.open()


# ---------------------------------------------------------------- structure


async def test_preserve_structure(env: Env) -> None:
    env.write("a/app.log", b"a\n")
    env.write("b/deep/app.log", b"b\n")
    engine = await env.engine(
        path_patterns=["**/*.log"], root_dir=str(env.src), preserve_structure=True
    )
    assert (await engine.flush()).ok
    assert env.dest_files() == {"a/app.log": b"a\n", "b/deep/app.log": b"b\n"}


async def test_base_name_collision_is_reported_never_overwritten(env: Env) -> None:
    a = env.write("a/app.log", b"from a\n")
    b = env.write("b/app.log", b"from b\n")
    engine = await env.engine(path_patterns=[str(env.src / "*" / "*.log")])
    result = await engine.flush()
    assert env.dest_files() == {"app.log": b"from a\n"}
    assert not result.ok
    ((path, reason),) = result.file_errors
    assert path == str(b)
    assert str(a) in reason and str(b) in reason and "collision" in reason
    status = engine.status()
    assert status.file_errors == result.file_errors
    assert str(b) in (status.last_error or "")
    env.write("b/app.log", b"changed b\n")
    await engine.flush()
    assert env.dest_files() == {"app.log": b"from a\n"}


async def test_symlink_outside_root_is_not_followed(env: Env, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.log").write_bytes(b"secret\n")
    env.write("real/inside.log", b"inside\n")
    (env.src / "evil.log").symlink_to(outside / "secret.log")
    (env.src / "good.log").symlink_to(env.src / "real" / "inside.log")
    (env.src / "linkdir").symlink_to(outside, target_is_directory=True)
    engine = await env.engine(
        path_patterns=["*.log", "*/*.log"], root_dir=str(env.src), preserve_structure=True
    )
    result = await engine.flush()
    assert result.ok
    assert env.dest_files() == {"good.log": b"inside\n", "real/inside.log": b"inside\n"}


async def test_vanished_files_are_skipped_quietly(env: Env) -> None:
    env.write("first.log", b"1\n")
    os.utime(env.src / "first.log", ns=(1, 1))
    doomed = env.write("second.log", b"2\n")
    (env.src / "dangling.log").symlink_to(env.src / "nowhere")
    # The destination deletes second.log from the source once first.log is
    # being written: second.log vanishes between the glob and its open.
    handler = LocalHandler(env.dst, on_output=lambda path: doomed.unlink(missing_ok=True))
    engine = await env.engine(resolver=handler.resolver, workers=1)
    result = await engine.flush()
    assert result.ok
    assert result.file_errors == () and result.pending_files == 0
    assert env.dest_files() == {"first.log": b"1\n"}


async def test_unreadable_entry_is_reported_and_the_rest_continue(env: Env) -> None:
    # Tests run as root, so chmod 000 does not stop reads. A Unix socket is an
    # honest unreadable match: open() on it fails (ENXIO) for root too.
    env.write("a.log", b"a\n")
    sock_path = env.src / "s.log"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(sock_path))
    try:
        engine = await env.engine()
        result = await engine.flush()
    finally:
        server.close()
    assert env.dest_files() == {"a.log": b"a\n"}
    ((path, reason),) = result.file_errors
    assert path == str(sock_path) and "socket" in reason
    assert engine.status().file_errors == result.file_errors


def test_unopenable_source_is_unreadable_in_the_transfer_layer(tmp_path: Path) -> None:
    # A directory entry that cannot be opened as a file (IsADirectoryError).
    from aiologship._copy._scan import SourceFile
    from aiologship._copy._tempwatch import TempWatch
    from aiologship._copy._transfer import DirCache, SourceUnreadable, TempNames, ship_file

    (tmp_path / "d.log").mkdir()
    dest = Destination(pafs.LocalFileSystem(), str(tmp_path / "out"), "out", True)
    src = SourceFile(str(tmp_path / "d.log"), "d.log", 0, 0, 0, 0)
    with pytest.raises(SourceUnreadable, match="cannot open"):
        ship_file(dest, src, None, temps=TempNames("00000000"), dirs=DirCache(), watch=TempWatch())


# ---------------------------------------------------------------- failures


class LocalHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """A local filesystem behind PyFileSystem that records which thread makes
    each call and can be told to fail. Streams are opened with compression=None,
    as real handlers do (pyarrow's default would gzip a *.gz name on the fly)."""

    def __init__(
        self,
        root: Path,
        *,
        on_move: Callable[[str, str], None] | None = None,
        on_output: Callable[[str], None] | None = None,
        fail: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.root = root
        self.fs = pafs.LocalFileSystem()
        self.threads: list[threading.Thread] = []
        self.calls: list[str] = []
        self.on_move = on_move
        self.on_output = on_output
        self.fail = fail

    def resolver(self, uri: str) -> Destination:
        return Destination(pafs.PyFileSystem(self), str(self.root), str(self.root), True)

    def _note(self, name: str, path: str = "") -> None:
        self.threads.append(threading.current_thread())
        self.calls.append(name)
        if self.fail is not None and self.fail(name, path):
            raise OSError(f"injected failure in {name}({path})")

    def get_type_name(self) -> str:
        return "recording-local"

    def equals(self, other: Any) -> bool:
        return other is self

    def get_file_info(self, paths: list[str]) -> Any:
        self._note("get_file_info", ",".join(paths))
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector: Any) -> Any:
        self._note("get_file_info_selector", selector.base_dir)
        return self.fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._note("create_dir", path)
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._note("delete_dir", path)
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._note("delete_dir_contents", path)
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise NotImplementedError

    def delete_file(self, path: str) -> None:
        self._note("delete_file", path)
        self.fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._note("move", dest)
        if self.on_move is not None:
            self.on_move(src, dest)
        self.fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self._note("copy_file", dest)
        self.fs.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        self._note("open_input_stream", path)
        return self.fs.open_input_stream(path, compression=None)

    def open_input_file(self, path: str) -> Any:
        self._note("open_input_file", path)
        return self.fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        self._note("open_output_stream", path)
        if self.on_output is not None:
            self.on_output(path)
        return self.fs.open_output_stream(path, compression=None)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        self._note("open_append_stream", path)
        return self.fs.open_append_stream(path, compression=None)

    def normalize_path(self, path: str) -> str:
        return path


async def test_every_pyarrow_call_runs_in_a_worker_thread(env: Env) -> None:
    handler = LocalHandler(env.dst)
    env.write("a.log", lines(0, 10))
    engine = await env.engine(resolver=handler.resolver)
    await engine.flush()
    env.write("a.log", lines(10, 10), mode="ab")
    await engine.flush()
    (env.src / "a.log").rename(env.src / "a.log.1")
    env.write("a.log", b"new\n")
    await engine.flush()
    await engine.stop()
    # A lost manifest is rebuilt by reading the destination; a destination
    # file longer than the manifest says is verified with random reads.
    (engine.state_path / "manifest.json").unlink()
    again = await env.engine(resolver=handler.resolver)
    await again.flush()
    env.write("a.log", b"more\n", mode="ab")
    with open(env.dst / "a.log", "ab") as f:
        f.write(b"mo")  # as if a killed copier had appended part of it
    assert (await again.flush()).bytes_shipped == 3
    assert env.dest_files()["a.log"] == b"new\nmore\n"
    assert {
        "create_dir",
        "open_output_stream",
        "move",
        "open_append_stream",
        "get_file_info",
        "get_file_info_selector",
        "open_input_stream",
        "open_input_file",
    } <= set(handler.calls)
    loop_thread = threading.current_thread()
    assert loop_thread not in handler.threads
    assert all(t is not threading.main_thread() for t in handler.threads)


async def test_failing_destination_shows_in_status_and_logs_once_per_streak(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    broken = True
    handler = LocalHandler(env.dst, fail=lambda name, path: broken and name == "open_output_stream")
    for name in ("a.log", "b.log", "c.log"):
        env.write(name, name.encode())
    engine = await env.engine(resolver=handler.resolver, max_retries=2, retry_delay=1, workers=1)
    with caplog.at_level(logging.DEBUG, logger="aiologship.copy"):
        for cycle in range(1, 4):
            result = await engine.flush()
            assert result.destination_error is not None
            assert "injected failure" in result.destination_error
            assert result.pending_files == 3
            status = engine.status()
            assert status.consecutive_failures == cycle
            assert status.pending_files == 3
            assert "injected failure" in (status.last_error or "")
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "destination failing" in errors[0].getMessage()
        # Retries: 2 per file with exponential backoff (1 s, then 2 s) plus at
        # most retry_delay of jitter; two files in a row failing ends the cycle.
        assert len(env.sleeps) == 3 * 2 * 2
        for first, second in zip(env.sleeps[0::2], env.sleeps[1::2], strict=True):
            assert 1 <= first <= 2 and 2 <= second <= 3
        broken = False
        result = await engine.flush()
    assert result.ok and result.files_shipped == 3
    assert engine.status().consecutive_failures == 0
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert env.dest_files() == {"a.log": b"a.log", "b.log": b"b.log", "c.log": b"c.log"}
    assert env.temp_files() == []


async def test_a_file_failing_at_the_destination_does_not_block_the_others(env: Env) -> None:
    handler = LocalHandler(
        env.dst, fail=lambda name, path: name == "move" and path.endswith("/b.log")
    )
    for name in ("a.log", "b.log", "c.log"):
        env.write(name, name.encode())
    engine = await env.engine(resolver=handler.resolver, max_retries=1, workers=1)
    result = await engine.flush()
    assert result.pending_files == 1 and result.files_shipped == 2
    assert env.dest_files() == {"a.log": b"a.log", "c.log": b"c.log"}
    assert env.temp_files() == []  # the failed replacement's temporary file is gone
    handler.fail = None
    assert (await engine.flush()).ok
    assert "b.log" in env.dest_files()


async def test_destination_down_at_open_is_retried_by_cycles(env: Env) -> None:
    from aiologship._exceptions import DestinationError

    attempts = []

    def flaky(uri: str) -> Destination:
        attempts.append(uri)
        if len(attempts) < 3:
            raise DestinationError(uri, "namenode unreachable")
        return Destination(pafs.LocalFileSystem(), uri, uri, True)

    env.write("a.log", b"a")
    engine = await env.engine(resolver=flaky)
    assert engine.status().consecutive_failures == 1
    assert not (await engine.flush()).ok
    assert (await engine.flush()).ok
    assert env.dest_files() == {"a.log": b"a"}


async def test_create_dest_dirs_false_requires_the_folder(env: Env) -> None:
    env.write("a.log", b"a")
    engine = await env.engine(create_dest_dirs=False)
    result = await engine.flush()
    assert result.destination_error is not None and "create_dest_dirs" in result.destination_error
    assert result.pending_files == 1 and engine.status().pending_files == 1
    env.dst.mkdir()
    result = await engine.flush()
    assert result.ok


# ---------------------------------------------------------------- lifecycle


async def test_run_until_stop_ships_everything_written_before_stop(env: Env) -> None:
    env.write("app.log", lines(0, 5))
    engine = await env.engine(copy_interval=0.05)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        with anyio.fail_after(10):
            while not (env.dst / "app.log").exists():
                await anyio.sleep(0.01)
        status = engine.status()
        assert status.state is CopyState.RUNNING
        env.write("app.log", lines(5, 1000), mode="ab")
        await engine.stop()
    assert engine.status().state is CopyState.STOPPED
    assert env.dest_files() == {"app.log": lines(0, 1005)}
    with pytest.raises(CopyError):
        await engine.flush()
    await engine.stop()  # idempotent


async def test_once_mode_runs_one_cycle_then_waits_for_stop(env: Env) -> None:
    env.write("a.log", b"a")
    engine = await env.engine(copy_interval=None)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        with anyio.fail_after(10):
            while engine.status().last_cycle_at is None:
                await anyio.sleep(0.01)
        assert engine.status().next_cycle_at is None
        env.write("b.log", b"b")
        await engine.stop()  # the final cycle picks up b.log
    assert env.dest_files() == {"a.log": b"a", "b.log": b"b"}


async def test_next_cycle_time_is_reported(env: Env) -> None:
    now = [1_000_000.0]
    engine = CopyEngine(env.spec(copy_interval=30), state_dir=env.state, clock=lambda: now[0])
    await engine.open()
    env.engines.append(engine)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        with anyio.fail_after(10):
            while engine.status().next_cycle_at is None:
                await anyio.sleep(0.01)
        status = engine.status()
        assert status.next_cycle_at is not None and status.last_cycle_at is not None
        assert status.next_cycle_at.timestamp() == 1_000_030.0
        await engine.stop()


async def test_status_redacts_credentials(env: Env) -> None:
    def local(uri: str) -> Destination:
        return Destination(pafs.LocalFileSystem(), str(env.dst), "s3://k:***@b/x", True)

    engine = await env.engine(resolver=local, hdfs_destination="s3://k:hunter2@b/x")
    assert engine.status().destination == "s3://k:***@b/x"
    assert "hunter2" not in repr(engine.status())


async def test_pyarrow_path_on_a_non_local_filesystem(env: Env) -> None:
    # mock:// is pyarrow's in-memory filesystem, resolved through from_uri: the
    # generic (non-local) transfer path, append included.
    engine = await env.engine(hdfs_destination="mock:///logs")
    dest = engine._dest
    assert dest is not None and dest.filesystem.type_name == "mock"
    path = env.write("app.log", lines(0, 100))
    first = await engine.flush()
    assert first.ok and first.files_replaced == 1
    env.write("app.log", lines(100, 3), mode="ab")
    grown = await engine.flush()
    assert (grown.files_appended, grown.bytes_shipped) == (1, len(lines(100, 3)))
    with dest.filesystem.open_input_stream("logs/app.log") as f:
        assert f.read() == path.read_bytes()
    names = [i.path for i in dest.filesystem.get_file_info(pafs.FileSelector("logs"))]
    assert names == ["logs/app.log"]


async def test_manifests_are_per_copy_name_and_destination(env: Env) -> None:
    env.write("a.log", b"a")
    one = await env.engine(copy_name="one")
    two = await env.engine(copy_name="two")
    other_dest = await env.engine(copy_name="one", hdfs_destination=str(env.dst) + "-2")
    # "two" shares the destination: its own manifest, rebuilt from what "one"
    # put there, so the identical file is not sent again.
    shipped = [(await e.flush()).files_shipped for e in (one, two, other_dest)]
    assert shipped == [1, 0, 1]
    folders = {e.state_path for e in (one, two, other_dest)}
    assert len(folders) == 3
    assert all((folder / "manifest.json").is_file() for folder in folders)


async def test_run_survives_a_failing_cycle(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    env.write("a.log", b"a")
    engine = await env.engine(copy_interval=0.01)
    # The state folder turns into a file: saving the manifest fails each cycle.
    shutil.rmtree(engine.state_path)
    engine.state_path.write_text("in the way")
    with caplog.at_level(logging.ERROR, logger="aiologship.copy"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            with anyio.fail_after(10):
                while engine.status().consecutive_failures < 3:
                    await anyio.sleep(0.01)
            assert engine.status().state is CopyState.RUNNING
            engine.state_path.unlink()
            engine.state_path.mkdir()
            with anyio.fail_after(10):
                while engine.status().consecutive_failures:
                    await anyio.sleep(0.01)
            await engine.stop()
    assert len([r for r in caplog.records if "cycle failed" in r.getMessage()]) == 1
    assert env.dest_files() == {"a.log": b"a"}
    assert (engine.state_path / "manifest.json").is_file()


async def test_concurrent_stops_share_one_final_cycle(env: Env) -> None:
    env.write("a.log", b"a")
    engine = await env.engine()
    results: list[CopyState] = []

    async def stop_and_look() -> None:
        await engine.stop()
        results.append(engine.status().state)

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(stop_and_look)
    assert results == [CopyState.STOPPED] * 3
    assert engine.status().files_shipped == 1
    # The state lock is free only now: another engine may take over.
    successor = await env.engine()
    assert (await successor.flush()).files_shipped == 0


async def test_a_destination_inside_the_globbed_tree_is_not_copied_into_itself(env: Env) -> None:
    env.write("app.log", b"a\n")
    engine = await env.engine(
        path_patterns=["**/*.log"],
        root_dir=str(env.src),
        preserve_structure=True,
        hdfs_destination=str(env.src / "archive"),
    )
    assert (await engine.flush()).files_shipped == 1
    again = await engine.flush()
    assert again.ok and again.files_shipped == 0
    assert sorted(p.relative_to(env.src).as_posix() for p in env.src.rglob("*.log")) == [
        "app.log",
        "archive/app.log",
    ]
