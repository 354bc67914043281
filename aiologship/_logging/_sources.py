"""Automatic fields: Ray ids and OpenTelemetry trace ids on every record.

Each source is a callable the context layer (``_context``) asks at every log
call, in the caller's thread and task; it returns ``(key, value)`` pairs of
strings, or ``()`` when it has nothing to say. A source never raises, never does
I/O and never imports what the application did not import: Ray and OpenTelemetry
are read through ``sys.modules`` (a process that has not imported Ray is no Ray
worker; one that has not imported ``opentelemetry.trace`` has no current span).

- :class:`RaySource`: ``ray_job_id``, ``ray_node_id`` (every Ray process),
  ``ray_actor_id`` (in an actor), ``ray_task_id`` (in a task or actor method).
- :class:`TraceSource`: ``trace_id`` (32 lower-case hex digits) and ``span_id``
  (16), when a valid span is current: the field names of OpenTelemetry's "Trace
  Context in non-OTLP Log Formats"
  (https://opentelemetry.io/docs/specs/otel/compatibility/logging_trace_context/).

Sources are process-wide. A ``LogManager`` *holds* the ones its config enables
(:func:`hold_sources`) from its start to its close; a source stays added while at
least one open manager holds it, so two managers with different switches give
every record the union of what the open ones enable.
"""

from __future__ import annotations

import os
import sys
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from .._config import ManagerConfig
from ._context import Pairs, Source, add_source, remove_source

__all__ = [
    "RAY_SOURCE",
    "TRACE_SOURCE",
    "RaySource",
    "SourceHold",
    "TraceSource",
    "hold_sources",
]

# A reused worker runs many tasks, and an async actor many concurrent ones: one
# entry per task id seen. Cleared when full rather than evicted one by one, so a
# hit costs one dict lookup.
_CACHE_LIMIT = 4096
_modules = sys.modules


class _RayState:
    """What one connection of this process to a Ray cluster answers once: the
    fields that cannot change while it lasts (job, node, actor), and how to read
    the current task id."""

    __slots__ = ("async_task_id", "core", "fixed", "tasks", "with_tasks")

    def __init__(
        self,
        core: Any,
        fixed: Pairs = (),
        with_tasks: bool = False,
        async_task_id: Any = None,
    ) -> None:
        self.core = core
        self.fixed = fixed
        self.with_tasks = with_tasks
        self.async_task_id = async_task_id
        self.tasks: dict[bytes, Pairs] = {}


_NO_STATE = _RayState(None)


class RaySource:
    """``ray_job_id``, ``ray_node_id``, ``ray_actor_id``, ``ray_task_id``: what
    ``ray.get_runtime_context()`` says in the calling thread and task.

    Cost: the job, node and actor ids are read once per connection to a cluster
    (they cannot change while a worker process lives; a driver that calls
    ``ray.shutdown()`` and ``ray.init()`` again gets a new core worker, which
    the cache is keyed on). The task id changes from task to task in a reused
    worker and between the concurrent calls of an async actor, so it is read at
    every call the way Ray reads it (``_get_current_task_id``: the
    ``async_task_id`` context variable of an async actor's asyncio task, else
    the core worker's current task) and its hex form is cached by its bytes.
    ``benchmarks/bench_sources.py`` measures both against reading the runtime
    context at each call.
    """

    __slots__ = ("_building", "_state", "_worker_dict")

    def __init__(self) -> None:
        self._worker_dict: dict[str, Any] | None = None
        self._state = _NO_STATE
        self._building = threading.local()

    def __call__(self) -> Pairs:
        try:
            worker_dict = self._worker_dict
            if worker_dict is None:
                # Not imported: not a Ray process (and never import Ray for it).
                if "ray" not in _modules:
                    return ()
                worker_dict = self._find_worker()
                if worker_dict is None:
                    return ()
            # ``ray.shutdown()`` deletes the core worker, ``ray.init()`` makes a
            # new one: no core worker, no fields; another one, read them again.
            core = worker_dict.get("core_worker")
            if core is None:
                return ()
            state = self._state
            if core is not state.core:
                state = self._connect(core)
            if not state.with_tasks:
                return state.fixed
            task_id = None
            var = state.async_task_id
            if var is not None:
                task_id = var.get()
            if task_id is None:
                task_id = core.get_current_task_id()
            key = task_id.binary()
            pairs = state.tasks.get(key)
            if pairs is None:
                pairs = self._task_pairs(state, task_id, key)
            return pairs
        except Exception:
            return ()

    def _find_worker(self) -> dict[str, Any] | None:
        worker_module = _modules.get("ray._private.worker")
        worker = getattr(worker_module, "global_worker", None)
        if worker is None:
            return None
        # The attribute dict itself: a missing ``core_worker`` is then a dict miss,
        # not an AttributeError raised and caught at every call of a process that
        # imported Ray without connecting.
        self._worker_dict = vars(worker)
        return self._worker_dict

    def _connect(self, core: Any) -> _RayState:
        building = self._building
        if getattr(building, "active", False):
            # Ray logged while we asked it: that record goes without Ray fields.
            return _RayState(core)
        building.active = True
        try:
            # ``ray.init`` makes the core worker before it is connected (and logs
            # meanwhile): nothing to read yet, ask again at the next call.
            if not _modules["ray"].is_initialized():
                return _RayState(core)
            try:
                state = _read_ray_state(core)
            except Exception:
                # Connected, yet Ray cannot say: no Ray fields for this connection,
                # rather than a failing Ray call on every log call.
                state = _RayState(core)
        finally:
            building.active = False
        self._state = state
        return state

    @staticmethod
    def _task_pairs(state: _RayState, task_id: Any, key: bytes) -> Pairs:
        pairs = state.fixed
        if not task_id.is_nil():
            pairs = (*pairs, ("ray_task_id", task_id.hex()))
        tasks = state.tasks
        if len(tasks) >= _CACHE_LIMIT:
            tasks.clear()
        tasks[key] = pairs
        return pairs

    def _after_fork_in_child(self) -> None:
        # A child forked by a Ray worker (multiprocessing in a task) inherits the
        # core worker object but is no Ray worker: no fields for it, and no call
        # into the parent's core worker. A core worker of its own (``ray.init`` in
        # the child) is read as usual.
        worker_dict = self._worker_dict
        core = None if worker_dict is None else worker_dict.get("core_worker")
        self._state = _RayState(core)
        self._building = threading.local()


def _read_ray_state(core: Any) -> _RayState:
    ray = _modules["ray"]
    worker_module = _modules["ray._private.worker"]
    context = ray.get_runtime_context()
    fixed: list[tuple[str, Any]] = [
        ("ray_job_id", context.get_job_id()),
        ("ray_node_id", context.get_node_id()),
    ]
    # A driver has neither an actor nor a task id (Ray warns if asked for one).
    in_worker = context.worker.mode == worker_module.WORKER_MODE
    if in_worker:
        actor_id = context.get_actor_id()
        if actor_id:
            fixed.append(("ray_actor_id", actor_id))
    raylet = _modules.get("ray._raylet")
    return _RayState(
        core,
        tuple(fixed),
        with_tasks=in_worker and callable(getattr(core, "get_current_task_id", None)),
        async_task_id=getattr(raylet, "async_task_id", None),
    )


class TraceSource:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, in the W3C
    form (lower-case hex, 32 and 16 digits), when one is current and valid.

    Read with the OpenTelemetry API, whose current context is a context variable:
    it follows the span into tasks and threads the way the span itself does.
    Cost: an OpenTelemetry ``Context`` is immutable (attaching a span makes a new
    one), so the answer is cached per context object: a call inside a span costs
    ``context.get_current()`` and a dict lookup, not ``get_current_span()`` and
    two hex formats. The cache holds weak references: it keeps no span alive.
    """

    __slots__ = ("_cache",)

    def __init__(self) -> None:
        self._cache: dict[int, tuple[weakref.ref[Any], Pairs]] = {}

    def __call__(self) -> Pairs:
        trace = _modules.get("opentelemetry.trace")
        if trace is None:
            return ()
        try:
            current = _modules["opentelemetry.context"].get_current()
            hit = self._cache.get(id(current))
            # A dead entry's id may belong to a new context now: the weak
            # reference then answers None (or another object), never ``current``.
            if hit is not None and hit[0]() is current:
                pairs: Pairs = hit[1]
                return pairs
            span_context = trace.get_current_span(current).get_span_context()
            if span_context.is_valid:
                pairs = (
                    ("trace_id", format(span_context.trace_id, "032x")),
                    ("span_id", format(span_context.span_id, "016x")),
                )
            else:
                pairs = ()
            cache = self._cache
            if len(cache) >= _CACHE_LIMIT:
                cache.clear()
            cache[id(current)] = (weakref.ref(current), pairs)
            return pairs
        except Exception:
            return ()


# The process-wide instances the managers hold (``add_source`` counts an object
# once, so every manager must name the same one).
RAY_SOURCE = RaySource()
TRACE_SOURCE = TraceSource()

os.register_at_fork(after_in_child=RAY_SOURCE._after_fork_in_child)


_hold_lock = threading.Lock()
_holders: dict[Source, int] = {}


class SourceHold:
    """The sources one manager holds; ``release()`` (idempotent) lets them go.
    A source is added at its first hold and removed at its last release."""

    __slots__ = ("_sources",)

    def __init__(self, sources: Iterable[Source]) -> None:
        self._sources: tuple[Source, ...] = ()
        held = []
        with _hold_lock:
            for source in sources:
                count = _holders.get(source, 0)
                if count == 0:
                    add_source(source)
                _holders[source] = count + 1
                held.append(source)
        self._sources = tuple(held)

    @property
    def sources(self) -> tuple[Source, ...]:
        return self._sources

    def release(self) -> None:
        with _hold_lock:
            sources, self._sources = self._sources, ()
            for source in sources:
                count = _holders.get(source, 0) - 1
                if count <= 0:
                    _holders.pop(source, None)
                    remove_source(source)
                else:
                    _holders[source] = count


def hold_sources(config: ManagerConfig) -> SourceHold:
    """Hold the automatic-field sources ``config`` enables (``ray_fields``,
    ``trace_fields``) until the returned hold is released."""
    wanted: list[Source] = []
    if config.ray_fields:
        wanted.append(RAY_SOURCE)
    if config.trace_fields:
        wanted.append(TRACE_SOURCE)
    return SourceHold(wanted)
