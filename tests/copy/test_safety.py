"""What the copy engine may read: nothing outside ``root_dir`` (whatever races
with the scan), never a non-regular file, never its own destination; patterns
and ``root_dir`` checked before anything is shipped."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from test_engine import Env

from aiologship._copy import CopySpec, _cycle
from aiologship._copy._scan import SourceFile
from aiologship._exceptions import ConfigError

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[2]
SECRET = b"TOP-SECRET-" * 64


def dest_holds_secret(env: Env) -> bool:
    return any(SECRET[:11] in data for data in env.dest_files().values())


# ---------------------------------------------------------------- symlink races


FLIPPER = """
import os, sys
mode, path, outside, stop = sys.argv[1:5]
limit, n = int(sys.argv[5]), 0
tmp = os.path.join(os.path.dirname(path), ".next")
stash = path + ".stash"
while n < limit and not (n % 64 == 0 and os.path.exists(stop)):
    if mode == "file":
        # ``path`` is, in turn, a symlink to ``outside`` and a fresh regular
        # file (a new inode, so every cycle plans to ship it); rename(2) swaps
        # them, so the name never goes missing.
        if n % 2 == 0:
            os.symlink(outside, tmp)
        else:
            with open(tmp, "wb") as f:
                f.write(b"inside " * 100)
        os.replace(tmp, path)
    elif n % 2 == 0:
        # ``path`` is, in turn, a symlink to the folder ``outside`` and the
        # real folder, grown so every cycle plans to ship its file.
        os.rename(path, stash)
        os.symlink(outside, path)
    else:
        with open(os.path.join(stash, "app.log"), "ab") as f:
            f.write(b"grown ")
        os.unlink(path)
        os.rename(stash, path)
    n += 1
print(n)
"""


class Flipper:
    """Another process flipping a path between an entry inside root_dir and a
    symlink leading outside it, as fast as it can (bounded by ``limit``)."""

    def __init__(self, mode: str, path: Path, outside: Path, limit: int = 10_000_000) -> None:
        self._stop = path.parent.parent / ".stop-flipping"
        self.limit = limit
        self.swaps = 0
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                FLIPPER,
                mode,
                str(path),
                str(outside),
                str(self._stop),
                str(limit),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> Flipper:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.touch()
        try:
            out, _ = self._proc.communicate(timeout=30)
        finally:
            self._proc.kill()
        self.swaps = int(out)


@pytest.mark.parametrize("flipped", ["file", "folder"])
async def test_a_path_flipping_to_a_symlink_outside_root_never_ships_it(
    env: Env, tmp_path: Path, flipped: str
) -> None:
    # A property over many cycles: whichever entry the scan sees and whichever
    # the open sees, the secret outside root_dir never reaches the destination.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.log").write_bytes(SECRET)
    (env.src / "d").mkdir()
    (env.src / "d" / "app.log").write_bytes(b"inside\n")
    if flipped == "file":
        flipper = Flipper("file", env.src / "d" / "app.log", outside / "app.log")
    else:
        flipper = Flipper("folder", env.src / "d", outside)
    engine = await env.engine(
        path_patterns=["d/*.log"], root_dir=str(env.src), preserve_structure=True, workers=1
    )
    cycles = 0
    with flipper:
        while cycles < 150:
            with anyio.fail_after(30):
                await engine.flush()
            cycles += 1
            assert not dest_holds_secret(env), f"the secret was shipped in cycle {cycles}"
    assert flipper.swaps > cycles  # the race really ran
    assert flipper.swaps < flipper.limit


@pytest.mark.parametrize("swapped", ["file", "folder"])
async def test_an_entry_swapped_for_a_symlink_after_the_scan_is_not_followed(
    env: Env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, swapped: str
) -> None:
    # The same race as above, made deterministic: the swap lands between the
    # scan (which checked the path is under root_dir) and the open.
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "app.log").write_bytes(SECRET)
    env.write("d/app.log", b"inside\n")

    def swap() -> None:
        if swapped == "file":
            (env.src / "d" / "app.log").unlink()
            (env.src / "d" / "app.log").symlink_to(outside / "app.log")
        else:
            (env.src / "d").rename(tmp_path / "moved-d")
            (env.src / "d").symlink_to(outside, target_is_directory=True)

    swap_after_scan(monkeypatch, swap)
    engine = await env.engine(
        path_patterns=["d/*.log"], root_dir=str(env.src), preserve_structure=True
    )
    result = await engine.flush()
    assert not dest_holds_secret(env)
    assert result.files_shipped == 0 and result.file_errors == ()


def source(path: Path, root: Path | None) -> SourceFile:
    """A SourceFile as the scan would build it for a regular file."""
    st = path.lstat()
    real_root = None if root is None else os.path.realpath(root)
    return SourceFile(
        str(path),
        path.name,
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
        st.st_dev,
        real=os.path.join(os.path.realpath(path.parent), path.name),
        real_root=real_root,
    )


def test_open_source_reads_exactly_what_the_scan_checked(tmp_path: Path) -> None:
    from aiologship._copy._source import SourceChanged, SourceNotRegular, open_source

    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    log = root / "d" / "app.log"
    log.write_bytes(b"ok\n")
    outside = tmp_path / "secret.log"
    outside.write_bytes(SECRET)
    src = source(log, root)
    with open_source(src) as f:
        assert f.read() == b"ok\n"
    # The final name swapped for a symlink (even to a file inside root).
    log.unlink()
    log.symlink_to(outside)
    with pytest.raises(SourceChanged):
        open_source(src)
    # A folder on the way swapped for a symlink to outside root_dir.
    log.unlink()
    (root / "d").rename(tmp_path / "moved")
    (tmp_path / "evil").mkdir()
    (tmp_path / "evil" / "app.log").write_bytes(SECRET)
    (root / "d").symlink_to(tmp_path / "evil", target_is_directory=True)
    with pytest.raises(SourceChanged):
        open_source(src)
    # Another regular file under the same name: not the one the scan saw.
    (root / "d").unlink()
    (root / "d").mkdir()
    (root / "d" / "app.log").write_bytes(b"another\n")
    with pytest.raises(SourceChanged):
        open_source(src)
    # Gone altogether.
    (root / "d" / "app.log").unlink()
    with pytest.raises(SourceChanged):
        open_source(src)
    # A FIFO in its place: refused without blocking.
    os.mkfifo(root / "d" / "app.log")
    with pytest.raises(SourceNotRegular, match="FIFO"):
        open_source(src)


# ---------------------------------------------------------------- non-regular files


def swap_after_scan(monkeypatch: pytest.MonkeyPatch, swap: Any) -> None:
    """Run ``swap`` right after the engine's scan: the race between the scan
    and the open, made deterministic."""
    real_scan = _cycle.scan

    async def scan_then_swap(*args: Any, **kwargs: Any) -> Any:
        result = await real_scan(*args, **kwargs)
        swap()
        return result

    monkeypatch.setattr(_cycle, "scan", scan_then_swap)


@pytest.mark.parametrize("kind", ["fifo", "socket", "symlink-to-fifo"])
async def test_a_file_replaced_by_a_non_regular_one_after_the_scan_never_blocks(
    env: Env, monkeypatch: pytest.MonkeyPatch, kind: str, tmp_path: Path
) -> None:
    env.write("a.log", b"a\n")
    victim = env.write("b.log", b"b\n")
    fifo = tmp_path / "fifo"
    held: list[socket.socket] = []

    def swap() -> None:
        victim.unlink(missing_ok=True)
        if kind == "fifo":
            os.mkfifo(victim)
        elif kind == "socket":
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(victim))
            held.append(server)
        else:
            os.mkfifo(fifo)
            victim.symlink_to(fifo)

    swap_after_scan(monkeypatch, swap)
    engine = await env.engine(workers=1)
    try:
        with anyio.fail_after(15):
            result = await engine.flush()
    finally:
        # Frees a worker thread stuck opening the FIFO (the bug this test
        # catches), so a failing run still ends.
        for path in (victim, fifo):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            os.close(fd)
        for server in held:
            server.close()
    assert env.dest_files() == {"a.log": b"a\n"}
    assert result.files_shipped == 1


async def test_non_regular_matches_are_reported_never_opened(env: Env, tmp_path: Path) -> None:
    env.write("a.log", b"a\n")
    os.mkfifo(env.src / "fifo.log")
    os.mkfifo(tmp_path / "outside-fifo")
    (env.src / "via-link.log").symlink_to(tmp_path / "outside-fifo")
    (env.src / "null.log").symlink_to("/dev/null")
    engine = await env.engine(root_dir=str(env.src))
    with anyio.fail_after(15):
        result = await engine.flush()
    assert env.dest_files() == {"a.log": b"a\n"}
    errors = dict(result.file_errors)
    assert "FIFO" in errors[str(env.src / "fifo.log")]
    # Symlinks leading outside root_dir are never followed at all.
    assert str(env.src / "via-link.log") not in errors
    assert str(env.src / "null.log") not in errors


# ---------------------------------------------------------------- the destination


@pytest.mark.parametrize("through", ["root", "pattern"])
async def test_a_destination_inside_the_tree_reached_through_a_symlink_is_never_scanned(
    env: Env, tmp_path: Path, through: str
) -> None:
    env.write("app.log", b"a\n")
    archive = env.src / "archive"
    if through == "root":
        # root_dir is a symlink to the tree; the destination is named by its real path.
        root = tmp_path / "root-link"
        root.symlink_to(env.src, target_is_directory=True)
    else:
        # A folder symlink inside the tree leads into the destination.
        root = env.src
        archive.mkdir()
        (env.src / "alias").symlink_to(archive, target_is_directory=True)
    engine = await env.engine(
        path_patterns=["**/*.log"],
        root_dir=str(root),
        preserve_structure=True,
        hdfs_destination=str(archive),
    )
    for _ in range(3):
        await engine.flush()
    shipped = sorted(p.relative_to(archive).as_posix() for p in archive.rglob("*.log"))
    assert shipped == ["app.log"]


@pytest.mark.parametrize("where", ["root", "parent"])
async def test_a_local_destination_holding_root_dir_is_refused(
    env: Env, tmp_path: Path, where: str
) -> None:
    env.write("app.log", b"a\n")
    link = tmp_path / "dest-link"  # named through a symlink: compared resolved
    link.symlink_to(env.src if where == "root" else tmp_path, target_is_directory=True)
    with pytest.raises(ConfigError, match="contains root_dir") as info:
        await env.engine(path_patterns=["*.log"], root_dir=str(env.src), hdfs_destination=str(link))
    assert info.value.key == "hdfs_destination"


# ---------------------------------------------------------------- patterns and root_dir


def test_a_pattern_outside_root_dir_is_refused_whatever_preserve_structure() -> None:
    with pytest.raises(ConfigError) as info:
        CopySpec.from_params(
            copy_name="c",
            path_patterns=["/app/logs/*.log", "/var/log/*.log"],
            hdfs_destination="/dst",
            root_dir="/app",
        )
    assert info.value.key == "path_patterns"
    assert "/var/log/*.log" in str(info.value) and "'/app'" in str(info.value)
    with pytest.raises(ConfigError, match="outside root_dir"):
        CopySpec.from_params(
            copy_name="c", path_patterns=["../etc/*"], hdfs_destination="/dst", root_dir="/app"
        )


async def test_root_dir_naming_a_regular_file_is_a_config_error(env: Env) -> None:
    env.write("a.log", b"a\n")
    with pytest.raises(ConfigError, match=r"root_dir.*not a directory"):
        await env.engine(path_patterns=["*.log"], root_dir=str(env.src / "a.log"))


async def test_a_pattern_matching_nothing_is_reported_once(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    env.write("a.log", b"a\n")
    engine = await env.engine(path_patterns=["*.log", "*.gz"], root_dir=str(env.src))
    with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
        first = await engine.flush()
        await engine.flush()
    assert first.ok  # nothing that exists is missing
    gz = str(env.src / "*.gz")
    assert engine.status().unmatched_patterns == (gz,)
    warned = [r.getMessage() for r in caplog.records if "matches no file" in r.getMessage()]
    assert len(warned) == 1 and gz in warned[0]
    env.write("x.gz", b"x")
    await engine.flush()
    assert engine.status().unmatched_patterns == ()


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "aiologship.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.log").write_bytes(b"a\n")
    yield tmp_path


def test_cli_pattern_outside_root_dir_exits_2(tree: Path) -> None:
    (tree / "elsewhere").mkdir()
    (tree / "elsewhere" / "b.log").write_bytes(b"b\n")
    done = cli(
        "copy",
        "*.log",
        str(tree / "elsewhere" / "*.log"),
        "--root-dir",
        str(tree / "src"),
        "--to",
        str(tree / "dst"),
        "--state-dir",
        str(tree / "state"),
        "--once",
    )
    assert done.returncode == 2, done.stderr
    assert str(tree / "elsewhere" / "*.log") in done.stderr
    assert str(tree / "src") in done.stderr
    assert not (tree / "dst").exists()


def test_cli_root_dir_naming_a_file_exits_2(tree: Path) -> None:
    done = cli(
        "copy",
        "*.log",
        "--root-dir",
        str(tree / "src" / "a.log"),
        "--to",
        str(tree / "dst"),
        "--state-dir",
        str(tree / "state"),
    )
    assert done.returncode == 2, done.stderr
    assert "root_dir" in done.stderr and "not a directory" in done.stderr


def test_cli_reports_a_pattern_that_matches_nothing(tree: Path) -> None:
    done = cli(
        "copy",
        str(tree / "src" / "*.log"),
        str(tree / "src" / "*.gz"),
        "--to",
        str(tree / "dst"),
        "--state-dir",
        str(tree / "state"),
    )
    assert done.returncode == 0, done.stderr
    assert f"{tree / 'src' / '*.gz'}: matches no file" in done.stderr
    assert (tree / "dst" / "a.log").read_bytes() == b"a\n"
