"""The Ray copier: one detached, named, async actor per ``copy_name`` (and per node
for ``scope="node"``), pinned to its node, restarted when it dies.

Why an actor and not head-only gating: every process on the head node would still
start its own copy. A named actor created with ``get_if_exists=True`` is created
once however many tasks race to create it, outlives the task that created it
(``lifetime="detached"``), and Ray restarts it (``max_restarts=-1``) on the same
node (hard ``NodeAffinitySchedulingStrategy``); the restarted engine reopens its
manifest, so nothing is lost or shipped twice.

Inside the actor the engine runs under a :class:`HostCopier` (host file lock), so
a plain process on the same host sharing the state dir never copies alongside it.

Layer rule: imports ``_coordination``, ``_host_copier``, ``_config``,
``_exceptions`` and the state dir's names (``_copy._statedir``). Ray is imported
inside functions only, so this module (and the manager) imports without it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio

from .._config import HdfsDriver, default_state_dir
from .._copy._statedir import node_state_dir
from .._exceptions import AiologshipError, CopyConflictError, CopyError
from .._metrics import copy_samples, push_interval, reporter
from ._coordination import HEAD_RESOURCE, HostLock, current_node_id, import_ray
from ._host_copier import (
    DEFAULT_ENGINE_FACTORY,
    DEFAULT_START_TIMEOUT,
    EngineFactory,
    HostCopier,
    HostState,
    placeholder_status,
    poll_interval_for,
)

logger = logging.getLogger("aiologship")

NAMESPACE = "aiologship"
ACTOR_PREFIX = "copy:"
_NODE_SEP = "@"
DEFAULT_CALL_TIMEOUT = 60.0
# On a manager's close(), its Ray copier gets one cycle for what this process
# wrote, then is left running for the cluster (it outlives the task that started it).
RELEASE_FLUSH_TIMEOUT = 60.0
# Pause between calls to an actor Ray is restarting.
_RETRY_PAUSE = 0.2


# ------------------------------------------------------------------ names


def actor_name(copy_name: str, node_id: str | None = None) -> str:
    """``copy:NAME`` (cluster scope) or ``copy:NAME@NODEID`` (scope="node")."""
    name = ACTOR_PREFIX + copy_name
    return name if node_id is None else f"{name}{_NODE_SEP}{node_id}"


def split_actor_name(name: str) -> tuple[str, str | None] | None:
    """Inverse of :func:`actor_name`; None for names that are not copiers."""
    if not name.startswith(ACTOR_PREFIX):
        return None
    rest = name[len(ACTOR_PREFIX) :]
    head, sep, tail = rest.rpartition(_NODE_SEP)
    # Ray node ids are 56 hex digits; a copy_name may itself contain '@'.
    if sep and len(tail) == 56 and all(c in "0123456789abcdef" for c in tail):
        return head, tail
    return rest, None


def node_destination(uri: str, node_id: str) -> str:
    """``<destination>/<node_id>``, keeping any scheme, authority and query."""
    parts = urlsplit(uri)
    if parts.scheme and len(parts.scheme) > 1:
        path = parts.path.rstrip("/") + "/" + node_id
        return urlunsplit(parts._replace(path=path))
    # A plain local path (or a Windows drive letter, which urlsplit mistakes for a scheme).
    return uri.rstrip("/") + "/" + node_id


# ------------------------------------------------------------------ errors


def portable_error(exc: BaseException) -> AiologshipError:
    """What the actor sends back for a failed start: our own errors as they are
    (they pickle with their data), anything else as a ``CopyError`` naming it (a
    foreign exception may not unpickle in the caller)."""
    if isinstance(exc, AiologshipError):
        return exc
    return CopyError(f"{type(exc).__name__}: {exc}")


# ------------------------------------------------------------------ the actor


class CopierActor:
    """Body of the Ray actor (wrapped by :func:`_actor_class`). Its loop only
    awaits: the engine does pyarrow and disk work in worker threads."""

    async def __init__(  # type: ignore[misc]  # Ray runs async __init__ on the actor loop
        self,
        copy_name: str,
        params: dict[str, Any],
        node_id: str,
        scope: str,
        state_dir: str | None,
        hdfs_driver: str,
        factory: EngineFactory,
    ) -> None:
        ray = import_ray()
        self._copy_name = copy_name
        self._node_id = node_id
        self._scope = scope
        self._factory = factory
        base = Path(state_dir) if state_dir else default_state_dir()
        self._state_dir = node_state_dir(base, node_id) if scope == "node" else base
        self._spec = factory.spec(params)
        engine = factory.engine(self._spec, self._state_dir, HdfsDriver(hdfs_driver))
        self._copier = HostCopier(
            copy_name,
            engine,
            HostLock(self._state_dir, copy_name),
            poll_interval=poll_interval_for(self._spec.copy_interval),
        )
        actor_id = ray.get_runtime_context().get_actor_id()
        # A GCS lookup: off the loop. (runtime_context.was_current_actor_reconstructed
        # does the same lookup on the loop and warns about its own deprecated call.)
        self._restarts = await anyio.to_thread.run_sync(_restart_count, actor_id)
        self._restarted = self._restarts > 0
        if self._restarted:
            logger.warning(
                "HDFS copy '%s': copier actor restarted on node %s; resuming from its manifest",
                copy_name,
                node_id,
            )
        # Runs for the actor's whole life: the actor *is* the running copy, so a
        # restarted actor resumes without anyone calling start() again.
        self._task = asyncio.get_running_loop().create_task(self._copier.run())
        self._metrics_task = asyncio.get_running_loop().create_task(self._push_metrics())

    async def _push_metrics(self) -> None:
        """This copy's figures to Ray's metrics agent, for the actor's whole life."""
        while True:
            self._push_once()
            await asyncio.sleep(push_interval())

    def _push_once(self) -> None:
        try:
            reporter.push(copy_samples([self._copier.status()]))
        except Exception:  # a metric must never stop the copy
            logger.debug("pushing metrics to Ray failed", exc_info=True)

    async def start(self, params: dict[str, Any], timeout: float) -> dict[str, Any]:
        """Idempotent start: same parameters -> the running copy's state; other
        parameters -> a conflict; an engine that cannot open -> its error."""
        try:
            wanted = self._factory.spec(params)
            differences = self._spec.differences(wanted)
            if differences:
                raise CopyConflictError(self._copy_name, differences)
            state = await self._copier.wait_started(timeout)
        except Exception as exc:
            return {
                "ok": False,
                "error": portable_error(exc),
                "open_failed": self._copier.state is HostState.FAILED,
            }
        return {"ok": True, "state": str(state), "restarted": self._restarted}

    async def flush(self) -> Any:
        try:
            return await self._copier.flush()
        finally:
            self._push_once()  # what a caller waited for shows without waiting 5 s

    async def stop(self) -> Any:
        """Final cycle, then stop; the caller kills the actor afterwards."""
        try:
            return await self._copier.stop()
        finally:
            self._push_once()

    async def status(self) -> Any:
        return self._copier.status()

    async def info(self) -> dict[str, Any]:
        return {
            "copy_name": self._copy_name,
            "node_id": self._node_id,
            "scope": self._scope,
            "pid": os.getpid(),
            "state": str(self._copier.state),
            "restarted": self._restarted,
            "restarts": self._restarts,
            "state_dir": str(self._state_dir),
        }


def _restart_count(actor_id: str) -> int:
    try:
        from ray._private.state import actors

        info = actors(actor_id=actor_id)
        return int(info.get("NumRestarts", 0)) if info else 0
    except Exception as exc:  # private API moved: a restart just goes unreported
        logger.debug("cannot read the restart count of actor %s: %s", actor_id, exc)
        return 0


_actor_cls: Any = None


def _actor_class() -> Any:
    global _actor_cls
    if _actor_cls is None:
        ray = import_ray()
        # num_cpus=0: a copier mostly waits on I/O and must never be starved of a
        # CPU slot by the user's tasks (nor take one from them).
        _actor_cls = ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=0)(CopierActor)
    return _actor_cls


# ------------------------------------------------------------------ the caller side


def _actor_exists(name: str) -> bool:
    try:
        import_ray().get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


class RayCopier:
    """The caller's handle on a copier actor. Not tied to the caller's life: when
    the calling task or manager ends, the copy keeps running (a detached actor:
    the logs of a finished task are shipped too)."""

    kind = "ray"

    def __init__(self, handle: Any, name: str, copy_name: str, node_id: str) -> None:
        self.handle = handle
        self.actor_name = name
        self.copy_name = copy_name
        self.node_id = node_id

    async def _call(self, method: str, *args: Any, timeout: float | None) -> Any:
        """Await a method, retrying while Ray restarts the actor, within ``timeout``.

        A call in flight when the actor dies fails with ``ActorDiedError`` even when
        Ray is about to restart it, so the error alone does not say "gone for good":
        the name does (it is released only when the actor will not come back)."""
        ray = import_ray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(deadline - time.monotonic(), 0.0)
            try:
                with anyio.fail_after(left):
                    return await getattr(self.handle, method).remote(*args)
            except ray.exceptions.RayActorError as exc:
                if deadline is not None and time.monotonic() + _RETRY_PAUSE >= deadline:
                    raise CopyError(f"copier actor {self.actor_name!r} unavailable: {exc}") from exc
                if not await anyio.to_thread.run_sync(_actor_exists, self.actor_name):
                    raise CopyError(f"copier actor {self.actor_name!r} is gone: {exc}") from exc
                await anyio.sleep(_RETRY_PAUSE)

    async def flush(self, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Any:
        return await self._call("flush", timeout=timeout)

    async def status(self, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Any:
        return await self._call("status", timeout=timeout)

    async def info(self, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> dict[str, Any]:
        info: dict[str, Any] = await self._call("info", timeout=timeout)
        return info

    async def stop(self, timeout: float | None = DEFAULT_CALL_TIMEOUT) -> Any:
        """Final cycle, then kill the actor for good; returns the final status."""
        ray = import_ray()
        final = await self._call("stop", timeout=timeout)
        ray.kill(self.handle, no_restart=True)
        return final

    async def release(self) -> None:
        """What a closing manager calls: nothing; the copier outlives it."""


def _get_or_create(
    name: str,
    copy_name: str,
    params: dict[str, Any],
    node_id: str,
    scope: str,
    state_dir: str | None,
    hdfs_driver: str,
    factory: EngineFactory,
) -> Any:
    """Blocking (GCS round trips): run in a worker thread."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    options = {
        "name": name,
        "namespace": NAMESPACE,
        "get_if_exists": True,
        "lifetime": "detached",
        # Hard affinity: the copier must see its node's disk, also after a restart.
        "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
    }
    cls = _actor_class()
    last: Exception | None = None
    # Ray's get_if_exists already falls back to get_actor when it loses the
    # creation race; the retry covers the window where the winner's name is
    # registered but not yet resolvable.
    for _ in range(20):
        try:
            return cls.options(**options).remote(
                copy_name, params, node_id, scope, state_dir, hdfs_driver, factory
            )
        except ValueError as exc:
            last = exc
            time.sleep(0.05)
    raise CopyError(f"cannot create or find copier actor {name!r}: {last}")


def _head_node_id() -> str:
    ray = import_ray()
    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in (node.get("Resources") or {}):
            node_id: str = node["NodeID"]
            return node_id
    raise CopyError("no alive Ray head node found for the copier actor")


async def start_ray_copier(
    params: Mapping[str, Any],
    *,
    state_dir: Path | None = None,
    hdfs_driver: HdfsDriver = HdfsDriver.AUTO,
    factory: EngineFactory = DEFAULT_ENGINE_FACTORY,
    timeout: float | None = DEFAULT_START_TIMEOUT,
) -> RayCopier:
    """Get or create the copier actor for ``params["copy_name"]`` and wait until its
    engine is open (or standing by). ``scope="node"``: one actor per node, pinned to
    this process's node, shipping under ``<destination>/<node_id>/``; otherwise one
    actor on the head node. Raises ConfigError / DestinationError /
    CopyConflictError / CopyError, as a local start would."""
    params = dict(params)
    copy_name = str(params["copy_name"])
    scope = str(params.get("scope", "cluster"))
    if scope == "node":
        node_id = current_node_id()
        if node_id is None:
            raise CopyError("scope='node' copies through Ray need Ray to be initialized")
        params["hdfs_destination"] = node_destination(str(params["hdfs_destination"]), node_id)
        name = actor_name(copy_name, node_id)
    else:
        node_id = await anyio.to_thread.run_sync(_head_node_id)
        name = actor_name(copy_name)
    if node_id is not None and params.get("node_id") is None:
        params["node_id"] = node_id  # the destination template's {node_id}
    # Validate here so a bad parameter fails in the caller without creating an actor.
    # In a thread: the first call imports the copy engine (pyarrow), which stalled
    # the caller's loop by ~25 ms when done on it (measured in an async actor).
    await anyio.to_thread.run_sync(factory.spec, params)
    with anyio.fail_after(timeout):
        handle = await anyio.to_thread.run_sync(
            _get_or_create,
            name,
            copy_name,
            params,
            node_id,
            scope,
            None if state_dir is None else str(state_dir),
            str(hdfs_driver),
            factory,
        )
        copier = RayCopier(handle, name, copy_name, node_id)
        reply = await copier._call("start", params, timeout, timeout=timeout)
    if not reply["ok"]:
        if reply.get("open_failed"):
            # Free the name, so a corrected call can create a fresh copier.
            ray = import_ray()
            ray.kill(handle, no_restart=True)
        error: AiologshipError = reply["error"]
        raise error
    return copier


# ------------------------------------------------------------------ cluster-wide views


@dataclass(frozen=True, slots=True)
class CopierRef:
    """A copier actor found in the cluster."""

    actor_name: str
    copy_name: str
    node_id: str | None  # from the name (scope="node"); None for cluster scope


def find_copiers(copy_name: str | None = None) -> list[CopierRef]:
    """Named copier actors in namespace ``aiologship``, started from any node."""
    ray = import_ray()
    found = []
    for entry in ray.util.list_named_actors(all_namespaces=True):
        if entry["namespace"] != NAMESPACE:
            continue
        parsed = split_actor_name(entry["name"])
        if parsed is None or (copy_name is not None and parsed[0] != copy_name):
            continue
        found.append(CopierRef(entry["name"], parsed[0], parsed[1]))
    return sorted(found, key=lambda ref: ref.actor_name)


def _handles(refs: list[CopierRef]) -> list[tuple[CopierRef, Any]]:
    ray = import_ray()
    out = []
    for ref in refs:
        try:
            out.append((ref, ray.get_actor(ref.actor_name, namespace=NAMESPACE)))
        except ValueError:  # killed between the listing and now
            continue
    return out


def _gather(method: str, refs: list[CopierRef], timeout: float) -> list[tuple[CopierRef, Any]]:
    """Call ``method`` on every copier at once; drop the ones that do not answer in
    time (restarting, or gone) with a warning rather than fail the whole listing."""
    ray = import_ray()
    pairs = _handles(refs)
    if not pairs:
        return []
    pending = [(ref, getattr(handle, method).remote()) for ref, handle in pairs]
    ready, _ = ray.wait([obj for _, obj in pending], num_returns=len(pending), timeout=timeout)
    ready_set = set(ready)
    results = []
    for ref, obj in pending:
        if obj not in ready_set:
            logger.warning(
                "copier %r did not answer %s() within %.0f s", ref.actor_name, method, timeout
            )
            continue
        try:
            results.append((ref, ray.get(obj)))
        except ray.exceptions.RayError as exc:
            logger.warning("copier %r unavailable: %s", ref.actor_name, exc)
    return results


def list_copies(timeout: float = 10.0) -> list[Any]:
    """``CopyStatus`` of every copier actor in the cluster (any node)."""
    return [status for _, status in _gather("status", find_copiers(), timeout)]


def copier_infos(timeout: float = 10.0) -> list[dict[str, Any]]:
    """``info()`` of every copier actor: copy name, node id, pid, scope, state."""
    return [
        dict(info, actor_name=ref.actor_name)
        for ref, info in _gather("info", find_copiers(), timeout)
    ]


def stop_copy(copy_name: str, timeout: float = DEFAULT_CALL_TIMEOUT) -> list[Any]:
    """Final cycle, then kill, for the copier(s) of ``copy_name`` (one per node for
    scope="node"). Returns their final statuses; raises CopyError if none exists."""
    ray = import_ray()
    refs = find_copiers(copy_name)
    if not refs:
        raise CopyError(f"no copy operation named {copy_name!r} runs in the Ray cluster")
    finals = [final for _, final in _gather("stop", refs, timeout)]
    # Kill every one, also those that did not answer in time: a stop must stop.
    for _, handle in _handles(refs):
        ray.kill(handle, no_restart=True)
    return finals


# ------------------------------------------------------------------ manager backend


def _in_event_loop() -> bool:
    return asyncio._get_running_loop() is not None


class RayBackend:
    """Manager backend in Ray (``aiologship._copiers.Backend`` protocol): the copy
    runs in the copier actor; this object only talks to it.

    ``stop()`` is the explicit ``stop_hdfs_copy``: final cycle, then the actor is
    killed. A manager that merely closes must call :meth:`release` instead, so the
    copier outlives the task that started it (a Ray task's logs are still being
    shipped after the task returns)."""

    def __init__(
        self,
        spec: Any,
        *,
        state_dir: Path | None,
        hdfs_driver: HdfsDriver = HdfsDriver.AUTO,
        factory: EngineFactory = DEFAULT_ENGINE_FACTORY,
        status_timeout: float = 5.0,
    ) -> None:
        self.spec = spec
        self._state_dir = state_dir
        self._driver = hdfs_driver
        self._factory = factory
        self._status_timeout = status_timeout
        self._copier: RayCopier | None = None
        self._last: Any = None
        self._error: str | None = None

    @property
    def copier(self) -> RayCopier | None:
        return self._copier

    async def start(self, timeout: float | None = DEFAULT_START_TIMEOUT) -> None:
        params = self.spec.as_params()
        try:
            self._copier = await start_ray_copier(
                params,
                state_dir=self._state_dir,
                hdfs_driver=self._driver,
                factory=self._factory,
                timeout=timeout,
            )
        except Exception as exc:
            self._error = str(exc)
            raise
        self._last = await self._copier.status()

    async def flush(self) -> Any:
        copier = self._require()
        result = await copier.flush()
        self._last = await copier.status()
        return result

    async def stop(self) -> None:
        if self._copier is not None:
            self._last = await self._copier.stop()
            self._copier = None

    async def close(self) -> None:
        """The manager closes: one bounded cycle for what this process wrote, then
        :meth:`release`; the copier keeps running for the cluster."""
        if self._copier is None:
            return
        with anyio.move_on_after(RELEASE_FLUSH_TIMEOUT):
            try:
                await self.flush()
            except Exception as exc:
                logger.warning("copy %r: flush before release failed: %s", self.spec.copy_name, exc)
        await self.release()

    async def release(self) -> None:
        """Forget the actor; it keeps copying."""
        self._copier = None

    @property
    def skipped(self) -> bool:
        return False

    def _require(self) -> RayCopier:
        if self._copier is None:
            raise CopyError(
                f"copy operation {self.spec.copy_name!r} is not running here"
                + (f": {self._error}" if self._error else "")
            )
        return self._copier

    def status(self) -> Any:
        """Fresh from the actor when called outside an event loop (one round trip,
        bounded); on a loop, the last status seen, so a loop never blocks."""
        if self._copier is not None and not _in_event_loop():
            ray = import_ray()
            try:
                self._last = ray.get(
                    self._copier.handle.status.remote(), timeout=self._status_timeout
                )
            except ray.exceptions.RayError as exc:
                logger.warning("copier %r status unavailable: %s", self._copier.actor_name, exc)
        if self._last is not None:
            return self._last
        return placeholder_status(self.spec, "failed" if self._error else "new", self._error)
