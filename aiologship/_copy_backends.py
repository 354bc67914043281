"""Where a copy operation's engine runs, behind ``CopyOperation``.

``LocalBackend``: a ``CopyEngine`` on the manager's runtime loop.
``SkippedBackend``: copies disabled here (Ray worker node, RAY_DISABLE_HDFS_COPY).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._config import HdfsDriver
from ._runtime import Runtime

if TYPE_CHECKING:
    from ._copy import CopyEngine, CopySpec, CopyStatus

_log = logging.getLogger("aiologship")


def _placeholder_status(spec: CopySpec, state: str, error: str | None = None) -> CopyStatus:
    from ._copy import CopyState, CopyStatus

    return CopyStatus(
        name=spec.copy_name,
        state=CopyState(state),
        destination=spec.destination_redacted,
        files_shipped=0,
        bytes_shipped=0,
        pending_files=0,
        last_cycle_at=None,
        next_cycle_at=None,
        last_error=error,
        consecutive_failures=0 if error is None else 1,
    )


class LocalBackend:
    def __init__(
        self, spec: CopySpec, runtime: Runtime, state_dir: Path, driver: HdfsDriver
    ) -> None:
        self.spec = spec
        self._runtime = runtime
        self._state_dir = state_dir
        self._driver = driver
        self._engine: CopyEngine | None = None
        self._error: str | None = None

    async def start(self) -> None:
        from ._copy import CopyEngine

        engine = CopyEngine(self.spec, state_dir=self._state_dir, hdfs_driver=self._driver)
        try:
            await engine.open()
        except Exception as exc:
            self._error = str(exc)
            raise
        self._engine = engine
        self._runtime.spawn(self._run, engine)

    async def _run(self, engine: CopyEngine) -> None:
        try:
            await engine.run()
        except Exception as exc:
            self._error = str(exc)
            _log.exception("copy operation %r stopped on an error", self.spec.copy_name)

    async def flush(self) -> Any:
        return await self._require_engine().flush()

    async def stop(self) -> None:
        if self._engine is not None:
            await self._engine.stop()

    def _require_engine(self) -> CopyEngine:
        if self._engine is None:
            from ._exceptions import CopyError

            raise CopyError(
                f"copy operation {self.spec.copy_name!r} is not running"
                + (f": {self._error}" if self._error else "")
            )
        return self._engine

    def status(self) -> CopyStatus:
        if self._engine is not None:
            return self._engine.status()
        return _placeholder_status(self.spec, "failed" if self._error else "new", self._error)


class SkippedBackend:
    def __init__(self, spec: CopySpec) -> None:
        self.spec = spec

    async def start(self) -> None:
        return None

    async def flush(self) -> Any:
        return None

    async def stop(self) -> None:
        return None

    def status(self) -> CopyStatus:
        return _placeholder_status(self.spec, "skipped")
