"""The copy engine's state directory: one folder per copy, one copier per copy
(even when the folder or the whole state dir is removed under it), what
``status.json`` says about its writer, and how the CLI reports state errors."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologship._copy import CopyEngine, CopySpec
from aiologship.cli import main

REPO = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


def _spec(name: str, dest: str = "/data/logs", **more: Any) -> CopySpec:
    return CopySpec.from_params(
        copy_name=name, path_patterns=["/var/log/*.log"], hdfs_destination=dest, **more
    )


def _old_state_key(name: str, destination_redacted: str) -> str:
    """The folder name of the versions before names were hashed (copied here on
    purpose: the test pins the format an upgrade finds on disk)."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "copy"
    digest = hashlib.sha256(destination_redacted.encode()).hexdigest()[:12]
    return f"{safe[:80]}-{digest}"


def _wait_for(predicate: Any, what: str, timeout: float = DEADLINE) -> None:
    async def poll() -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await anyio.sleep(0.02)

    try:
        anyio.run(poll)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


# ------------------------------------------------------------------ folder names

# Lone surrogates included: os.fsdecode() makes them from undecodable bytes.
_NAMES = st.text(st.characters(min_codepoint=32), min_size=1, max_size=120).filter(
    lambda s: s == s.strip()
)


@settings(max_examples=150, deadline=None)
@given(a=_NAMES, b=_NAMES)
def test_distinct_copy_names_get_distinct_folders(a: str, b: str) -> None:
    if a == b:
        return
    key_a, key_b = _spec(a).state_key, _spec(b).state_key
    assert key_a != key_b
    for key in (key_a, key_b):
        assert "/" not in key and not key.startswith(".") and len(key.encode()) < 200


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("日志", "ログ"),
        ("a/b", "a b"),
        ("x" * 80 + "1", "x" * 80 + "2"),
        ("app", "app_"),
        ("log\udcff", "log\udcfe"),
    ],
)
def test_names_that_once_shared_a_folder(a: str, b: str) -> None:
    assert _spec(a).state_key != _spec(b).state_key


def test_folder_keeps_a_readable_name_and_ignores_credentials() -> None:
    key = _spec("my app", "s3://k:one@bucket/x").state_key
    assert key.startswith("my_app-")
    assert key == _spec("my app", "s3://k:two@bucket/x").state_key


@pytest.fixture
def local(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    src, dst, state = tmp_path / "src", tmp_path / "dst", tmp_path / "state"
    src.mkdir()
    (src / "a.log").write_bytes(b"alpha\n" * 100)
    (src / "b.log").write_bytes(b"beta\n" * 100)
    yield src, dst, state


def _engine(name: str, local: tuple[Path, Path, Path]) -> CopyEngine:
    src, dst, state = local
    spec = CopySpec.from_params(
        copy_name=name, path_patterns=[str(src / "*.log")], hdfs_destination=str(dst),
        copy_interval=None,
    )  # fmt: skip
    return CopyEngine(spec, state_dir=state)


def _run_once(engine: CopyEngine) -> int:
    async def go() -> int:
        await engine.open()
        try:
            return (await engine.flush()).files_shipped
        finally:
            await engine.stop(final_cycle=False)

    return anyio.run(go)


def test_upgrade_adopts_the_old_folder_of_the_same_name(
    local: tuple[Path, Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    state = local[2]
    first = _engine("a b", local)
    assert _run_once(first) == 2
    old = state / _old_state_key("a b", first.spec.destination_redacted)
    # What an older version leaves: the same files under the old folder name.
    if first.state_path != old:
        first.state_path.rename(old)
    shutil.rmtree(state / "locks", ignore_errors=True)
    manifest = (old / "manifest.json").read_bytes()
    # "a/b" had the same old folder name; it must not take a folder that is not its own.
    other = _engine("a/b", local)
    with caplog.at_level(logging.INFO, logger="aiologship.copy"):
        assert _run_once(other) == 0  # rebuilt from the destination: nothing re-sent
        assert old.is_dir() and (old / "manifest.json").read_bytes() == manifest
        caplog.clear()
        again = _engine("a b", local)
        assert _run_once(again) == 0
    assert not old.exists()
    assert (again.state_path / "manifest.json").read_bytes() == manifest
    assert not [r for r in caplog.records if "rebuilt" in r.getMessage()]
    assert {p.name for p in state.iterdir()} == {
        "locks", again.state_path.name, other.state_path.name
    }  # fmt: skip


def test_upgrade_refuses_while_an_older_version_runs(local: tuple[Path, Path, Path]) -> None:
    import fcntl

    from aiologship._exceptions import CopyError

    state = local[2]
    engine = _engine("app", local)
    old = state / _old_state_key("app", engine.spec.destination_redacted)
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(
        json.dumps({"version": 1, "copy_name": "app", "destination": str(local[1]), "files": {}})
    )
    with open(old / "lock", "a+b") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(CopyError, match="older aiologship"):
            anyio.run(engine.open)
    assert old.is_dir() and not engine.state_path.exists()


# ------------------------------------------------------------------ one copier per copy


def _copier(src: Path, dst: Path, state: Path, *extra: str) -> subprocess.Popen[str]:
    args = ["copy", str(src / "*.log"), "--to", str(dst), "--state-dir", str(state)]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiologship.cli",
            *args,
            "--name",
            "shared",
            "--no-progress",
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )


def _finish(proc: subprocess.Popen[str], sig: int | None = None) -> tuple[int, str]:
    if sig is not None and proc.poll() is None:
        proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"copier did not end:\n{err}") from None
    return proc.returncode, err


def _remove(path: Path, trash: Path) -> None:
    """``rm -rf path`` while a copier may write in it: moved to ``trash`` (same
    filesystem) at once, since a plain rmtree can meet a file created meanwhile
    and fail; then deleted."""
    path.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def _copy_folders(state: Path) -> list[Path]:
    if not state.is_dir():
        return []
    return [p for p in state.iterdir() if p.is_dir() and p.name != "locks"]


@pytest.mark.timeout(120)
def test_removed_state_folder_does_not_let_a_second_copier_run(
    local: tuple[Path, Path, Path],
) -> None:
    src, dst, state = local
    first = _copier(src, dst, state, "--interval", "0.1")
    try:
        _wait_for(lambda: (dst / "b.log").is_file() and len(_copy_folders(state)) == 1, "copy 1")
        (folder,) = _copy_folders(state)
        _remove(folder, src.parent / "removed")
        second = _copier(src, dst, state, "--once")
        code, err = _finish(second)
        assert code == 1 and "already running" in err, err
        assert "shipped" not in err
        # The first copier carries on: its folder comes back with its manifest,
        # and it ships what is written next.
        with open(src / "a.log", "ab") as f:
            f.write(b"more\n")
        _wait_for(
            lambda: (
                (dst / "a.log").read_bytes() == (src / "a.log").read_bytes()
                and (folder / "manifest.json").is_file()
            ),
            "copy 1 to go on",
        )
        assert first.poll() is None
    finally:
        code, err = _finish(first, signal.SIGTERM)
    assert code == 0, err
    assert "was removed" in err  # the WARNING about the recreated folder


@pytest.mark.timeout(120)
def test_removed_state_dir_leaves_one_copier_running(local: tuple[Path, Path, Path]) -> None:
    """The whole state dir (lock files too) goes: two copiers may now each hold a
    lock file, one of them unlinked. Exactly one of them must keep running."""
    src, dst, state = local
    first = _copier(src, dst, state, "--interval", "0.1")
    second: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: (dst / "b.log").is_file() and len(_copy_folders(state)) == 1, "copy 1")
        _remove(state, src.parent / "removed")
        second = _copier(src, dst, state, "--interval", "0.1")
        procs = (first, second)
        _wait_for(lambda: any(p.poll() is not None for p in procs), "one copier to give up")
        (gone,) = [p for p in procs if p.poll() is not None]
        (kept,) = [p for p in procs if p is not gone]
        code, err = _finish(gone)
        assert code == 1, err
        if gone is first:
            assert "lock file" in err and "another process" in err, err
        else:
            assert "already running" in err, err
        with open(src / "b.log", "ab") as f:
            f.write(b"more\n")
        _wait_for(
            lambda: (dst / "b.log").read_bytes() == (src / "b.log").read_bytes(), "the survivor"
        )
        code, err = _finish(kept, signal.SIGTERM)
        assert code == 0, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert (dst / "a.log").read_bytes() == (src / "a.log").read_bytes()


@pytest.mark.timeout(120)
def test_copier_whose_lock_was_taken_stops_without_a_final_cycle(
    local: tuple[Path, Path, Path],
) -> None:
    """Copier 1 waits for its next cycle; the state dir goes and copier 2 locks a
    new lock file. Copier 1's stop (its final cycle) finds the lock taken: it
    ends with an error and ships nothing."""
    src, dst, state = local
    first = _copier(src, dst, state, "--interval", "3600")
    second: subprocess.Popen[str] | None = None
    try:
        _wait_for(lambda: (dst / "b.log").is_file() and len(_copy_folders(state)) == 1, "copy 1")
        _remove(state, src.parent / "removed")
        second = _copier(src, dst, state, "--interval", "0.1")
        _wait_for(lambda: len(_copy_folders(state)) == 1, "copy 2 to lock")
        code, err = _finish(first, signal.SIGTERM)
        assert code == 1, err
        (line,) = [x for x in err.splitlines() if x.startswith("aiologship: error:")]
        assert "lock file" in line and "another process" in line
        assert "shipped to" not in err  # no summary: run() ended on the error
        assert second.poll() is None
        code, err = _finish(second, signal.SIGTERM)
        assert code == 0, err
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_state_lock_notices_a_replaced_lock_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aiologship._copy._statedir import StateLock
    from aiologship._exceptions import CopyError

    path = tmp_path / "locks" / "engine" / "x.lock"
    mine, other = StateLock(path, "x"), StateLock(path, "x")
    mine.acquire()
    with pytest.raises(CopyError, match="already running"):
        other.acquire()
    mine.verify()  # still the file at the path
    shutil.rmtree(tmp_path / "locks")
    with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
        mine.verify()  # removed, nobody else took it: locked again
    assert "locked again" in caplog.text and mine.held
    path.unlink()
    other.acquire()  # a new file at the path, locked by someone else
    with pytest.raises(CopyError, match="another process"):
        mine.verify()
    assert not mine.held and other.held
    other.release()


# ------------------------------------------------------------------ status.json and its reader


def _status(state: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, Any]]]:
    capsys.readouterr()
    code = main(["status", "--state-dir", str(state), "--json"])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


@pytest.mark.timeout(120)
def test_status_of_a_killed_copier(
    local: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst, state = local
    proc = _copier(src, dst, state, "--interval", "3600")
    try:
        _wait_for(lambda: any((f / "status.json").is_file() for f in _copy_folders(state)), "1")
        _, (live,) = _status(state, capsys)
        assert live["running_now"] is True and live["state"] == "running"
        assert live["pid"] == proc.pid and live["host"] == socket.gethostname()
        assert live["next_cycle_at"] is not None
    finally:
        proc.kill()
        proc.communicate()
    _, (dead,) = _status(state, capsys)
    assert dead["running_now"] is False
    assert dead["state"] == f"stopped (process {proc.pid} exited)"
    assert dead["recorded_state"] == "running"
    assert dead["next_cycle_at"] is None
    main(["status", "--state-dir", str(state)])
    out = capsys.readouterr().out
    assert f"stopped (process {proc.pid} exited)" in out and "running" not in out


def test_status_after_a_one_shot_copy_is_stopped(
    local: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src, dst, state = local
    assert main(["copy", str(src / "*.log"), "--to", str(dst), "--state-dir", str(state)]) == 0
    code, (done,) = _status(state, capsys)
    assert code == 0
    assert done["state"] == "stopped" and done["running_now"] is False
    assert done["next_cycle_at"] is None and done["pid"] == os.getpid()


def _fake_status(state: Path, **fields: Any) -> Path:
    folder = state / _spec("fake").state_key
    folder.mkdir(parents=True)
    payload = {
        "copy_name": "fake",
        "destination": "/data/logs",
        "state": "running",
        "next_cycle_at": "2030-01-01T00:00:00+00:00",
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    payload.update(fields)
    (folder / "status.json").write_text(json.dumps(payload))
    return folder


def test_status_tells_a_reused_pid_from_its_writer(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not Path(f"/proc/{os.getpid()}/stat").exists():
        pytest.skip("needs /proc for process start times")
    # Our own pid, but a start time that is not ours: the writer was an earlier
    # process that had the same pid.
    _fake_status(tmp_path, pid_start="boot:1")
    _, (seen,) = _status(tmp_path, capsys)
    assert seen["state"] == f"stopped (process {os.getpid()} exited)"
    assert seen["next_cycle_at"] is None


def test_status_of_a_copier_on_another_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _fake_status(tmp_path, host="elsewhere.example", pid=1)
    _, (seen,) = _status(tmp_path, capsys)
    assert seen["state"] == "unknown (other host elsewhere.example)"
    assert seen["running_now"] is False


# ------------------------------------------------------------------ CLI errors


def _full_state_dir(monkeypatch: pytest.MonkeyPatch, state: Path) -> None:
    """Every durable write under ``state`` fails as on a full disk, after the
    start-up probe (an empty file needs no data block, so it passes there too)."""
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            where = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            where = ""
        if where.startswith(str(state)) and os.path.isfile(where):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_full_state_dir_is_one_line_not_a_traceback(
    local: tuple[Path, Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc to tell which file an fd is")
    src, dst, state = local
    _full_state_dir(monkeypatch, state)
    code = main(["copy", str(src / "*.log"), "--to", str(dst), "--state-dir", str(state)])
    err = capsys.readouterr().err
    assert code == 1
    assert "Traceback" not in err and "ExceptionGroup" not in err and "TaskGroup" not in err
    (line,) = [x for x in err.splitlines() if "error:" in x]
    assert line.startswith("aiologship: error: ")
    assert "No space left on device" in line and "manifest.json" in line


def test_cli_errors_from_task_groups_are_unwrapped_and_redacted(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    import aiologship.cli.copy as cli
    from aiologship._exceptions import CopyError

    uri = "s3://key:s3cr3tpass@bucket/logs"

    async def boom(*args: Any) -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.sleep, 10)
            raise CopyError(f"could not talk to {uri}")

    monkeypatch.setattr(cli, "_copy", boom)
    code = main(["copy", str(tmp_path / "*.log"), "--to", uri, "--state-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "s3cr3tpass" not in err and "Traceback" not in err and "ExceptionGroup" not in err
    assert "aiologship: error: could not talk to s3://key:***@bucket/logs" in err


def test_half_written_state_files_of_a_killed_save_are_removed(
    local: tuple[Path, Path, Path],
) -> None:
    """A copier killed while it saved leaves ``.manifest.json.XXXX.tmp`` (the name
    ``write_atomic`` gives a replacement before its rename) in its folder; the next
    copier of that folder removes them, and nothing else."""
    assert _run_once(_engine("app", local)) == 2
    _, _, state = local
    (folder,) = _copy_folders(state)
    manifest = (folder / "manifest.json").read_bytes()
    planted = [folder / ".manifest.json.k1ll3d.tmp", folder / ".status.json.x9.tmp"]
    for path in planted:
        path.write_bytes(b'{"half": ')
    keep = folder / ".manifest.json.notes"
    keep.write_text("the user's")
    assert _run_once(_engine("app", local)) == 0  # the manifest is intact: nothing again
    assert [p for p in planted if p.exists()] == []
    assert keep.read_text() == "the user's"
    assert (folder / "manifest.json").read_bytes() == manifest
