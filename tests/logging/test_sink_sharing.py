"""One rotated file reached by several writers: through a symlinked folder in one
manager, by two managers in one process, and by a manager in another process.
Every record is written once, in order, and rotation never loses one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from aiologship import ConfigError, LogManager
from tests.conftest import only_aiologship_sinks, read_lines
from tests.logging.test_rotation import files_by_age, unexpected_files

ROOT = Path(__file__).resolve().parents[2]

LIMIT = 600


def _check_records(path: Path, count: int, retention: int | None, writers: str = "AB") -> None:
    """Every writer's records are there once and in order (all of them without
    retention; with it, a contiguous suffix ending at its last record)."""
    assert unexpected_files(path) == []
    found = _records_by_writer(path)
    if retention is None:
        assert sorted(found) == sorted(writers)
    else:  # one writer may have finished early: then the newest files hold none of its
        assert set(found) <= set(writers)
    for who, numbers in found.items():
        if retention is None:
            assert numbers == list(range(count)), who
        else:
            assert numbers == list(range(count - len(numbers), count)), who
    if retention is not None:
        assert len(files_by_age(path)) == retention + 1


def _records_by_writer(path: Path) -> dict[str, list[int]]:
    """``{"A": [0, 1, ...], ...}`` from lines ``A 000012 ...`` across every file,
    oldest file first; also checks no file with several lines grew past LIMIT."""
    found: dict[str, list[int]] = {}
    for p in files_by_age(path):
        lines = read_lines(p)
        if len(lines) > 1:
            assert p.stat().st_size <= LIMIT, f"{p.name} grew past the limit"
        for line in lines:
            who, number = line.split()[:2]
            found.setdefault(who, []).append(int(number))
    return found


def test_a_symlinked_folder_reaches_the_same_writer(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with LogManager() as lm:
        a = lm.get_logger("share.a")
        b = lm.get_logger("share.b")
        a.add(real / "app.log", fmt="%(message)s", rotation=LIMIT)
        with pytest.raises(ConfigError, match="one rotation policy") as info:
            b.add(link / "app.log", rotation=LIMIT * 2)
        assert str(real / "app.log") in str(info.value)  # the path the file really has
        b.add(link / "app.log", fmt="%(message)s", rotation=LIMIT)
        only_aiologship_sinks(a.logger)
        only_aiologship_sinks(b.logger)
        for i in range(1500):
            a.info("A %06d", i)
            b.info("B %06d", i)
        lm.flush()
        stats = lm.stats()
    assert stats.written == stats.accepted == 3000
    _check_records(real / "app.log", 1500, None)


@pytest.mark.parametrize("retention", [None, 3])
def test_two_managers_in_one_process_share_rotation(tmp_path: Path, retention: int | None) -> None:
    path = tmp_path / "two" / "app.log"
    with LogManager() as first, LogManager() as second:
        a = first.get_logger("two.a")
        b = second.get_logger("two.b")
        a.add(path, fmt="%(message)s", rotation=LIMIT, retention=retention)
        b.add(path, fmt="%(message)s", rotation=LIMIT, retention=retention)
        only_aiologship_sinks(a.logger)
        only_aiologship_sinks(b.logger)
        for i in range(3000):
            a.info("A %06d", i)
            b.info("B %06d", i)
    _check_records(path, 3000, retention)


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from aiologship import LogManager

    path, count, limit = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    retention = int(sys.argv[4]) if len(sys.argv) > 4 else None
    with LogManager() as lm:
        log = lm.get_logger("other")
        log.logger.propagate = False
        log.add(path, fmt="%(message)s", rotation=limit, retention=retention)
        print("ready", flush=True)
        sys.stdin.readline()  # go
        for i in range(count):
            log.info("B %06d", i)
    print(json.dumps(lm.stats()._asdict()), flush=True)
    """
)


@pytest.mark.parametrize("retention", [None, 3])
def test_a_manager_in_another_process_shares_rotation(
    tmp_path: Path, retention: int | None
) -> None:
    path = tmp_path / "proc" / "app.log"
    count = 6000
    extra_args = [] if retention is None else [str(retention)]
    with LogManager() as lm:
        a = lm.get_logger("proc.a")
        a.add(path, fmt="%(message)s", rotation=LIMIT, retention=retention)
        only_aiologship_sinks(a.logger)
        other = subprocess.Popen(
            [sys.executable, "-c", _OTHER_PROCESS, str(path), str(count), str(LIMIT), *extra_args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert other.stdout is not None and other.stdin is not None
            assert other.stdout.readline().strip() == "ready"
            other.stdin.write("go\n")
            other.stdin.flush()
            for i in range(count):
                a.info("A %06d", i)
            out, _ = other.communicate(timeout=60)
        finally:
            if other.poll() is None:
                other.kill()
                other.wait(10)
    assert other.returncode == 0
    stats = json.loads(out)
    assert stats["written"] == stats["accepted"] == count
    _check_records(path, count, retention)


def test_an_unusable_path_through_a_symlink_is_named_as_given(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "app.log").mkdir()  # a folder where the file should be
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with LogManager() as lm, pytest.raises(ConfigError, match="is a directory") as info:
        lm.get_logger("bad.link").add(link / "app.log")
    assert info.value.value == str(link / "app.log")
    assert str(real / "app.log") in str(info.value)
