"""Who may copy: Ray role detection, the ``RAY_DISABLE_HDFS_COPY`` override, the
start gate the manager asks, and the host file lock that gives one copier per
``copy_name`` between processes outside Ray (a second process on the host, or a
Ray copier beside a plain process sharing the state dir, must never ship the
same files again).

Layer rule: imports ``_exceptions`` and the state dir's file names
(``_copy._statedir``, no pyarrow); Ray lazily, inside functions (importing it
costs about a second, and it is never needed outside a cluster). It imports no
backend: the caller picks one after asking the gate.
"""

from __future__ import annotations

import errno
import fcntl
import importlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import anyio

from .._copy._statedir import host_lock_path
from .._exceptions import ConfigError, CopyError

logger = logging.getLogger("aiologship")

ENV_DISABLE = "RAY_DISABLE_HDFS_COPY"
HEAD_RESOURCE = "node:__internal_head__"
_ENV_TRUE = frozenset({"true", "1", "yes"})
_ENV_FALSE = frozenset({"", "false", "0", "no"})
# A GCS lookup that does not answer within this is a broken cluster, not a slow one.
_LOOKUP_TIMEOUT = 10.0
# Longest pause between two polls of a held host lock: a waiting process takes
# over within min(copy_interval, this) of the holder's death.
MAX_LOCK_POLL = 5.0
MIN_LOCK_POLL = 0.05


class Role(StrEnum):
    """Where this process runs, as far as copying is concerned."""

    STANDALONE = "standalone"  # Ray not installed, or not initialized in this process
    HEAD = "head"  # a Ray process on the node that carries node:__internal_head__
    WORKER = "worker"  # a Ray process on any other node


# ------------------------------------------------------------------ env override


def copy_disabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """``RAY_DISABLE_HDFS_COPY``: true/1/yes (any case) disable copies in this process;
    unset, empty, false/0/no change nothing; any other value is warned about (by name)
    and changes nothing, so a typo never silently stops log shipping."""
    env = os.environ if environ is None else environ
    raw = env.get(ENV_DISABLE)
    if raw is None:
        return False
    value = raw.strip().lower()
    if value in _ENV_TRUE:
        return True
    if value not in _ENV_FALSE:
        logger.warning(
            "ignoring %s=%r: expected true/1/yes to disable HDFS copy, or false/0/no/empty",
            ENV_DISABLE,
            raw,
        )
    return False


# ------------------------------------------------------------------ role detection

# (pid, node id) -> role. The pid guards against a forked child reusing a parent's
# answer; the node id against ray.shutdown() + ray.init() to another cluster.
_role_cache: dict[tuple[int, str], Role] = {}
_role_lock = threading.Lock()


def import_ray() -> Any:
    """``import ray`` typed as Any: Ray's lazily-populated module defeats mypy."""
    import ray

    return ray


def _ray_if_initialized() -> Any | None:
    """The ``ray`` module when Ray is initialized in this process, else None.

    Never imports Ray: if nobody imported it, it cannot be initialized, and
    importing it costs about a second."""
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    try:
        return ray if ray.is_initialized() else None
    except AttributeError:  # a partially imported or foreign module named ray
        return None


def ray_initialized() -> bool:
    """Ray is initialized in this process (never imports Ray)."""
    return _ray_if_initialized() is not None


def current_node_id() -> str | None:
    """Hex id of the Ray node this process runs on, or None outside Ray."""
    ray = _ray_if_initialized()
    if ray is None:
        return None
    node_id: str = ray.get_runtime_context().get_node_id()
    return node_id


def cached_role() -> Role | None:
    """The role if it is known without any lookup (STANDALONE, or cached), else None.
    Lets async callers skip a worker thread in the common case."""
    ray = _ray_if_initialized()
    if ray is None:
        return Role.STANDALONE
    key = (os.getpid(), ray.get_runtime_context().get_node_id())
    return _role_cache.get(key)


def detect_role() -> Role:
    """This process's role. Costs one GCS lookup per (process, node), then a dict
    lookup; STANDALONE costs no lookup at all. May block for that one lookup: async
    callers use :func:`adetect_role`."""
    ray = _ray_if_initialized()
    if ray is None:
        return Role.STANDALONE
    node_id = ray.get_runtime_context().get_node_id()
    key = (os.getpid(), node_id)
    role = _role_cache.get(key)
    if role is not None:
        return role
    with _role_lock:
        role = _role_cache.get(key)
        if role is None:
            try:
                is_head = node_is_head(node_id)
            except Exception as exc:
                # Unsure means "do not copy": duplicate shipping is what this layer
                # prevents, and the files stay on disk. Not cached: the next manager
                # asks again.
                logger.warning(
                    "cannot tell whether Ray node %s is the head (%s); "
                    "treating it as a worker node",
                    node_id,
                    exc,
                )
                return Role.WORKER
            role = Role.HEAD if is_head else Role.WORKER
            _role_cache[key] = role
    return role


async def adetect_role() -> Role:
    """:func:`detect_role` that never blocks the loop: the lookup, when one is
    needed, runs in a worker thread."""
    role = cached_role()
    if role is not None:
        return role
    return await anyio.to_thread.run_sync(detect_role)


def node_is_head(node_id: str) -> bool:
    """True when the node carries the head resource. One GCS call for that one node
    (about 0.6 ms here) instead of ``ray.nodes()``, which grows with the cluster;
    falls back to ``ray.nodes()`` if Ray's private GCS client API moved."""
    try:
        resources = _node_resources_from_gcs(node_id)
    except (ImportError, AttributeError, TypeError):
        resources = None
    if resources is None:
        ray = import_ray()
        resources = {}
        for node in ray.nodes():
            if node.get("NodeID") == node_id:
                resources = node.get("Resources") or {}
                break
    return HEAD_RESOURCE in resources


def _node_resources_from_gcs(node_id: str) -> dict[str, float] | None:
    from ray._raylet import NodeID

    gcs = import_ray()._private.worker.global_worker.gcs_client
    # Generated protobuf code has no type stubs.
    pb: Any = importlib.import_module("ray.core.generated.gcs_service_pb2")
    request = pb.GetAllNodeInfoRequest
    selector = request.NodeSelector(node_id=NodeID.from_hex(node_id).binary())
    infos = list(gcs.get_all_node_info(timeout=_LOOKUP_TIMEOUT, node_selectors=[selector]).values())
    if not infos:
        return None
    return dict(infos[0].resources_total)


def _reset_role_cache() -> None:
    """For tests only."""
    with _role_lock:
        _role_cache.clear()


# ------------------------------------------------------------------ the gate


@dataclass(frozen=True, slots=True)
class CopyGate:
    """What a manager decided once, at construction: may it start copies?

    ``enabled`` is what ``lm.hdfs_copy_enabled`` and ``lm._ray_hdfs_enabled`` report.
    ``reason`` says why not (None when enabled)."""

    role: Role
    enabled: bool
    env_disabled: bool
    reason: str | None

    def skip_reason(self, scope: str = "cluster") -> str | None:
        """Why a start with this scope must be skipped, or None if it may run.
        ``scope="node"`` runs on worker nodes too (each node ships its own files)."""
        if self.env_disabled:
            return f"disabled by {ENV_DISABLE}"
        if self.role is Role.WORKER and str(scope) != "node":
            return "disabled in Ray cluster worker node"
        return None


def copy_gate(environ: Mapping[str, str] | None = None, role: Role | None = None) -> CopyGate:
    """Decide and log, once per manager: ``Ray head node detected: HDFS copy enabled``
    or ``Ray worker node detected: HDFS copy disabled`` (logger ``aiologship``).

    Blocks for at most one GCS lookup the first time in a process (see
    :func:`detect_role`); pass ``role`` from :func:`adetect_role` in async code."""
    env_disabled = copy_disabled_by_env(environ)
    if role is None:
        role = detect_role()
    enabled = not env_disabled and role is not Role.WORKER
    reason = None
    if env_disabled:
        reason = f"disabled by {ENV_DISABLE}"
    elif role is Role.WORKER:
        reason = "disabled in Ray cluster worker node"
    if role is Role.HEAD:
        if env_disabled:
            logger.info("Ray head node detected: HDFS copy disabled by %s", ENV_DISABLE)
        else:
            logger.info("Ray head node detected: HDFS copy enabled")
    elif role is Role.WORKER:
        logger.info("Ray worker node detected: HDFS copy disabled")
    elif env_disabled:
        logger.info("HDFS copy disabled by %s", ENV_DISABLE)
    return CopyGate(role=role, enabled=enabled, env_disabled=env_disabled, reason=reason)


def should_skip_copy(gate: CopyGate, copy_name: str, scope: str = "cluster") -> bool:
    """True when ``start_hdfs_copy(copy_name, scope=...)`` must return a ``skipped``
    handle; logs ``HDFS copy operation 'NAME' skipped: <reason>`` in that case."""
    reason = gate.skip_reason(scope)
    if reason is None:
        return False
    logger.info("HDFS copy operation '%s' skipped: %s", copy_name, reason)
    return True


# ------------------------------------------------------------------ host file lock


def lock_path(state_dir: Path, copy_name: str) -> Path:
    """One lock file per copy_name in the state dir (``_copy._statedir`` names
    every file there)."""
    return host_lock_path(state_dir, copy_name)


class HostLock:
    """``fcntl.flock`` on ``<state_dir>/locks/<copy_name>.lock``: one holder per host
    (and per state dir) at a time, across processes and across objects in one
    process. The kernel releases it when the holder dies, however it dies, so no
    stale-lock cleanup is needed.

    Not for NFS state dirs (flock there is local to each client)."""

    def __init__(self, state_dir: Path, copy_name: str) -> None:
        self.path = lock_path(state_dir, copy_name)
        self.copy_name = copy_name
        self._fd: int | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    def _open(self) -> int:
        if self._fd is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise ConfigError(
                    "state_dir",
                    str(self.path.parent.parent),
                    f"cannot create the lock file {self.path}: {exc.strerror or exc}",
                ) from exc
        return self._fd

    def try_acquire(self) -> bool:
        """Take the lock if it is free; never waits. May block on the first call
        (mkdir + open): async callers use :meth:`acquire`."""
        if self._held:
            return True
        fd = self._open()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise CopyError(f"cannot lock {self.path}: {exc.strerror}") from exc
        self._held = True
        # Who holds it, for a human reading the file; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{socket.gethostname()} {os.getpid()}\n".encode(), 0)
        return True

    def holder(self) -> str:
        """``"host pid"`` of the last process that took the lock ('' if unknown)."""
        try:
            return self.path.read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    async def acquire(
        self,
        *,
        poll_interval: float,
        timeout: float | None = None,
        cancel: anyio.Event | None = None,
    ) -> bool:
        """Poll until the lock is ours (True), ``timeout`` passes or ``cancel`` is set
        (False). The first attempt opens the file in a worker thread; polls after
        that are one non-blocking flock syscall each."""
        poll = min(max(poll_interval, MIN_LOCK_POLL), MAX_LOCK_POLL)
        if await anyio.to_thread.run_sync(self.try_acquire):
            return True
        with anyio.move_on_after(timeout):
            while cancel is None or not cancel.is_set():
                if cancel is None:
                    await anyio.sleep(poll)
                else:
                    with anyio.move_on_after(poll):
                        await cancel.wait()
                    if cancel.is_set():
                        break
                if self.try_acquire():
                    return True
        return False

    def release(self) -> None:
        """Give the lock up (idempotent); the file stays for the next holder."""
        fd, self._fd = self._fd, None
        self._held = False
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

    def __del__(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
