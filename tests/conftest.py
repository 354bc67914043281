"""Shared fixtures: logging state restored after each test, temporary state dirs."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Undo what a test did to the stdlib logging tree (handlers, levels, propagation)."""
    manager = logging.Logger.manager
    root = logging.getLogger()
    saved = {
        name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled)
        for name, lg in manager.loggerDict.items()
        if isinstance(lg, logging.Logger)
    }
    saved_root = (root.handlers[:], root.level)
    yield
    for name, lg in list(manager.loggerDict.items()):
        if not isinstance(lg, logging.Logger):
            continue
        if name in saved:
            handlers, level, propagate, disabled = saved[name]
            lg.handlers[:] = handlers
            lg.setLevel(level)
            lg.propagate = propagate
            lg.disabled = disabled
        else:
            lg.handlers.clear()
            lg.setLevel(logging.NOTSET)
    root.handlers[:] = saved_root[0]
    root.setLevel(saved_root[1])


@pytest.fixture(autouse=True)
def _state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copy manifests go under the test's tmp folder, never the user's cache."""
    state = tmp_path / "_state"
    monkeypatch.setenv("AIOLOGSHIP_STATE_DIR", str(state))
    monkeypatch.delenv("RAY_DISABLE_HDFS_COPY", raising=False)
    return state


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()
