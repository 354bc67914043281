"""``aiologship status`` and ``aiologship demo``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from aiologship import LogManager
from aiologship.cli import main


def test_status_reports_each_copy(
    tmp_path: Path, _state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, src, dest = _state_dir, tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.log").write_text("hello\n")
    with LogManager() as lm:  # state: $AIOLOGSHIP_STATE_DIR (conftest)
        lm.start_hdfs_copy("ok_copy", [str(src / "*.log")], str(dest), copy_interval=3600).flush()
        assert main(["status", "--state-dir", str(state), "--json"]) == 0
        (live,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert live["copy_name"] == "ok_copy" and live["running_now"] is True
    assert main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "ok_copy ->" in out and "shipped 1 files, 6 bytes" in out and "running now" not in out


def test_status_shows_compressed_bytes(
    tmp_path: Path, _state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.log").write_text("hello hello hello hello\n" * 100)
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "packed", [str(src / "*.log")], str(dest), copy_interval=3600, compression="zstd"
        )
        op.flush()
        status = op.status()
    assert status.bytes_read == 2400 and 0 < status.bytes_shipped < 2400
    assert main(["status", "--state-dir", str(_state_dir)]) == 0
    out = capsys.readouterr().out
    assert f"shipped 1 files, 2,400 bytes ({status.bytes_shipped:,} compressed)" in out
    assert (dest / "a.log.zst").stat().st_size == status.bytes_shipped


def test_status_exit_code_and_error_for_a_failing_copy(
    tmp_path: Path, _state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state, src = _state_dir, tmp_path / "src"
    src.mkdir()
    (src / "a.log").write_text("x\n")
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with LogManager() as lm:  # state: $AIOLOGSHIP_STATE_DIR (conftest)
        op = lm.start_hdfs_copy(
            "bad_copy", [str(src / "*.log")], str(blocker / "d"), copy_interval=3600,
            max_retries=0, retry_delay=0,
        )  # fmt: skip
        op.flush()
    assert main(["status", "--state-dir", str(state)]) == 1
    out = capsys.readouterr().out
    assert "bad_copy" in out and "last error:" in out


def test_status_of_an_empty_state_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "--state-dir", str(tmp_path / "none")]) == 0
    assert "no copy operations recorded" in capsys.readouterr().out


@pytest.mark.timeout(120)
def test_demo_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--timezone", "UTC"]) == 0
    out = capsys.readouterr().out
    assert "(100,000 to files, 3 to the terminal)" in out and "shipped to" in out


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("copy", "status", "demo"):
        assert command in out


def test_status_shows_how_far_behind_a_failing_copy_is(
    tmp_path: Path, _state_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The age of the oldest unshipped byte keeps growing after the status was
    written: ``status`` computes it when asked."""
    state, src = _state_dir, tmp_path / "src"
    src.mkdir()
    (src / "a.log").write_bytes(b"x" * 4096)
    old = time.time() - 3600
    os.utime(src / "a.log", (old, old))
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "late_copy", [str(src / "*.log")], str(blocker / "d"), copy_interval=3600,
            max_retries=0, retry_delay=0,
        )  # fmt: skip
        op.flush()
    assert main(["status", "--state-dir", str(state), "--json"]) == 1
    (status,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status["bytes_behind"] == 4096 and status["pending_files"] == 1
    assert status["last_success_at"] is None and status["consecutive_failures"] >= 1
    assert 3600 <= status["oldest_unshipped_age"] < 3600 + 600
    assert main(["status", "--state-dir", str(state)]) == 1
    assert "behind: 4,096 bytes, the oldest 36" in capsys.readouterr().out
