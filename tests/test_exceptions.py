"""Errors: one family, data on the leaves, and they survive pickling (Ray, processes)."""

from __future__ import annotations

import pickle

import pytest

import aiologship
from aiologship import (
    AiologshipError,
    ClosedError,
    ConfigError,
    CopyConflictError,
    CopyError,
    DestinationError,
)


@pytest.mark.parametrize(
    "error",
    [
        ConfigError("queue_size", -1, "must be greater than zero", path="/etc/a.yaml", line=3),
        DestinationError("hdfs://alice:***@nn:8020/logs", "connection refused"),
        CopyConflictError("app_logs", {"copy_interval": (60, 30)}),
        CopyError("copy operation 'x' is not running"),
        ClosedError("cannot add a sink: the LogManager is closed"),
    ],
)
def test_errors_pickle_round_trip(error: AiologshipError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert isinstance(copy, AiologshipError)


def test_config_error_carries_its_data() -> None:
    error = ConfigError("timezone", "Mars/Base", "unknown time zone", path="c.yaml", line=7)
    assert (error.key, error.value, error.path, error.line) == (
        "timezone",
        "Mars/Base",
        "c.yaml",
        7,
    )
    assert "c.yaml, line 7" in str(error) and "'Mars/Base'" in str(error)
    assert isinstance(error, ValueError)  # callers catching ValueError keep working


def test_public_names() -> None:
    # The public surface, pinned: a change here is a change of the API.
    assert aiologship.__all__ == [
        "AiologshipError", "AsyncFileHandler", "ClosedError", "ConfigError",
        "CopyConflictError", "CopyError", "CopyOperation", "DestinationError", "HdfsDriver",
        "LogFormat", "LogManager", "Logger", "Overflow", "Rotation", "Stats", "__version__",
        "bind_context", "context", "get_context", "unbind_context",
    ]  # fmt: skip
    for name in aiologship.__all__:
        assert hasattr(aiologship, name)
    for name in ("LogManager", "Logger", "CopyOperation", "ConfigError", "AsyncFileHandler",
                 "context", "bind_context"):  # fmt: skip
        assert getattr(aiologship, name).__module__ == "aiologship"
