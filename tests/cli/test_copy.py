"""``aiologship copy`` as users run it: a subprocess, its exit code and output."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiologship.cli import build_parser, main

REPO = Path(__file__).resolve().parents[2]


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
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "one.log").write_bytes(b"one\n" * 1000)
    (src / "two.log").write_bytes(b"two\n" * 10)
    return tmp_path


def test_one_shot_copy_with_progress_bar(tree: Path) -> None:
    dst, state = tree / "dst", tree / "state"
    args = [
        "copy",
        "**/*.log",
        "--root-dir",
        str(tree / "src"),
        "--preserve-structure",
        "--to",
        str(dst),
        "--state-dir",
        str(state),
        "--progress",
    ]
    done = cli(*args)
    assert done.returncode == 0, done.stderr
    assert "100.0%" in done.stderr and "[####" in done.stderr
    assert "2/2 files" in done.stderr
    assert (dst / "a" / "one.log").read_bytes() == b"one\n" * 1000
    assert (dst / "two.log").read_bytes() == b"two\n" * 10
    # A second run is incremental: only the appended bytes travel.
    with open(tree / "src" / "two.log", "ab") as f:
        f.write(b"more\n")
    again = cli(*args)
    assert again.returncode == 0, again.stderr
    assert "1 files (5 B) shipped" in again.stderr
    assert (dst / "two.log").read_bytes() == b"two\n" * 10 + b"more\n"


def test_file_uri_destination_without_progress(tree: Path) -> None:
    done = cli(
        "copy",
        str(tree / "src" / "*.log"),
        "--to",
        f"file://{tree}/out",
        "--state-dir",
        str(tree / "state"),
        "--once",
        "--no-progress",
    )
    assert done.returncode == 0, done.stderr
    assert "[" not in done.stderr.split("aiologship copy:")[0]
    assert (tree / "out" / "two.log").exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["copy", "x/*.log", "--to", "/tmp/never"], "path_patterns"),
        (["copy", "/x/*.log", "--to", "ftp://h/p"], "hdfs_destination"),
        (["copy", "/x/*.log", "--to", "/tmp/never", "--interval", "0"], "copy_interval"),
        (["copy", "/x/*.log", "--to", "/tmp/never", "--max-retries", "-1"], "max_retries"),
        (["copy", "/x/*.log"], "--to"),
        (["copy", "/x/*.log", "--to", "/d", "--once", "--interval", "5"], "not allowed"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], needle: str, tmp_path: Path) -> None:
    done = cli(*args, "--state-dir", str(tmp_path)) if "--to" in args else cli(*args)
    assert done.returncode == 2
    assert needle in done.stderr


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "copy" in capsys.readouterr().err


def test_parser_has_room_for_more_commands() -> None:
    parser = build_parser()
    args = parser.parse_args(["copy", "/x/*.log", "--to", "/d", "--interval", "30"])
    assert args.command == "copy" and args.interval == "30" and callable(args.func)


def test_incomplete_copy_exits_1(tree: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tree / "src" / "sock.log"))
    try:
        done = cli(
            "copy",
            str(tree / "src" / "*.log"),
            "--to",
            str(tree / "dst"),
            "--state-dir",
            str(tree / "state"),
        )
    finally:
        sock.close()
    assert done.returncode == 1
    assert "sock.log" in done.stderr and "socket" in done.stderr
    assert (tree / "dst" / "two.log").exists()  # the rest was shipped


def test_failing_destination_exits_1(tree: Path) -> None:
    (tree / "blocker").write_text("a file where the destination folder should be")
    done = cli(
        "copy",
        str(tree / "src" / "*.log"),
        "--to",
        str(tree / "blocker" / "dst"),
        "--state-dir",
        str(tree / "state"),
        "--max-retries",
        "0",
    )
    assert done.returncode == 1
    assert "destination failing" in done.stderr


@pytest.mark.timeout(120)
def test_interval_mode_ctrl_c_runs_the_final_cycle(tree: Path) -> None:
    dst = tree / "dst"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiologship.cli",
            "copy",
            str(tree / "src" / "*.log"),
            "--to",
            str(dst),
            "--state-dir",
            str(tree / "state"),
            "--interval",
            "1 hour",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + 60
        while not (dst / "two.log").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "first cycle did not happen"
            time.sleep(0.02)
        # Written after the first cycle; the next one is an hour away: only the
        # final cycle that Ctrl-C runs can ship it.
        with open(tree / "src" / "two.log", "ab") as f:
            f.write(b"written before ctrl-c\n")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "final cycle" in err
    assert (dst / "two.log").read_bytes().endswith(b"written before ctrl-c\n")


def test_compressed_copy_then_incremental_run(tree: Path) -> None:
    import gzip

    dst, state = tree / "dst", tree / "state"
    args = ["copy", str(tree / "src" / "*.log"), "--to", str(dst), "--state-dir", str(state)]
    done = cli(*args, "--compression", "gzip")
    assert done.returncode == 0, done.stderr
    assert "1 files (40 B as " in done.stderr and " gzip)" in done.stderr
    with open(tree / "src" / "two.log", "ab") as f:
        f.write(b"more\n")
    again = cli(*args, "--compression", "gzip")
    assert again.returncode == 0, again.stderr
    assert "1 files (5 B as " in again.stderr
    assert gzip.decompress((dst / "two.log.gz").read_bytes()) == b"two\n" * 10 + b"more\n"
    assert sorted(p.name for p in dst.iterdir()) == ["two.log.gz"]
    with pytest.raises(SystemExit) as bad:
        main([*args, "--compression", "lz4"])
    assert bad.value.code == 2


def test_rolled_up_copy_and_its_status(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import gzip

    dst, state = tree / "dst", tree / "state"
    for path in (tree / "src").rglob("*.log"):
        os.utime(path, (1, 1))  # rotated long ago: sealed
    args = ["copy", str(tree / "src" / "**" / "*.log"), "--to", str(dst)]
    args += ["--state-dir", str(state), "--compression", "gzip"]
    done = cli(*args, "--rollup", "size=1MiB,interval=1h")
    assert done.returncode == 0, done.stderr
    (roll,) = [p for p in dst.iterdir() if not p.name.startswith(".")]
    assert roll.name.startswith("aiologship-cli-") and roll.name.endswith(".log.gz")
    assert sorted(gzip.decompress(roll.read_bytes()).splitlines(keepends=True)) == sorted(
        (b"one\n" * 1000 + b"two\n" * 10).splitlines(keepends=True)
    )
    assert main(["status", "--state-dir", str(state)]) == 0
    out = capsys.readouterr().out
    assert "roll-up: 1 roll files followed (1 open), 4,040 bytes in" in out
    assert main([*args, "--rollup", "size=huge"]) == 2
    assert "rollup.size" in capsys.readouterr().err
    assert main([*args, "--rollup", "size"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_status_after_copy_once_says_stopped_and_caught_up(tree: Path) -> None:
    state = tree / "state"
    done = cli(
        "copy", str(tree / "src" / "*.log"), "--to", str(tree / "out"),
        "--state-dir", str(state), "--once", "--no-progress",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = cli("status", "--state-dir", str(state), "--json")
    assert shown.returncode == 0, shown.stderr
    (status,) = [json.loads(line) for line in shown.stdout.splitlines()]
    assert status["state"] == "stopped" and status["recorded_state"] == "stopped"
    assert status["running_now"] is False
    assert status["bytes_behind"] == 0 and status["oldest_unshipped_age"] == 0
    assert status["cycles"] == 1 and status["last_success_at"] is not None


def test_rollup_help_says_what_a_left_out_limit_means(
    tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Alone, --rollup means the default limits; with LIMITS, a size or interval
    left out is no limit, so settle alone is refused."""
    with pytest.raises(SystemExit) as shown:
        main(["copy", "--help"])
    assert shown.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: those)" not in text
    assert "a size or interval left out is no limit" in text
    args = ["copy", str(tree / "src" / "*.log"), "--to", str(tree / "dst")]
    args += ["--state-dir", str(tree / "state"), "--rollup", "settle=30s"]
    assert main(args) == 2
    assert "needs a size or an interval" in capsys.readouterr().err
