"""Shared fixtures: logging state restored after each test, temporary state dirs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from aiologship._logging._queue import SinkHandler, direct_sinks

# No Hypothesis deadline anywhere: a per-example time limit is an assertion on wall
# time, which fails on a loaded machine (seen: 331 ms against the 200 ms default in
# tests/integrations/test_fastapi.py with two xdist workers on two cores).
settings.register_profile("aiologship", deadline=None)
settings.load_profile("aiologship")

# Tests that share one expensive process-wide thing run in one xdist worker, in
# their collection order (``-n auto`` in noxfile.py): the Ray cluster of tests/ray
# (and the Serve test, which starts a Ray of its own: two Rays at once on two cores
# only slow each other down), and the HDFS mini-cluster of tests/hdfs. Every other
# test is a unit of its own. (xdist's ``loadgroup`` does this with marks, but it
# renames node ids, which pytest 9.2 no longer reads: the groups were ignored.)
_GROUPS = (
    ("tests/ray/", "ray"),
    ("tests/integrations/test_ray_serve.py", "ray"),
    ("tests/hdfs/", "hdfs"),
)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            for prefix, group in _GROUPS:
                if nodeid.startswith(prefix):
                    return group
            return nodeid

    return GroupScheduling(config, log)


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


def only_aiologship_sinks(std: logging.Logger) -> None:
    """Cut pytest's handlers off ``std``: on the root logger (``propagate = False``)
    and on the logger itself (pytest adds its capture handlers to loggers that do
    not propagate). The autouse fixture above restores both."""
    std.propagate = False
    std.handlers[:] = [h for h in std.handlers if isinstance(h, SinkHandler)]


@pytest.fixture(params=["captured", "record"])
def route(request: pytest.FixtureRequest) -> Callable[[Any], Any]:
    """Run a test on both ways a log call reaches the queue.

    ``captured``: the logger's records reach only aiologship sinks (the usual
    service set-up), so the call is queued as a flat tuple and the pump builds the
    record; under pytest that needs ``only_aiologship_sinks``. ``record``: another
    handler sees the record too, so a ``LogRecord`` is made on the caller's side
    and queued. That handler is a ``NullHandler`` on the logger, in place of
    pytest's capture handlers (which format and keep every record: 300,000 records
    cost 40-60 µs each there, against a few µs here; the route is the same).

    Apply it to the logger after its sinks are added: ``log = route(log)``.
    """

    def apply(log: Any) -> Any:
        std = log.logger
        if request.param == "captured":
            only_aiologship_sinks(std)
            assert direct_sinks(std, logging.CRITICAL), "expected aiologship sinks only"
        else:
            only_aiologship_sinks(std)
            std.addHandler(logging.NullHandler())
            assert direct_sinks(std, logging.CRITICAL) is None, "expected another handler"
        return log

    return apply


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()
