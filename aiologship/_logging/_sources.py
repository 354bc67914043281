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

Sources are process-wide. A ``LogManager`` *holds* the kinds its config enables
(:func:`hold_sources`) from its start to its close; a kind stays on while at
least one open manager holds it, so two managers with different switches give
every record the union of what the open ones enable. One source is added for
that union (both kinds: one function calling both), so a log call pays one
source call.
"""

from __future__ import annotations

import enum
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from .._config import ManagerConfig
from ._context import Pairs, Source, add_source, remove_source

__all__ = [
    "RAY_AND_TRACE_FIELDS",
    "RAY_FIELDS",
    "RAY_SOURCE",
    "TRACE_FIELDS",
    "TRACE_SOURCE",
    "Kind",
    "RaySource",
    "SourceHold",
    "TraceSource",
    "hold_sources",
    "installed",
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


def _dead() -> None:
    return None


class TraceSource:
    """``trace_id`` and ``span_id`` of the current OpenTelemetry span, in the W3C
    form (lower-case hex, 32 and 16 digits), when one is current and valid.

    Read with the OpenTelemetry API, whose current context is a context variable:
    it follows the span into tasks and threads the way the span itself does.
    Cost: an OpenTelemetry ``Context`` is immutable (attaching a span makes a new
    one), so the answer is cached per context object: a call reads the context
    variable and compares it with the last one seen (then a dict of the others),
    instead of ``get_current_span()`` and two hex formats. The cache holds weak
    references: it keeps no span alive.
    """

    __slots__ = ("_cache", "_get_current", "_last")

    def __init__(self) -> None:
        self._cache: dict[int, tuple[Callable[[], Any], Pairs]] = {}
        self._last: tuple[Callable[[], Any], Pairs] = (_dead, ())
        self._get_current: Callable[[], Any] | None = None

    def __call__(self) -> Pairs:
        trace = _modules.get("opentelemetry.trace")
        if trace is None:
            return ()
        try:
            get_current = self._get_current
            if get_current is None:
                get_current = self._get_current = _otel_get_current()
            current = get_current()
            # A dead entry's id may belong to a new context now: the weak
            # reference then answers None (or another object), never ``current``.
            last = self._last
            if last[0]() is current:
                return last[1]
            hit = self._cache.get(id(current))
            if hit is None or hit[0]() is not current:
                hit = self._read(trace, current)
            self._last = hit
            return hit[1]
        except Exception:
            return ()

    def _read(self, trace: Any, current: Any) -> tuple[Callable[[], Any], Pairs]:
        span_context = trace.get_current_span(current).get_span_context()
        pairs: Pairs = ()
        if span_context.is_valid:
            pairs = (
                ("trace_id", format(span_context.trace_id, "032x")),
                ("span_id", format(span_context.span_id, "016x")),
            )
        entry = (weakref.ref(current), pairs)
        cache = self._cache
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        cache[id(current)] = entry
        return entry


def _otel_get_current() -> Callable[[], Any]:
    """``opentelemetry.context.get_current``, or the ``ContextVar.get`` it ends in
    when the runtime context is the default contextvars one (a third of the cost
    of the public call, which goes through two Python frames to get there)."""
    module = _modules["opentelemetry.context"]
    runtime = getattr(module, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if isinstance(var, ContextVar) and type(runtime).__name__ == "ContextVarsRuntimeContext":
        get: Callable[[], Any] = var.get
        return get
    public: Callable[[], Any] = module.get_current
    return public


# The process-wide instances. What is added to the context layer is a bound
# ``__call__`` (made once here, so every hold names the same object): a call
# through a bound method skips the instance-call slot, ~30-80 ns.
RAY_SOURCE = RaySource()
TRACE_SOURCE = TraceSource()
RAY_FIELDS: Source = RAY_SOURCE.__call__
TRACE_FIELDS: Source = TRACE_SOURCE.__call__

os.register_at_fork(after_in_child=RAY_SOURCE._after_fork_in_child)


_joined: dict[tuple[int, int], tuple[Pairs, Pairs, Pairs]] = {}


def _ray_and_trace_fields() -> Pairs:
    """Both sources as one: the context layer calls one source per log call, and
    a process that imported neither Ray nor OpenTelemetry (most of them) pays two
    ``in`` tests here, not two calls."""
    ray = RAY_FIELDS() if "ray" in _modules else ()
    if "opentelemetry.trace" not in _modules:
        return ray
    trace = TRACE_FIELDS()
    if not ray:
        return trace
    if not trace:
        return ray
    # Both answer with cached tuples; join each combination once, so that the same
    # task in the same span gets the same tuple back (the context layer checks a
    # source's pairs again only when they are another tuple than last time).
    key = (id(ray), id(trace))
    hit = _joined.get(key)
    if hit is not None and hit[0] is ray and hit[1] is trace:
        return hit[2]
    joined = ray + trace
    if len(_joined) >= _CACHE_LIMIT:
        _joined.clear()
    _joined[key] = (ray, trace, joined)
    return joined


RAY_AND_TRACE_FIELDS: Source = _ray_and_trace_fields


class Kind(enum.Enum):
    """A switch of the config: which automatic fields a manager wants."""

    RAY = "ray_fields"
    TRACE = "trace_fields"


# The one source added for each set of kinds some open manager wants.
_SOURCE_FOR: dict[frozenset[Kind], Source] = {
    frozenset({Kind.RAY}): RAY_FIELDS,
    frozenset({Kind.TRACE}): TRACE_FIELDS,
    frozenset({Kind.RAY, Kind.TRACE}): RAY_AND_TRACE_FIELDS,
}
_hold_lock = threading.Lock()
_holders: dict[Kind, int] = {}
_added: Source | None = None


def _new_lock_after_fork() -> None:
    # A fork while another thread opened or closed a manager would leave the
    # child's copy of the lock held forever.
    global _hold_lock
    _hold_lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def installed() -> Source | None:
    """The automatic-field source added now (``None``: no open manager wants any)."""
    return _added


def _sync() -> None:
    # The new source is added before the old one goes: a log call in between sees
    # both (the same fields twice, the later wins) rather than neither.
    global _added
    wanted = frozenset(kind for kind, count in _holders.items() if count > 0)
    source = _SOURCE_FOR.get(wanted)
    old = _added
    if source is old:
        return
    if source is not None:
        add_source(source, checked=True)
    if old is not None:
        remove_source(old)
    _added = source


class SourceHold:
    """The kinds of automatic fields one manager wants, from its start to
    ``release()`` (idempotent). The source added is the one for the union of the
    kinds every unreleased hold wants."""

    __slots__ = ("_kinds",)

    def __init__(self, kinds: Iterable[Kind]) -> None:
        self._kinds: tuple[Kind, ...] = tuple(dict.fromkeys(kinds))
        with _hold_lock:
            for kind in self._kinds:
                _holders[kind] = _holders.get(kind, 0) + 1
            _sync()

    @property
    def kinds(self) -> tuple[Kind, ...]:
        return self._kinds

    def release(self) -> None:
        with _hold_lock:
            kinds, self._kinds = self._kinds, ()
            for kind in kinds:
                _holders[kind] -= 1
            _sync()


def hold_sources(config: ManagerConfig) -> SourceHold:
    """Hold the automatic fields ``config`` enables (``ray_fields``,
    ``trace_fields``) until the returned hold is released."""
    return SourceHold(kind for kind in Kind if getattr(config, kind.value))
