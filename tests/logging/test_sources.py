"""Automatic fields: the OpenTelemetry trace source (with the real SDK and an
in-memory exporter), the Ray source's caching rules (a fake Ray in one unit test
of this layer; the real thing runs in ``tests/ray/test_context_ray.py``), the
config switches and what a manager holds."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import re
import sys
import threading
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext

from aiologship import ConfigError, LogManager
from aiologship._config import load_config
from aiologship._logging import _sources as sources
from aiologship._logging._context import source_pairs
from aiologship._logging._sources import (
    RAY_AND_TRACE_FIELDS,
    RAY_FIELDS,
    RAY_SOURCE,
    TRACE_FIELDS,
    TRACE_SOURCE,
    Kind,
    RaySource,
    SourceHold,
    TraceSource,
)
from tests.conftest import read_lines

HEX32 = re.compile(r"[0-9a-f]{32}")
HEX16 = re.compile(r"[0-9a-f]{16}")


@pytest.fixture
def tracer() -> Iterator[tuple[trace.Tracer, InMemorySpanExporter]]:
    # A provider of the test's own: the global one can be set once per process.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider.get_tracer("aiologship-tests"), exporter
    provider.shutdown()


def ids_of(span: Any) -> tuple[tuple[str, str], ...]:
    context = span.get_span_context()
    return (("trace_id", f"{context.trace_id:032x}"), ("span_id", f"{context.span_id:016x}"))


# ------------------------------------------------------------------ trace source


def test_no_span_no_fields(tracer: Any) -> None:
    source = TraceSource()
    assert source() == ()
    with tracer[0].start_as_current_span("s"):
        pass
    assert source() == ()


def test_opentelemetry_not_imported_no_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    # What a process that never imported OpenTelemetry sees: the source does not
    # import it (a span cannot be current there anyway).
    monkeypatch.delitem(sys.modules, "opentelemetry.trace")
    assert TraceSource()() == ()
    assert "opentelemetry.trace" not in sys.modules


def test_span_ids_in_w3c_form_and_nested_spans(tracer: Any) -> None:
    source = TraceSource()
    t, exporter = tracer
    with t.start_as_current_span("outer") as outer:
        first = source()
        with t.start_as_current_span("inner") as inner:
            in_inner = source()
        back = source()
    assert first == back == ids_of(outer)
    assert in_inner == ids_of(inner)
    assert in_inner[0] == first[0] and in_inner[1] != first[1]  # same trace, own span
    for (_, trace_id), (_, span_id) in (first, in_inner):
        assert HEX32.fullmatch(trace_id) and HEX16.fullmatch(span_id)
    # The ids are those the exporter received.
    exported = {s.name: s.context for s in exporter.get_finished_spans()}
    assert first[1][1] == f"{exported['outer'].span_id:016x}"
    assert in_inner[1][1] == f"{exported['inner'].span_id:016x}"
    assert first[0][1] == f"{exported['outer'].trace_id:032x}"


async def test_concurrent_tasks_each_see_their_span(tracer: Any) -> None:
    source = TraceSource()
    t = tracer[0]
    seen: dict[int, list[Any]] = {}
    expected: dict[int, Any] = {}
    barrier = asyncio.Barrier(20)

    async def work(i: int) -> None:
        with t.start_as_current_span(f"task-{i}") as span:
            expected[i] = ids_of(span)
            seen[i] = [source()]
            await asyncio.wait_for(barrier.wait(), timeout=30)  # every task is inside
            seen[i].append(source())
            seen[i].append(await asyncio.to_thread(source))  # a thread hand-off
            child = asyncio.create_task(asyncio.sleep(0, result=None))
            await child
            seen[i].append(source())

    await asyncio.gather(*(work(i) for i in range(20)))
    assert source() == ()
    for i in range(20):
        assert seen[i] == [expected[i]] * 4
    assert len({v[0][1] for v in expected.values()}) == 20


@given(
    trace_id=st.integers(min_value=0, max_value=2**128 - 1),
    span_id=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_any_span_context(trace_id: int, span_id: int) -> None:
    """Valid ids come out as 32 and 16 lower-case hex digits; an all-zero id is no
    valid span and gives no fields; leaving the span leaves nothing behind."""
    source = TRACE_SOURCE  # the shared instance: its cache sees every example
    span = NonRecordingSpan(SpanContext(trace_id, span_id, is_remote=False))
    with trace.use_span(span):
        got = source()
    if trace_id and span_id:
        assert got == (("trace_id", f"{trace_id:032x}"), ("span_id", f"{span_id:016x}"))
    else:
        assert got == ()
    assert source() == ()


def test_the_cache_keeps_no_context_alive(tracer: Any) -> None:
    source = TraceSource()
    with tracer[0].start_as_current_span("s"):
        current = otel_context.get_current()
        assert source() != ()
        ref = weakref.ref(current)
        del current
    gc.collect()
    assert ref() is None


def test_a_broken_span_gives_no_fields_and_no_error() -> None:
    class Broken(NonRecordingSpan):
        def get_span_context(self) -> SpanContext:
            raise RuntimeError("broken instrumentation")

    with trace.use_span(Broken(SpanContext(1, 1, is_remote=False))):
        assert TraceSource()() == ()


# -------------------------------------------------------------------- ray source


class FakeTaskID:
    def __init__(self, hex_id: str) -> None:
        self._hex = hex_id

    def binary(self) -> bytes:
        return bytes.fromhex(self._hex)

    def hex(self) -> str:
        return self._hex

    def is_nil(self) -> bool:
        return set(self._hex) == {"f"}


class FakeRay:
    """The parts of Ray the source reads, as modules in ``sys.modules``."""

    WORKER_MODE, SCRIPT_MODE = 1, 0

    def __init__(self, monkeypatch: pytest.MonkeyPatch, mode: int = 1) -> None:
        self.calls: dict[str, int] = {}
        self.job = "01000000"
        self.actor: str | None = None
        self.task = FakeTaskID("aa" * 24)
        self.fail_context = False
        self.initialized = True
        self.on_context: Callable[[], None] | None = None
        self.async_task_id: contextvars.ContextVar[Any] = contextvars.ContextVar(
            "async_task_id", default=None
        )
        self.worker = SimpleNamespace(mode=mode)
        fake = self

        class Core:
            def get_current_task_id(self) -> FakeTaskID:
                fake._count("get_current_task_id")
                return fake.task

        self.Core = Core
        ray = ModuleType("ray")
        ray.get_runtime_context = self._runtime_context  # type: ignore[attr-defined]
        ray.is_initialized = lambda: self.initialized  # type: ignore[attr-defined]
        worker_module = ModuleType("ray._private.worker")
        worker_module.global_worker = self.worker  # type: ignore[attr-defined]
        worker_module.WORKER_MODE = self.WORKER_MODE  # type: ignore[attr-defined]
        raylet = ModuleType("ray._raylet")
        raylet.async_task_id = self.async_task_id  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "ray", ray)
        monkeypatch.setitem(sys.modules, "ray._private.worker", worker_module)
        monkeypatch.setitem(sys.modules, "ray._raylet", raylet)

    def _count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def connect(self) -> None:
        self.worker.core_worker = self.Core()

    def shutdown(self) -> None:
        del self.worker.core_worker

    def _runtime_context(self) -> Any:
        self._count("get_runtime_context")
        if self.on_context is not None:
            self.on_context()
        if self.fail_context:
            raise RuntimeError("Ray has not been initialized")
        return SimpleNamespace(
            worker=self.worker,
            get_job_id=lambda: self.job,
            get_node_id=lambda: "n" * 56,
            get_actor_id=lambda: self.actor,
        )


def test_ray_not_imported_or_not_connected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "ray", raising=False)
    source = RaySource()
    assert source() == ()
    fake = FakeRay(monkeypatch)
    assert source() == ()  # imported, no core worker: ray.init not called
    assert fake.calls == {}


def test_ray_ids_read_once_per_connection_task_id_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeRay(monkeypatch)
    fake.connect()
    source = RaySource()
    fixed = (("ray_job_id", "01000000"), ("ray_node_id", "n" * 56))
    assert source() == (*fixed, ("ray_task_id", "aa" * 24))
    assert source() == (*fixed, ("ray_task_id", "aa" * 24))
    fake.task = FakeTaskID("bb" * 24)  # the next task in the same worker
    assert source() == (*fixed, ("ray_task_id", "bb" * 24))
    assert fake.calls == {"get_runtime_context": 1, "get_current_task_id": 3}
    fake.task = FakeTaskID("ff" * 24)  # nil: no task (a thread of the worker)
    assert source() == fixed

    # An async actor's call: its task id is the context variable's, per asyncio task.
    token = fake.async_task_id.set(FakeTaskID("cc" * 24))
    assert source() == (*fixed, ("ray_task_id", "cc" * 24))
    fake.async_task_id.reset(token)

    # A new connection (shutdown + init, another job): read again.
    fake.shutdown()
    assert source() == ()
    fake.job = "02000000"
    fake.actor = "ac" * 16
    fake.connect()
    fake.task = FakeTaskID("dd" * 24)
    assert source() == (
        ("ray_job_id", "02000000"),
        ("ray_node_id", "n" * 56),
        ("ray_actor_id", "ac" * 16),
        ("ray_task_id", "dd" * 24),
    )
    assert fake.calls["get_runtime_context"] == 2


def test_ray_driver_has_no_task_or_actor_id(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay(monkeypatch, mode=FakeRay.SCRIPT_MODE)
    fake.connect()
    source = RaySource()
    assert source() == (("ray_job_id", "01000000"), ("ray_node_id", "n" * 56))
    assert source() == (("ray_job_id", "01000000"), ("ray_node_id", "n" * 56))
    # Ray warns when a driver asks for a task id: never asked.
    assert "get_current_task_id" not in fake.calls


def test_ray_not_ready_is_retried_and_reentry_gives_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeRay(monkeypatch)
    fake.connect()
    source = RaySource()
    fake.initialized = False  # core worker made, ray.init not finished
    assert source() == ()
    assert source() == ()
    assert "get_runtime_context" not in fake.calls
    fake.initialized = True
    # Ray logs while the source asks it (the record it logs goes without fields).
    inner: list[Any] = []
    fake.on_context = lambda: inner.append(source())
    assert source()[0] == ("ray_job_id", "01000000")
    assert inner == [()]


def test_ray_that_cannot_answer_is_asked_once_per_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeRay(monkeypatch)
    fake.connect()
    fake.fail_context = True
    source = RaySource()
    assert source() == () and source() == ()
    assert fake.calls == {"get_runtime_context": 1}
    fake.fail_context = False
    fake.connect()  # the next connection is read again
    assert source()[0] == ("ray_job_id", "01000000")


def test_ray_after_fork_the_inherited_worker_gives_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = FakeRay(monkeypatch)
    fake.connect()
    source = RaySource()
    assert source() != ()
    source._after_fork_in_child()
    assert source() == ()
    fake.connect()  # ray.init in the child: a core worker of its own
    assert source()[0] == ("ray_job_id", "01000000")


# ------------------------------------------------------------ holds and switches


@pytest.fixture
def isolated_holds() -> Iterator[None]:
    """No hold but the test's own: a manager another test left open (the process's
    default manager of dictConfig handlers) would switch the fields on for all."""
    with sources._hold_lock:
        saved = dict(sources._holders)
        sources._holders.clear()
        sources._sync()
    yield
    with sources._hold_lock:
        sources._holders.clear()
        sources._holders.update(saved)
        sources._sync()


SPAN = NonRecordingSpan(SpanContext(0xABC, 0xDEF, is_remote=False))
SPAN_PAIRS = (("trace_id", f"{0xABC:032x}"), ("span_id", f"{0xDEF:016x}"))


def pairs_in_span() -> tuple[tuple[str, Any], ...]:
    with trace.use_span(SPAN):
        return source_pairs()


def test_a_kind_stays_while_any_hold_has_it(isolated_holds: None) -> None:
    assert pairs_in_span() == () and sources.installed() is None
    first, second = SourceHold([Kind.TRACE]), SourceHold([Kind.TRACE])
    assert pairs_in_span() == SPAN_PAIRS
    first.release()
    first.release()  # idempotent: does not take the other hold's count
    assert pairs_in_span() == SPAN_PAIRS
    second.release()
    assert pairs_in_span() == () and sources.installed() is None


def test_both_kinds_are_one_source(isolated_holds: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # What a call costs when neither Ray nor OpenTelemetry is imported: one source
    # call, which answers from two membership tests.
    hold = SourceHold([Kind.RAY, Kind.TRACE])
    try:
        assert sources.installed() is RAY_AND_TRACE_FIELDS
        assert pairs_in_span() == SPAN_PAIRS
        monkeypatch.delitem(sys.modules, "opentelemetry.trace")
        monkeypatch.delitem(sys.modules, "ray", raising=False)
        assert source_pairs() == ()
    finally:
        hold.release()


def test_ray_and_trace_joined_once_per_combination(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakeRay(monkeypatch)
    fake.connect()
    # The process-wide instance, as the joined source calls it, on the fake Ray.
    monkeypatch.setattr(RAY_SOURCE, "_worker_dict", None)
    monkeypatch.setattr(RAY_SOURCE, "_state", sources._NO_STATE)
    ray_pairs = (
        ("ray_job_id", "01000000"),
        ("ray_node_id", "n" * 56),
        ("ray_task_id", "aa" * 24),
    )
    assert RAY_AND_TRACE_FIELDS() == ray_pairs
    with trace.use_span(SPAN):
        first = RAY_AND_TRACE_FIELDS()
        assert first == ray_pairs + SPAN_PAIRS
        assert RAY_AND_TRACE_FIELDS() is first  # the same tuple: checked once
        fake.task = FakeTaskID("bb" * 24)
        assert RAY_AND_TRACE_FIELDS() == (*ray_pairs[:2], ("ray_task_id", "bb" * 24), *SPAN_PAIRS)
    assert RAY_AND_TRACE_FIELDS() == (*ray_pairs[:2], ("ray_task_id", "bb" * 24))


class Holds(RuleBasedStateMachine):
    """Managers open and close in any order, each wanting some kinds: exactly one
    source is added, the one for the union of the open holds' kinds, and the trace
    fields are there exactly while some open hold wants them."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[SourceHold] = []
        with sources._hold_lock:
            self.saved = dict(sources._holders)
            sources._holders.clear()
            sources._sync()

    @rule(kinds=st.frozensets(st.sampled_from(list(Kind))))
    def open_hold(self, kinds: frozenset[Kind]) -> None:
        self.open.append(SourceHold(sorted(kinds, key=lambda k: k.value)))

    @precondition(lambda self: bool(self.open))
    @rule(data=st.data())
    def close_hold(self, data: st.DataObject) -> None:
        i = data.draw(st.integers(min_value=0, max_value=len(self.open) - 1))
        hold = self.open.pop(i)
        hold.release()
        hold.release()

    @invariant()
    def one_source_for_the_union(self) -> None:
        union = frozenset(kind for hold in self.open for kind in hold.kinds)
        expected = {
            frozenset(): None,
            frozenset({Kind.RAY}): RAY_FIELDS,
            frozenset({Kind.TRACE}): TRACE_FIELDS,
            frozenset({Kind.RAY, Kind.TRACE}): RAY_AND_TRACE_FIELDS,
        }[union]
        assert sources.installed() is expected
        assert pairs_in_span() == (SPAN_PAIRS if Kind.TRACE in union else ())

    def teardown(self) -> None:
        for hold in self.open:
            hold.release()
        with sources._hold_lock:
            sources._holders.clear()
            sources._holders.update(self.saved)
            sources._sync()


TestHolds = Holds.TestCase


@pytest.mark.parametrize("key", ["ray_fields", "trace_fields"])
def test_switches_in_yaml_keyword_and_environment(tmp_path: Path, key: str) -> None:
    assert getattr(load_config(environ={}), key) is True
    path = tmp_path / "c.yaml"
    path.write_text(f"{key}: false\n")
    assert getattr(load_config(path, environ={}), key) is False
    assert getattr(load_config(path, {key: True}, environ={}), key) is True
    env = f"AIOLOGSHIP_{key.upper()}"
    for raw, value in (("false", False), ("0", False), ("No", False), ("ON", True), ("1", True)):
        assert getattr(load_config(path, environ={env: raw}), key) is value
    with pytest.raises(ConfigError) as info:
        load_config(environ={env: "maybe"})
    assert info.value.key == key and "'maybe'" in str(info.value) and env in str(info.value)
    path.write_text(f"\n{key}: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert info.value.key == key and info.value.line == 2


def test_manager_holds_what_its_config_enables() -> None:
    with LogManager() as on:
        assert on._sources.kinds == (Kind.RAY, Kind.TRACE)
        with LogManager(ray_fields=False, trace_fields=False) as off:
            assert off._sources.kinds == ()
        with LogManager(trace_fields=False) as ray_only:
            assert ray_only._sources.kinds == (Kind.RAY,)
    assert on._sources.kinds == () == off._sources.kinds == ray_only._sources.kinds


def test_a_source_of_the_users_beside_ours_takes_the_checked_path(
    tmp_path: Path, tracer: Any
) -> None:
    """Ours alone is called directly (``_sole``); with a source of the user's beside
    it, every call goes through ``source_pairs`` (which checks and drops bad pairs),
    and back once the user's source is removed."""
    from aiologship._logging import _context

    t, _ = tracer
    path = tmp_path / "app.json"

    def users() -> tuple[tuple[str, Any], ...]:
        return (("tenant", "acme"), ("levelno", 99))  # a record attribute: dropped

    with LogManager(format="json") as lm:
        log = lm.get_logger("sole")
        log.add(path)
        assert _context._sole is sources.RAY_AND_TRACE_FIELDS
        with t.start_as_current_span("a"):
            log.info("ours only")
            _context.add_source(users)
            assert _context._sole is None
            log.info("both")
            _context.remove_source(users)
            assert _context._sole is sources.RAY_AND_TRACE_FIELDS
            log.info("ours again")
    assert _context._sole is None
    first, both, again = json_records(path)
    assert "tenant" not in first and "tenant" not in again
    assert both["tenant"] == "acme" and both.get("levelno") != 99
    assert first["trace_id"] == both["trace_id"] == again["trace_id"]


# --------------------------------------------------- through the real pipeline


def json_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in read_lines(path)]


def test_records_in_a_span_carry_its_ids(
    tmp_path: Path, tracer: Any, route: Callable[[Any], Any]
) -> None:
    t, exporter = tracer
    path = tmp_path / "app.json"
    with LogManager(format="json") as lm:
        log = lm.get_logger("traced")
        log.add(path)
        log = route(log)
        log.info("before")
        with t.start_as_current_span("outer"):
            log.info("in outer")
            with t.start_as_current_span("inner"):
                log.info("in inner")

            def in_thread() -> None:
                log.info("in a thread")

            thread = threading.Thread(target=contextvars.copy_context().run, args=(in_thread,))
            thread.start()
            thread.join(timeout=30)
        log.info("after")
    spans = {s.name: s.context for s in exporter.get_finished_spans()}
    recs = {r["message"]: r for r in json_records(path)}
    for message, span in (("in outer", "outer"), ("in inner", "inner"), ("in a thread", "outer")):
        assert recs[message]["trace_id"] == f"{spans[span].trace_id:032x}", message
        assert recs[message]["span_id"] == f"{spans[span].span_id:016x}", message
    for message in ("before", "after"):
        assert "trace_id" not in recs[message] and "span_id" not in recs[message]


async def test_concurrent_requests_records_carry_their_own_span(
    tmp_path: Path, tracer: Any, route: Callable[[Any], Any]
) -> None:
    t, exporter = tracer
    path = tmp_path / "app.json"
    async with LogManager(format="json") as lm:
        log = lm.get_logger("traced.async")
        log.add(path)
        log = route(log)
        barrier = asyncio.Barrier(50)

        async def request(i: int) -> None:
            with t.start_as_current_span(f"req-{i}"):
                log.info("start", extra={"i": i})
                await asyncio.wait_for(barrier.wait(), timeout=30)
                log.info("end", extra={"i": i})

        await asyncio.gather(*(request(i) for i in range(50)))
    spans = {s.name: s.context for s in exporter.get_finished_spans()}
    recs = json_records(path)
    assert len(recs) == 100
    for r in recs:
        span = spans[f"req-{r['i']}"]
        assert (r["trace_id"], r["span_id"]) == (f"{span.trace_id:032x}", f"{span.span_id:016x}")


def test_trace_fields_in_a_text_format(
    tmp_path: Path, tracer: Any, route: Callable[[Any], Any]
) -> None:
    path = tmp_path / "app.log"
    with LogManager() as lm:
        log = lm.get_logger("traced.text")
        log.add(path, fmt="%(trace_id)s %(span_id)s %(message)s")
        log = route(log)
        with tracer[0].start_as_current_span("s") as span:
            log.info("inside")
        log.info("outside")
    (_, trace_id), (_, span_id) = ids_of(span)
    assert read_lines(path) == [f"{trace_id} {span_id} inside", "- - outside"]


def test_switched_off_no_trace_fields(tmp_path: Path, tracer: Any, isolated_holds: None) -> None:
    path = tmp_path / "off.json"
    with LogManager(format="json", trace_fields=False) as lm:
        log = lm.get_logger("untraced")
        log.add(path)
        with tracer[0].start_as_current_span("s"):
            log.info("in a span")
    (r,) = json_records(path)
    assert "trace_id" not in r and "span_id" not in r


def test_two_managers_with_different_switches(
    tmp_path: Path, tracer: Any, isolated_holds: None
) -> None:
    """The fields are process-wide: a record carries them while any open manager
    enables them, whichever manager's sink writes it."""
    t = tracer[0]
    off_path = tmp_path / "off.json"
    off = LogManager(format="json", trace_fields=False)
    try:
        log = off.get_logger("two.managers")
        log.add(off_path)
        with t.start_as_current_span("s") as span:
            log.info("only off open")
            with LogManager(trace_fields=True):
                log.info("on open too")
            log.info("on closed again")
    finally:
        off.close()
    recs = {r["message"]: r for r in json_records(off_path)}
    assert "trace_id" not in recs["only off open"]
    assert recs["on open too"]["span_id"] == ids_of(span)[1][1]
    assert "trace_id" not in recs["on closed again"]


def test_opentelemetry_is_not_imported_by_aiologship() -> None:
    # The optional extra stays optional: importing and using aiologship in a fresh
    # interpreter loads neither OpenTelemetry nor Ray.
    import subprocess

    code = (
        "import sys, aiologship\n"
        "with aiologship.LogManager() as lm:\n"
        "    lm.get_logger('x').info('y')\n"
        "print(sorted(m for m in ('ray', 'opentelemetry', 'opentelemetry.trace')"
        " if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out
