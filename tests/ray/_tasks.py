"""Remote functions and actors the Ray tests place on chosen nodes.

Kept in their own module (on the workers' PYTHONPATH) so Ray pickles them by
reference, as a user's code would be.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sys
import threading
import time
from typing import Any

import anyio
import ray


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


def _capture() -> tuple[logging.Logger, _ListHandler]:
    log = logging.getLogger("aiologship")
    handler = _ListHandler()
    log.addHandler(handler)
    log.setLevel(logging.DEBUG)
    return log, handler


@ray.remote(num_cpus=0)
class Barrier:
    """Releases every waiter once ``parties`` have arrived: makes ten tasks race."""

    def __init__(self, parties: int) -> None:
        self.parties = parties
        self.arrived = 0
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.parties:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), timeout=120)


@ray.remote(num_cpus=0)
def start_copy_task(
    params: dict[str, Any],
    *,
    state_dir: str,
    factory: Any,
    barrier: Any = None,
) -> dict[str, Any]:
    """What a user's task does: decide (gate), then start or skip, as LogManager will."""
    from aiologship._copiers._coordination import copy_gate, should_skip_copy
    from aiologship._copiers._ray_copier import start_ray_copier

    log, handler = _capture()
    try:
        node_id = ray.get_runtime_context().get_node_id()
        if barrier is not None:
            ray.get(barrier.wait.remote(), timeout=120)
        gate = copy_gate()
        out: dict[str, Any] = {"node_id": node_id, "role": str(gate.role), "enabled": gate.enabled}
        if should_skip_copy(gate, params["copy_name"], str(params.get("scope", "cluster"))):
            out["started"] = False
        else:
            start = functools.partial(
                start_ray_copier, params, state_dir=state_dir, factory=factory, timeout=90
            )
            copier = anyio.run(start)
            out["started"] = True
            out["actor_name"] = copier.actor_name
        out["logs"] = list(handler.lines)
        return out
    finally:
        log.removeHandler(handler)


@ray.remote(num_cpus=0)
def call_on_node(what: str, *args: Any) -> Any:
    """Run a public aiologship.ray function on the node this task is placed on."""
    from aiologship import ray as aray

    fn = getattr(aray, what)
    return fn(*args)


# Set only in the UserService process: holds its copy start (in the worker thread
# that validates the spec) until the service has served some calls, so "served
# while the start was in flight" is certain rather than likely.
_start_gate: threading.Event | None = None


class GatedFactory:
    """The real engine factory, whose spec() waits for ``_start_gate`` if set."""

    def spec(self, params: Any) -> Any:
        from aiologship._copiers._host_copier import DEFAULT_ENGINE_FACTORY

        if _start_gate is not None and not _start_gate.wait(timeout=60):
            raise TimeoutError("the service was not pinged while its start was held")
        return DEFAULT_ENGINE_FACTORY.spec(params)

    def engine(self, spec: Any, state_dir: Any, hdfs_driver: Any) -> Any:
        from aiologship._copiers._host_copier import DEFAULT_ENGINE_FACTORY

        return DEFAULT_ENGINE_FACTORY.engine(spec, state_dir, hdfs_driver)


@ray.remote(num_cpus=0)
class UserService:
    """A user's async actor: awaits the copy start while it keeps serving calls.
    A ticker measures how late the loop wakes it (the loop's worst stall)."""

    def __init__(self, hold_pings: int = 0) -> None:
        global _start_gate
        self.lags: list[float] = []
        self.measuring = False
        self.pings = 0
        self.hold_pings = hold_pings
        _start_gate = threading.Event() if hold_pings else None

    async def _tick(self) -> None:
        period = 0.001
        while self.measuring:
            t0 = time.perf_counter()
            await asyncio.sleep(period)
            self.lags.append(time.perf_counter() - t0 - period)

    async def start_copy(
        self, params: dict[str, Any], state_dir: str, factory: Any
    ) -> dict[str, Any]:
        from aiologship._copiers._ray_copier import start_ray_copier

        self.lags.clear()
        self.measuring = True
        ticker = asyncio.get_running_loop().create_task(self._tick())
        pings_before = self.pings
        try:
            copier = await start_ray_copier(
                params, state_dir=state_dir, factory=factory, timeout=90
            )
        finally:
            self.measuring = False
            await ticker
        return {
            "actor_name": copier.actor_name,
            "pings_during_start": self.pings - pings_before,
            "max_lag": max(self.lags) if self.lags else None,
            "ticks": len(self.lags),
            # The engine (and pyarrow.fs) runs in the copier actor; loading it here
            # would hold this process's GIL for ~100 ms, stalling this loop.
            "engine_loaded_here": "aiologship._copy._engine" in sys.modules,
        }

    async def ping(self, i: int) -> int:
        self.pings += 1
        if _start_gate is not None and self.measuring and self.pings >= self.hold_pings:
            _start_gate.set()
        return i


@ray.remote(num_cpus=0)
class ManagerService:
    """A user's async actor with a LogManager made in ``__init__`` (sync), then
    ``await lm.start_hdfs_copy(...)`` on the actor's loop."""

    def __init__(self, state_dir: str) -> None:
        from aiologship import LogManager

        self.lm = LogManager(state_dir=state_dir)

    async def start(self, params: dict[str, Any]) -> dict[str, Any]:
        before = sys.getswitchinterval()
        op = await self.lm.start_hdfs_copy(**params)
        return {
            "state": str(op.state),
            "engine_loaded_here": "aiologship._copy._engine" in sys.modules,
            "switch_interval": (before, sys.getswitchinterval()),
        }

    async def close(self) -> None:
        await self.lm.aclose()


@ray.remote(num_cpus=0)
def manager_task(
    params: dict[str, Any] | None, *, state_dir: str, barrier: Any = None
) -> dict[str, Any]:
    """What the guide's user task does, through the public LogManager."""
    import os

    from aiologship import LogManager
    from aiologship._copiers._coordination import detect_role

    log, handler = _capture()
    try:
        out: dict[str, Any] = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "role": str(detect_role()),
        }
        if barrier is not None:
            ray.get(barrier.wait.remote(), timeout=120)
        with LogManager(state_dir=state_dir) as lm:
            out["enabled"] = lm.hdfs_copy_enabled
            out["ray_enabled"] = lm._ray_hdfs_enabled
            if params is not None:
                try:
                    op = lm.start_hdfs_copy(**params)
                    out["state"] = op.state
                except Exception as exc:  # reported with the node and logs, for the test
                    out["state"] = f"error: {type(exc).__name__}: {exc}"
        out["logs"] = list(handler.lines)
        return out
    finally:
        log.removeHandler(handler)
