"""start_hdfs_copy through the LogManager: the API users call, sync and async."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from aiologship import ConfigError, CopyConflictError, CopyOperation, LogManager


def make_logs(root: Path, names: dict[str, str]) -> None:
    for name, text in names.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def test_sync_start_flush_status_and_stop(tmp_path: Path) -> None:
    src, dest = tmp_path / "app", tmp_path / "dest"
    make_logs(src, {"logs/a.log": "a1\n", "logs/b.log": "b1\n"})
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            copy_name="app_logs",
            path_patterns=["logs/*.log"],
            hdfs_destination=str(dest),
            root_dir=src,
            copy_interval=3600,
            preserve_structure=True,
        )
        assert isinstance(op, CopyOperation)
        op.flush()  # the first cycle started with the operation; this one waits for it all
        assert (dest / "logs" / "a.log").read_text() == "a1\n"
        (status,) = lm.list_hdfs_copy_operations()
        assert status.name == "app_logs" and status.state == "running"
        assert status.files_shipped == 2 and status.bytes_shipped == 6
        # Written after the last cycle: the stop's final cycle ships it.
        with open(src / "logs" / "a.log", "a") as f:
            f.write("a2\n")
        lm.stop_hdfs_copy("app_logs")
        assert (dest / "logs" / "a.log").read_text() == "a1\na2\n"
        assert lm.list_hdfs_copy_operations() == []
        with pytest.raises(ConfigError, match="no copy operation"):
            lm.stop_hdfs_copy("app_logs")


def test_close_runs_a_final_cycle(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    lm = LogManager()
    log = lm.get_logger("final")
    log.add(src / "app.log", fmt="%(message)s")
    lm.start_hdfs_copy("final", [str(src / "*.log")], str(dest), copy_interval=3600)
    for i in range(20_000):
        log.info("line %d", i)
    lm.close()  # drains the records, then the final cycle ships them
    assert (dest / "app.log").read_text().splitlines() == [f"line {i}" for i in range(20_000)]


def test_same_name_same_params_returns_the_handle_else_conflict(tmp_path: Path) -> None:
    with LogManager() as lm:
        kwargs = dict(path_patterns=[str(tmp_path / "*.log")], hdfs_destination=str(tmp_path / "d"))
        first = lm.start_hdfs_copy("dup", **kwargs)  # type: ignore[arg-type]
        again = lm.start_hdfs_copy("dup", **kwargs)  # type: ignore[arg-type]
        assert again is first
        with pytest.raises(CopyConflictError) as info:
            lm.start_hdfs_copy("dup", [str(tmp_path / "*.txt")], str(tmp_path / "d"))
        assert "path_patterns" in info.value.differences


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"copy_name": ""}, "copy_name"),
        ({"path_patterns": []}, "path_patterns"),
        ({"path_patterns": ["relative/*.log"]}, "path_patterns"),
        ({"copy_interval": 0}, "copy_interval"),
        ({"max_retries": -1}, "max_retries"),
        ({"retry_delay": -2}, "retry_delay"),
        ({"hdfs_destination": "ftp://host/x"}, "hdfs_destination"),
    ],
)
def test_bad_input_raises_at_start_and_changes_nothing(
    tmp_path: Path, kwargs: dict[str, object], key: str
) -> None:
    params: dict[str, object] = {
        "copy_name": "bad",
        "path_patterns": [str(tmp_path / "*.log")],
        "hdfs_destination": str(tmp_path / "d"),
    }
    params.update(kwargs)
    with LogManager() as lm:
        with pytest.raises(ConfigError) as info:
            lm.start_hdfs_copy(**params)  # type: ignore[arg-type]
        assert info.value.key == key
        assert lm.list_hdfs_copy_operations() == []


def test_credentials_never_in_status_or_repr(tmp_path: Path) -> None:
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "secret",
            [str(tmp_path / "*.log")],
            "hdfs://alice:s3cr3t@127.0.0.1:1/logs/",
            copy_interval=3600,
            max_retries=0,
            retry_delay=0,
        )
        text = repr(op) + repr(lm.list_hdfs_copy_operations())
        assert "s3cr3t" not in text
        lm.stop_hdfs_copy("secret")


def test_failing_destination_shows_in_status_not_in_the_app(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    make_logs(src, {"a.log": "x\n"})
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the destination folder should be")
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "broken", [str(src / "*.log")], str(blocker / "sub"), copy_interval=3600,
            max_retries=1, retry_delay=0,
        )  # fmt: skip
        op.flush()
        op.flush()
        status = op.status()
        assert status.pending_files == 1
        assert status.last_error and status.consecutive_failures >= 1
    failures = [
        r
        for r in caplog.records
        if r.name.startswith("aiologship") and r.levelno >= logging.WARNING
    ]
    assert failures, "a failure streak is reported in the log"


async def test_async_start_flush_and_exit_ship_everything(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    async with LogManager() as lm:
        log = lm.get_logger("asynccopy")
        log.add(src / "app.log", fmt="%(message)s")
        op = await lm.start_hdfs_copy(
            "async_logs", [str(src / "*.log")], str(dest), copy_interval=3600
        )
        log.info("first")
        await lm.aflush()
        await op.flush()
        assert (dest / "app.log").read_text() == "first\n"
        assert op.status().files_shipped >= 1
        for i in range(100):
            log.info("more %d", i)
            await asyncio.sleep(0)
    assert (dest / "app.log").read_text().splitlines() == ["first"] + [
        f"more {i}" for i in range(100)
    ]


def test_copies_declared_in_yaml_start_with_the_manager(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_logs(src, {"x.log": "hello\n"})
    config = tmp_path / "c.yaml"
    config.write_text(
        "copies:\n"
        f"  - copy_name: from_yaml\n    path_patterns: ['{src}/*.log']\n"
        f"    hdfs_destination: {dest}\n    copy_interval: 3600\n",
        encoding="utf-8",
    )
    with LogManager(config_path=config) as lm:
        (status,) = lm.list_hdfs_copy_operations()
        assert status.name == "from_yaml"
    assert (dest / "x.log").read_text() == "hello\n"


def test_copies_from_yaml_compressed(tmp_path: Path) -> None:
    import gzip

    src, dest = tmp_path / "src", tmp_path / "dest"
    make_logs(src, {"x.log": "hello\n"})
    config = tmp_path / "c.yaml"
    config.write_text(
        "copies:\n"
        f"  - copy_name: packed\n    path_patterns: ['{src}/*.log']\n"
        f"    hdfs_destination: {dest}\n    compression: gzip\n",
        encoding="utf-8",
    )
    with LogManager(config_path=config):
        pass
    assert gzip.decompress((dest / "x.log.gz").read_bytes()) == b"hello\n"
    config.write_text(config.read_text().replace("gzip", "lz4"), encoding="utf-8")
    with pytest.raises(ConfigError, match="lz4"), LogManager(config_path=config):
        pass


def test_copies_from_yaml_rolled_up(tmp_path: Path) -> None:
    import gzip
    import os

    src, dest = tmp_path / "src", tmp_path / "dest"
    make_logs(src, {"x.log.1": "one\n", "x.log.2": "two\n"})
    for path in src.iterdir():
        os.utime(path, (1, 1))  # rotated long ago: sealed
    config = tmp_path / "c.yaml"
    config.write_text(
        "copies:\n"
        f"  - copy_name: rolled\n    path_patterns: ['{src}/*.log*']\n"
        f"    hdfs_destination: {dest}\n    compression: gzip\n"
        "    rollup: {size: 128 MiB, interval: 1 h, settle: 1 min}\n",
        encoding="utf-8",
    )
    with LogManager(config_path=config) as lm:
        (status,) = lm.list_hdfs_copy_operations()
        assert status.name == "rolled"
    (roll,) = [p for p in dest.iterdir() if not p.name.startswith(".")]
    assert roll.name.startswith("rolled-") and roll.name.endswith(".log.gz")
    assert gzip.decompress(roll.read_bytes()) == b"one\ntwo\n"
    config.write_text(config.read_text().replace("128 MiB", "huge"), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"rollup\.size"), LogManager(config_path=config):
        pass


def test_copy_once(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    make_logs(src, {"once.log": "1\n"})
    with LogManager() as lm:
        op = lm.start_hdfs_copy("once", [str(src / "*.log")], str(dest), copy_interval=None)
        op.flush()
    assert (dest / "once.log").read_text() == "1\n"


def test_standalone_copies_are_enabled() -> None:
    with LogManager() as lm:
        assert lm.hdfs_copy_enabled is True
        assert lm._ray_hdfs_enabled is True
