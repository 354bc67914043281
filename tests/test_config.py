from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from aiologship import ConfigError, LogManager, Overflow
from aiologship._config import LogFormat, load_config, parse_duration, parse_rotation, parse_size


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    cfg = load_config(environ={})
    assert cfg.level == logging.INFO
    assert cfg.format is LogFormat.TEXT
    assert cfg.queue_size >= 100_000
    assert cfg.overflow is Overflow.WAIT


def test_precedence_file_then_kwargs_then_env(tmp_path: Path) -> None:
    path = write(tmp_path, "level: DEBUG\nformat: json\nqueue_size: 500\ntimezone: Asia/Tokyo\n")
    cfg = load_config(
        path, {"queue_size": 600, "timezone": "Asia/Singapore"}, {"AIOLOGSHIP_QUEUE_SIZE": "700"}
    )
    assert cfg.level == logging.DEBUG  # file only
    assert cfg.format is LogFormat.JSON
    assert cfg.timezone == ZoneInfo("Asia/Singapore")  # kwargs beat the file
    assert cfg.queue_size == 700  # env beats kwargs


def test_sinks_from_yaml(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"sinks:\n  - path: {tmp_path}/a.log\n    logger: app\n    level: warning\n"
        f"    rotation: 10 MB\n    retention: 3\n  - {tmp_path}/b.log\n",
    )
    cfg = load_config(path, environ={})
    a, b = cfg.sinks
    assert a.logger == "app" and a.level == logging.WARNING
    assert a.rotation is not None and a.rotation.max_bytes == 10_000_000 and a.retention == 3
    assert b.path == tmp_path / "b.log" and b.logger == ""


@pytest.mark.parametrize(
    ("text", "key", "line"),
    [
        ("level: INFO\nlevle: DEBUG\n", "levle", 2),
        ("level: LOUD\n", "level", 1),
        ("format: xml\n", "format", 1),
        ("queue_size: -5\n", "queue_size", 1),
        ("queue_size: many\n", "queue_size", 1),
        ("timezone: Mars/Olympus\n", "timezone", 1),
        ("overflow: explode\n", "overflow", 1),
        ("sinks:\n  - path: /tmp/x.log\n    rotation: -3\n", "sinks[0].rotation", 3),
        ("sinks:\n  - level: INFO\n", "sinks[0].path", None),
        ("sinks:\n  - path: /tmp/x.log\n    colour: red\n", "sinks[0].colour", 3),
    ],
)
def test_bad_values_name_key_value_file_and_line(
    tmp_path: Path, text: str, key: str, line: int | None
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert err.key == key
    assert err.path == str(path)
    if line is not None:
        assert err.line == line
        assert f"line {line}" in str(err)
    assert key in str(err)


def test_invalid_yaml_reports_line(tmp_path: Path) -> None:
    path = write(tmp_path, "level: INFO\nsinks: [\n  - oops: : :\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert "invalid YAML" in str(info.value)
    assert info.value.line is not None and info.value.line >= 2


def test_missing_and_non_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})
    assert load_config(write(tmp_path, ""), environ={}).level == logging.INFO


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(environ={"AIOLOGSHIP_OVERFLOW": "sometimes"})
    assert "AIOLOGSHIP_OVERFLOW" in str(info.value)
    assert "'sometimes'" in str(info.value)


def test_unknown_keyword_argument() -> None:
    with pytest.raises(ConfigError, match="unknown key"):
        LogManager(queue_sise=5)


def test_unknown_timezone_keyword() -> None:
    with pytest.raises(ConfigError) as info:
        LogManager(timezone="Nowhere/Special")
    assert info.value.key == "timezone" and info.value.value == "Nowhere/Special"


def test_units() -> None:
    assert parse_size("512 KiB", "k") == 512 * 1024
    assert parse_size(1000, "k") == 1000
    assert parse_duration("1 day", "k") == timedelta(days=1)
    assert parse_duration(2.5, "k") == timedelta(seconds=2.5)
    rotation = parse_rotation("1 hour")
    assert rotation is not None and rotation.interval == timedelta(hours=1)
    for bad in ("-1 MB", "ten", 0, True):
        with pytest.raises(ConfigError):
            parse_rotation(bad)
