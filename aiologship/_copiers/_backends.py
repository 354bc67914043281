"""Where a copy operation's engine runs, behind ``CopyOperation``: the
:class:`Backend` protocol and the backend the manager holds.

``CoordinatedBackend`` decides on the manager's runtime (never on the caller's loop:
the first Ray role lookup may take a GCS round trip) and then delegates to

- ``SkippedBackend``: copies disabled here (Ray worker node, RAY_DISABLE_HDFS_COPY);
- ``HostLockBackend``: outside Ray, the engine on this process's runtime while it
  holds the host lock for the copy_name (one copier per host);
- ``RayBackend``: in Ray, the detached copier actor for the copy_name.

Every backend implements the whole :class:`Backend` protocol, so no caller asks
an object what it is (``hasattr``) before calling it.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

# Loaded with the manager, not at a copy's first start: an import runs Python (and
# compiles source where no bytecode is cached) holding the GIL, which would stall
# the caller's event loop in the middle of its ``await start_hdfs_copy(...)``.
# None of these imports Ray or pyarrow.
from .._config import HdfsDriver
from .._exceptions import CopyError
from .._runtime import Runtime
from ._coordination import Role, ray_initialized, should_skip_copy
from ._host_copier import HostLockBackend, placeholder_status
from ._ray_copier import RayBackend

if TYPE_CHECKING:
    from .._copy import CopySpec, CopyStatus, CycleResult
    from ._coordination import CopyGate


class Backend(Protocol):
    """Where the engine runs: this process's runtime, a Ray actor, or nowhere
    (skipped). Every method a caller uses is here."""

    @property
    def skipped(self) -> bool:
        """Copies are disabled here (Ray worker node, ``RAY_DISABLE_HDFS_COPY``)."""
        ...

    async def start(self) -> None: ...
    async def flush(self) -> CycleResult: ...
    async def stop(self) -> None:
        """``stop_hdfs_copy``: final cycle, then stop, wherever the engine runs."""
        ...

    async def close(self) -> None:
        """The manager closes: stop an engine of this process; a Ray copier gets
        one bounded cycle and is released (it keeps running for the cluster)."""
        ...

    async def release(self) -> None:
        """Let go of the copy without a final cycle of our own: a Ray copier keeps
        running; an engine of this process cannot outlive it and stops."""
        ...

    def status(self) -> CopyStatus: ...


class SkippedBackend:
    def __init__(self, spec: CopySpec) -> None:
        self.spec = spec

    @property
    def skipped(self) -> bool:
        return True

    async def start(self) -> None:
        return None

    async def flush(self) -> Any:
        return None

    async def stop(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def release(self) -> None:
        return None

    def status(self) -> CopyStatus:
        return placeholder_status(self.spec, "skipped")


# Ray's first start of a copier actor runs pure-Python work in this process's
# threads for a few hundred ms (its client pickles the actor class, looks it up in
# the GCS). A thread that wants the GIL meanwhile, such as an async actor's event
# loop, waits up to the interpreter's switch interval each time: 5 ms by default.
_SHORT_SLICE = 0.0005
_slices_lock = threading.Lock()
_slices_users = 0
_slices_saved = 0.0


@contextlib.contextmanager
def short_gil_slices() -> Iterator[None]:
    """Lower ``sys.setswitchinterval`` to 0.5 ms while a Ray copier is being started,
    then put back what was there (unless someone changed it meanwhile). Nested and
    concurrent starts share one lowering."""
    global _slices_users, _slices_saved
    with _slices_lock:
        if _slices_users == 0:
            _slices_saved = sys.getswitchinterval()
            if _slices_saved > _SHORT_SLICE:
                sys.setswitchinterval(_SHORT_SLICE)
        _slices_users += 1
    try:
        yield
    finally:
        with _slices_lock:
            _slices_users -= 1
            if _slices_users == 0 and sys.getswitchinterval() == _SHORT_SLICE:
                sys.setswitchinterval(_slices_saved)


class CoordinatedBackend:
    def __init__(
        self,
        spec: CopySpec,
        *,
        gate: Callable[[], CopyGate],
        runtime: Runtime,
        state_dir: Path,
        hdfs_driver: HdfsDriver,
    ) -> None:
        self.spec = spec
        self._gate = gate
        self._runtime = runtime
        self._state_dir = state_dir
        self._driver = hdfs_driver
        self._inner: Backend | None = None
        self._error: str | None = None

    @property
    def skipped(self) -> bool:
        return self._inner is not None and self._inner.skipped

    @property
    def runs_here(self) -> bool:
        """The engine runs in this process (not in a Ray copier actor)."""
        return isinstance(self._inner, HostLockBackend)

    async def start(self) -> None:
        try:
            if ray_initialized():
                # The role lookup and the copier actor's start run Python in this
                # process's threads: see short_gil_slices.
                with short_gil_slices():
                    await self._start()
            else:
                await self._start()
        except Exception as exc:
            self._error = str(exc)
            raise

    async def _start(self) -> None:
        # The Ray role lookup happens in a worker thread, not on any event loop.
        gate = await anyio.to_thread.run_sync(self._gate)
        if should_skip_copy(gate, self.spec.copy_name, str(self.spec.scope)):
            self._inner = SkippedBackend(self.spec)
            return
        inner: Backend
        if gate.role is Role.STANDALONE:
            # The engine runs in this process: its first import (pyarrow, ~100 ms) in
            # a worker thread. In Ray it runs in the copier actor, so this process
            # never imports it (an import holds the GIL: every event loop of the
            # process would stall meanwhile).
            await anyio.to_thread.run_sync(importlib.import_module, "aiologship._copy._engine")
            inner = HostLockBackend(
                self.spec,
                runtime=self._runtime,
                state_dir=self._state_dir,
                hdfs_driver=self._driver,
            )
        else:
            # A head node, or a worker node with scope="node": the copier actor.
            inner = RayBackend(self.spec, state_dir=self._state_dir, hdfs_driver=self._driver)
        self._inner = inner
        await inner.start()

    async def flush(self) -> Any:
        return await self._require().flush()

    async def stop(self) -> None:
        if self._inner is not None:
            await self._inner.stop()

    async def close(self) -> None:
        """The manager closes: stop a local copier; leave a Ray copier running."""
        if self._inner is not None:
            await self._inner.close()

    async def release(self) -> None:
        if self._inner is not None:
            await self._inner.release()

    def _require(self) -> Backend:
        if self._inner is None:
            raise CopyError(
                f"copy operation {self.spec.copy_name!r} is not running"
                + (f": {self._error}" if self._error else "")
            )
        return self._inner

    def status(self) -> CopyStatus:
        if self._inner is not None:
            return self._inner.status()
        state = "failed" if self._error else "new"
        return placeholder_status(self.spec, state, self._error)
