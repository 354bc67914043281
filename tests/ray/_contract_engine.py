"""A minimal engine with the CopyEngine contract (brief), used by the Ray tests only
while the real engine (aiologship._copy, branch ``copy``) has not landed.

It copies local files to a local folder: temp name + rename (never a partial file
under a final name), manifest written after each file, so a kill mid-copy ships
nothing twice and loses nothing. The conftest prefers the real engine when present.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import anyio

from aiologship._config import HdfsDriver
from aiologship._exceptions import ConfigError


@dataclass(frozen=True, kw_only=True)
class StubSpec:
    copy_name: str
    path_patterns: tuple[str, ...]
    hdfs_destination: str
    copy_interval: float | None = 60.0
    scope: str = "cluster"

    @classmethod
    def from_params(cls, **params: Any) -> StubSpec:
        if not params.get("copy_name"):
            raise ConfigError("copy_name", params.get("copy_name"), "expected a non-empty name")
        return cls(
            copy_name=params["copy_name"],
            path_patterns=tuple(params["path_patterns"]),
            hdfs_destination=str(params["hdfs_destination"]),
            copy_interval=params.get("copy_interval", 60.0),
            scope=str(params.get("scope", "cluster")),
        )

    def differences(self, other: StubSpec) -> dict[str, tuple[Any, Any]]:
        out = {}
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out[f.name] = (a, b)
        return out


@dataclass(frozen=True)
class StubStatus:
    name: str
    state: str
    destination: str
    files_shipped: int
    bytes_shipped: int
    pending_files: int
    last_cycle_at: float | None
    next_cycle_at: float | None
    last_error: str | None
    consecutive_failures: int


class StubEngine:
    def __init__(self, spec: StubSpec, state_dir: Path, delay: float) -> None:
        self.spec = spec
        self.manifest_path = Path(state_dir) / f"{spec.copy_name}.manifest.json"
        self.dest = Path(spec.hdfs_destination.removeprefix("file://"))
        self.delay = delay
        self.manifest: dict[str, list[int]] = {}
        self.state = "new"
        self.files = 0
        self.bytes = 0
        self.pending = 0
        self.last_cycle_at: float | None = None
        self._lock = anyio.Lock()
        self._stop = anyio.Event()
        self._done = anyio.Event()

    async def open(self) -> None:
        def load() -> None:
            self.manifest_path.parent.mkdir(parents=True, exist_ok=True)
            if self.manifest_path.exists():
                self.manifest = json.loads(self.manifest_path.read_text())

        await anyio.to_thread.run_sync(load)

    async def run(self) -> None:
        self.state = "running"
        try:
            while True:
                await self.flush()
                if self.spec.copy_interval is None:
                    await self._stop.wait()
                    break
                with anyio.move_on_after(self.spec.copy_interval):
                    await self._stop.wait()
                if self._stop.is_set():
                    break
            await self.flush()  # final cycle
        finally:
            self.state = "stopped"
            self._done.set()

    async def flush(self) -> int:
        async with self._lock:
            todo = await anyio.to_thread.run_sync(self._scan)
            self.pending = len(todo)
            shipped = 0
            for src, size, mtime in todo:
                if self.delay:
                    await anyio.sleep(self.delay)
                await anyio.to_thread.run_sync(self._ship, src, size, mtime)
                self.pending -= 1
                shipped += 1
            self.last_cycle_at = time.time()
            return shipped

    def _scan(self) -> list[tuple[str, int, int]]:
        todo = []
        for pattern in self.spec.path_patterns:
            for src in sorted(glob.glob(pattern)):
                st = os.stat(src)
                if self.manifest.get(src) != [st.st_size, st.st_mtime_ns]:
                    todo.append((src, st.st_size, st.st_mtime_ns))
        return todo

    def _ship(self, src: str, size: int, mtime: int) -> None:
        target = self.dest / os.path.basename(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
        self.manifest[src] = [size, mtime]
        part = self.manifest_path.with_suffix(".part")
        part.write_text(json.dumps(self.manifest))
        os.replace(part, self.manifest_path)
        self.files += 1
        self.bytes += size

    async def stop(self) -> None:
        self._stop.set()
        await self._done.wait()

    def status(self) -> StubStatus:
        return StubStatus(
            name=self.spec.copy_name,
            state=self.state,
            destination=self.spec.hdfs_destination,
            files_shipped=self.files,
            bytes_shipped=self.bytes,
            pending_files=self.pending,
            last_cycle_at=self.last_cycle_at,
            next_cycle_at=None,
            last_error=None,
            consecutive_failures=0,
        )


class StubEngineFactory:
    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    def spec(self, params: Mapping[str, Any]) -> StubSpec:
        return StubSpec.from_params(**params)

    def engine(self, spec: Any, state_dir: Path, hdfs_driver: HdfsDriver) -> StubEngine:
        return StubEngine(spec, state_dir, self.delay)
