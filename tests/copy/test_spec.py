from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from aiologship._copy import CopySpec, Scope
from aiologship._exceptions import ConfigError


def make(**overrides: Any) -> CopySpec:
    params: dict[str, Any] = {
        "copy_name": "app",
        "path_patterns": ["/app/logs/*.log"],
        "hdfs_destination": "hdfs://nn:9000/logs/",
    }
    params.update(overrides)
    return CopySpec.from_params(**params)


def test_defaults() -> None:
    spec = make()
    assert spec.path_patterns == ("/app/logs/*.log",)
    assert spec.copy_interval == 60
    assert spec.create_dest_dirs is True
    assert spec.preserve_structure is False
    assert spec.max_retries == 3
    assert spec.retry_delay == 5
    assert spec.scope is Scope.CLUSTER
    assert spec.root_dir is None


def test_conversions() -> None:
    spec = make(
        path_patterns=["logs/*.log", Path("/app/other/*.txt")],
        root_dir="/app/",
        copy_interval="2 min",
        retry_delay=timedelta(seconds=1.5),
        scope="NODE",
        preserve_structure=True,
    )
    assert spec.path_patterns == ("/app/logs/*.log", "/app/other/*.txt")
    assert spec.root_dir == Path("/app")
    assert spec.copy_interval == 120
    assert spec.retry_delay == 1.5
    assert spec.scope is Scope.NODE


def test_a_lone_string_pattern_is_one_pattern() -> None:
    assert make(path_patterns="/x/*.log").path_patterns == ("/x/*.log",)


def test_copy_interval_none_means_once() -> None:
    assert make(copy_interval=None).copy_interval is None


@pytest.mark.parametrize(
    ("overrides", "key", "reason"),
    [
        ({"copy_name": ""}, "copy_name", "non-empty"),
        ({"copy_name": "  "}, "copy_name", "non-empty"),
        ({"copy_name": None}, "copy_name", "non-empty"),
        ({"copy_name": "a\nb"}, "copy_name", "control"),
        ({"path_patterns": []}, "path_patterns", "non-empty list"),
        ({"path_patterns": None}, "path_patterns", "non-empty list"),
        ({"path_patterns": [""]}, "path_patterns", "non-empty string"),
        ({"path_patterns": [3]}, "path_patterns", "non-empty string"),
        ({"path_patterns": ["logs/*.log"]}, "path_patterns", "needs root_dir"),
        (
            {"path_patterns": ["/var/log/*.log"], "root_dir": "/app", "preserve_structure": True},
            "path_patterns",
            "outside root_dir",
        ),
        (
            {
                "path_patterns": ["/app/../etc/*.log"],
                "root_dir": "/app",
                "preserve_structure": True,
            },
            "path_patterns",
            "outside root_dir",
        ),
        ({"preserve_structure": True}, "root_dir", "needs root_dir"),
        ({"hdfs_destination": "ftp://x/y"}, "hdfs_destination", "unsupported scheme"),
        ({"hdfs_destination": "hdfs:/x"}, "hdfs_destination", "malformed"),
        ({"hdfs_destination": ""}, "hdfs_destination", "empty"),
        ({"copy_interval": 0}, "copy_interval", "greater than zero"),
        ({"copy_interval": -5}, "copy_interval", "negative"),
        ({"copy_interval": "soon"}, "copy_interval", "duration"),
        ({"max_retries": -1}, "max_retries", "negative"),
        ({"max_retries": 1.5}, "max_retries", "whole number"),
        ({"max_retries": True}, "max_retries", "whole number"),
        ({"retry_delay": -0.1}, "retry_delay", "negative"),
        ({"create_dest_dirs": "yes"}, "create_dest_dirs", "True or False"),
        ({"preserve_structure": 1}, "preserve_structure", "True or False"),
        ({"scope": "galaxy"}, "scope", "'cluster' or 'node'"),
        ({"root_dir": ""}, "root_dir", "directory path"),
    ],
)
def test_bad_input(overrides: dict[str, Any], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(**overrides)
    assert info.value.key == key
    assert reason in str(info.value)


def test_pattern_inside_root_is_fine_with_preserve_structure() -> None:
    spec = make(
        path_patterns=["/app/logs/**/*.log", "sub/*.txt"], root_dir="/app", preserve_structure=True
    )
    assert spec.path_patterns == ("/app/logs/**/*.log", "/app/sub/*.txt")


def test_differences_and_redaction() -> None:
    a = make(hdfs_destination="s3://key:one@bucket/x")
    b = make(hdfs_destination="s3://key:two@bucket/x", copy_interval=30)
    diff = a.differences(b)
    assert diff["copy_interval"] == (60, 30)
    assert diff["hdfs_destination"] == ("s3://key:***@bucket/x", "s3://key:***@bucket/x")
    assert "one" not in repr(diff) and "two" not in repr(diff)
    assert a.differences(make(hdfs_destination="s3://key:one@bucket/x")) == {}
    assert a.destination_redacted == "s3://key:***@bucket/x"


def test_state_key_is_safe_and_ignores_credentials() -> None:
    a = make(copy_name="my app/../logs", hdfs_destination="s3://k:one@bucket/x")
    b = make(copy_name="my app/../logs", hdfs_destination="s3://k:two@bucket/x")
    c = make(copy_name="my app/../logs", hdfs_destination="s3://k:one@bucket/y")
    assert a.state_key == b.state_key != c.state_key
    # One path component that cannot climb out of the state directory.
    assert "/" not in a.state_key and not a.state_key.startswith(".")


def test_as_params_round_trips() -> None:
    spec = make(root_dir="/app", preserve_structure=True, path_patterns=["logs/*.log"])
    assert CopySpec.from_params(**spec.as_params()) == spec
