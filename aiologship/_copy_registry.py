"""``CopyRegistry``: one manager's copy operations by name, and the role gate
that decides whether this process ships at all.

Layer rule: between the manager and ``_operation``; imports ``_operation``,
``_copiers``, ``_config``, ``_runtime`` and ``_exceptions``, and ``_copy`` for
types only. Never Ray directly (``_copiers`` does).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread

from ._config import ManagerConfig, default_state_dir
from ._copiers import Backend, CoordinatedBackend, CopyGate, copy_gate, list_copies, stop_copy
from ._exceptions import ConfigError, CopyConflictError
from ._operation import CopyOperation, in_event_loop
from ._runtime import Runtime

if TYPE_CHECKING:
    from ._copy import CopySpec, CopyStatus

_log = logging.getLogger("aiologship")


class CopyRegistry:
    """Start, list and stop copy operations; each runs on the manager's runtime."""

    def __init__(self, config: ManagerConfig, runtime: Runtime) -> None:
        self._config = config
        self._runtime = runtime
        self._lock = threading.RLock()
        # The handle users hold, and the backend behind it (the registry made it).
        self._ops: dict[str, tuple[CopyOperation, CoordinatedBackend]] = {}
        self._gate: CopyGate | None = None

    def __len__(self) -> int:
        return len(self._ops)

    def gate(self) -> CopyGate:
        """The role gate, decided on first use (it may ask Ray's GCS once)."""
        gate = self._gate
        if gate is None:
            with self._lock:
                if self._gate is None:
                    self._gate = copy_gate()
                gate = self._gate
        return gate

    def start(self, spec: CopySpec) -> CopyOperation:
        """The running operation of ``spec.copy_name``, or a new one, started."""
        with self._lock:
            entry = self._ops.get(spec.copy_name)
            if entry is not None:
                existing = entry[0]
                differences = existing.spec.differences(spec)
                if differences:
                    raise CopyConflictError(spec.copy_name, differences)
                return existing
            backend = CoordinatedBackend(
                spec,
                gate=self.gate,
                runtime=self._runtime,
                state_dir=self._config.state_dir or default_state_dir(),
                hdfs_driver=self._config.hdfs_driver,
            )
            # Registered before the start has finished: a second start of the same
            # name meanwhile gets this handle (or a conflict), never a second engine.
            started = self._runtime.submit(backend.start)
            op = CopyOperation(spec, backend, self._runtime, started)
            self._ops[spec.copy_name] = (op, backend)
        if not in_event_loop():
            started.result()  # sync code waits for the start; its errors raise here
        return op

    def statuses(self) -> list[CopyStatus]:
        """This registry's operations, and in a Ray cluster every copier actor's."""
        with self._lock:
            ops = [op for op, _ in self._ops.values()]
        statuses = {op.name: op.status() for op in ops}
        if self.gate().role != "standalone":
            for status in list_copies():
                if statuses.get(status.name) is None or str(statuses[status.name].state) in (
                    "skipped",
                    "new",
                ):
                    statuses[status.name] = status
        return list(statuses.values())

    def local_statuses(self) -> list[CopyStatus]:
        """The operations whose engine runs in this process now (no Ray call):
        a standby, a skipped one and a Ray copier report elsewhere."""
        with self._lock:
            backends = [backend for _, backend in self._ops.values()]
        out = []
        for backend in backends:
            if backend.runs_here:
                status = backend.status()
                if str(status.state) not in ("new", "skipped"):
                    out.append(status)
        return out

    def stop(self, copy_name: str) -> None:
        """Final cycle, then stop; blocks. In a Ray cluster it also stops a copier
        another process started."""
        with self._lock:
            entry = self._ops.pop(copy_name, None)
        if entry is not None and not entry[1].skipped:
            entry[0].stop()
            return
        self._stop_in_cluster(copy_name, found_here=entry is not None)

    async def astop(self, copy_name: str) -> None:
        """``stop`` for async code."""
        with self._lock:
            entry = self._ops.pop(copy_name, None)
        if entry is not None and not entry[1].skipped:
            await entry[0].astop()
            return
        await anyio.to_thread.run_sync(self._stop_in_cluster, copy_name, entry is not None)

    def _stop_in_cluster(self, copy_name: str, found_here: bool) -> None:
        if self.gate().role != "standalone":
            stop_copy(copy_name)
            return
        if not found_here:
            raise ConfigError("copy_name", copy_name, "no copy operation of that name")

    async def close_all(self) -> None:
        """On the runtime loop: a final cycle of every operation, side by side."""
        with self._lock:
            entries = list(self._ops.items())
            self._ops.clear()
        async with anyio.create_task_group() as tg:
            for name, (_, backend) in entries:
                tg.start_soon(_stop_quietly, name, backend)

    def reset_after_fork(self) -> None:
        """In a forked child: the parent keeps running its copies; a child starts
        its own if it asks, and asks about its role again."""
        self._lock = threading.RLock()
        self._ops = {}
        self._gate = None


async def _stop_quietly(name: str, backend: Backend) -> None:
    try:
        await backend.close()
    except Exception:
        _log.exception("final copy cycle of %r failed", name)
