"""The context layer alone (``_logging/_context``): binding, nesting, isolation
between tasks and threads, sources, bad input. Records are in test_context_records.py."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from typing import Any

import anyio
import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiologship import ConfigError
from aiologship._logging import _context
from aiologship._logging._context import (
    Pairs,
    add_source,
    bind_context,
    context,
    fields_now,
    get_context,
    remove_source,
    source_pairs,
    unbind_context,
)
from aiologship._logging._records import RESERVED

pytestmark = pytest.mark.usefixtures("clean_context")


def test_context_nests_overrides_and_restores() -> None:
    assert get_context() == {}
    with context(request_id="r-1", user="ann") as bound:
        assert bound == {"request_id": "r-1", "user": "ann"}
        with context(user="bob", step=2):
            assert get_context() == {"request_id": "r-1", "user": "bob", "step": 2}
            # An overridden key keeps its place: the order of fields is the binding order.
            assert list(get_context()) == ["request_id", "user", "step"]
        assert get_context() == {"request_id": "r-1", "user": "ann"}
    assert get_context() == {}


def test_context_restores_after_an_exception() -> None:
    with pytest.raises(RuntimeError), context(a=1):
        raise RuntimeError("boom")
    assert get_context() == {}


async def test_context_is_usable_with_async_with_and_plain_with_in_async_code() -> None:
    async with context(a=1):
        with context(b=2):
            await asyncio.sleep(0)
            assert get_context() == {"a": 1, "b": 2}
        assert get_context() == {"a": 1}
    assert get_context() == {}


def test_one_context_object_may_be_entered_again_nested() -> None:
    ctx = context(a=1)
    with ctx, context(a=2), ctx:
        assert get_context() == {"a": 1}
    assert get_context() == {}


def test_bind_and_unbind() -> None:
    bind_context(request_id="r-9", user="ann")
    bind_context(user="bob")
    assert get_context() == {"request_id": "r-9", "user": "bob"}
    unbind_context("user", "never-bound")
    assert get_context() == {"request_id": "r-9"}
    unbind_context("absent")
    with context(user="cy"):
        bind_context(inner=1)
        assert get_context() == {"request_id": "r-9", "user": "cy", "inner": 1}
    # Leaving the block restores what was bound when it was entered.
    assert get_context() == {"request_id": "r-9"}


def test_bound_pairs_are_a_plain_tuple_when_every_value_is_immutable() -> None:
    bind_context(a="x", b=1, c=1.5, d=None, e=True, f=b"raw")
    assert type(_context.current()) is tuple
    bind_context(payload={"k": [1]})
    assert type(_context.current()) is _context._Live
    unbind_context("payload")
    assert type(_context.current()) is tuple


def test_a_mutable_bound_value_is_snapshotted_at_the_call() -> None:
    payload: dict[str, Any] = {"items": [1]}
    with context(payload=payload):
        first = dict(fields_now())
        payload["items"].append(2)
        second = dict(fields_now())
    assert first["payload"] == {"items": [1]}
    assert second["payload"] == {"items": [1, 2]}
    assert first["payload"] is not payload


def test_an_uncopyable_value_is_snapshotted_as_its_repr() -> None:
    lock = threading.Lock()
    with context(lock=lock):
        assert dict(fields_now())["lock"] == repr(lock)


@pytest.mark.parametrize("name", sorted(RESERVED))
def test_a_field_named_like_a_record_attribute_is_refused_at_bind_time(name: str) -> None:
    for bind in (lambda: context(**{name: 1}), lambda: bind_context(ok=1, **{name: 1})):
        with pytest.raises(ConfigError, match=f"invalid context field='{name}'.*LogRecord"):
            bind()
    assert get_context() == {}  # nothing bound by the refused call


def test_a_non_string_field_name_is_refused() -> None:
    # Python itself refuses non-str keywords; the check also covers direct callers.
    with pytest.raises(TypeError):
        bind_context(**{1: "x"})  # type: ignore[misc]
    with pytest.raises(ConfigError, match="invalid context field=1: a field name must be a str"):
        _context.check_fields({1: "x"})  # type: ignore[dict-item]


async def test_tasks_inherit_and_never_leak_to_siblings() -> None:
    seen: dict[str, dict[str, Any]] = {}
    started = asyncio.Event()

    async def child(name: str) -> None:
        bind_context(child=name)
        started.set()
        await asyncio.sleep(0)
        seen[name] = get_context()

    with context(request_id="r-1"):
        await asyncio.gather(child("a"), asyncio.create_task(child("b")))
        assert get_context() == {"request_id": "r-1"}
    assert seen == {
        "a": {"request_id": "r-1", "child": "a"},
        "b": {"request_id": "r-1", "child": "b"},
    }


async def test_context_follows_task_groups_threads_and_executors() -> None:
    seen: list[dict[str, Any]] = []
    with context(request_id="r-2"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: _record(seen))
        seen.append(await anyio.to_thread.run_sync(get_context))
        loop = asyncio.get_running_loop()
        ctx = contextvars.copy_context()
        seen.append(await loop.run_in_executor(None, ctx.run, get_context))
    assert seen == [{"request_id": "r-2"}] * 3


async def _record(seen: list[dict[str, Any]]) -> None:
    seen.append(get_context())


def test_sources_are_called_in_the_order_added_and_once_each() -> None:
    def ray() -> Pairs:
        return (("ray_job_id", "01000000"),)

    def trace() -> Pairs:
        return (("trace_id", "ab" * 16), ("span_id", "cd" * 8))

    add_source(ray)
    add_source(trace)
    add_source(ray)  # the same object again: still once
    assert source_pairs() == (
        ("ray_job_id", "01000000"),
        ("trace_id", "ab" * 16),
        ("span_id", "cd" * 8),
    )
    with context(trace_id="bound"):
        # The bound context comes after the sources: it wins a clash.
        assert dict(fields_now())["trace_id"] == "bound"
    remove_source(ray)
    remove_source(ray)  # absent: no error
    assert source_pairs() == (("trace_id", "ab" * 16), ("span_id", "cd" * 8))


def test_a_bad_source_cannot_break_or_overwrite_a_record() -> None:
    def raises() -> Pairs:
        raise RuntimeError("a source must not raise")

    def reserved() -> Pairs:
        return (("msg", "x"), ("levelname", "x"), ("ok", 1), ("obj", [1]))

    add_source(raises)
    add_source(reserved)
    assert source_pairs() == (("ok", 1), ("obj", "[1]"))


def test_a_source_returning_the_same_tuple_is_checked_once() -> None:
    cached = (("ray_node_id", "n1"),)
    assert cached not in _context._checked.values()
    add_source(lambda: cached)
    assert source_pairs() == cached
    assert cached in _context._checked.values()  # later calls skip the check
    assert source_pairs() == cached


# ----------------------------------------------------------------- properties

keys = st.sampled_from(["a", "b", "c", "request_id"])
values = st.one_of(st.integers(), st.text(max_size=3), st.none(), st.lists(st.integers()))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(keys, values, min_size=1), min_size=1, max_size=5))
def test_nested_contexts_behave_like_a_stack_of_dict_updates(layers: list[dict[str, Any]]) -> None:
    expected: list[dict[str, Any]] = [{}]
    entered = []
    for layer in layers:
        ctx = context(**layer)
        ctx.__enter__()
        entered.append(ctx)
        expected.append({**expected[-1], **layer})
        assert get_context() == expected[-1]
    for ctx in reversed(entered):
        ctx.__exit__(None, None, None)
        expected.pop()
        assert get_context() == expected[-1]


class ContextMachine(RuleBasedStateMachine):
    """bind / unbind / enter / leave in any order: the context is always the model's
    dict, and its pairs are a plain tuple exactly when every value is immutable."""

    def __init__(self) -> None:
        super().__init__()
        self.ctx = contextvars.Context()
        self.model: list[dict[str, Any]] = [{}]
        self.open: list[context] = []

    @rule(fields=st.dictionaries(keys, values, max_size=3))
    def bind(self, fields: dict[str, Any]) -> None:
        self.ctx.run(bind_context, **fields)
        self.model[-1] = {**self.model[-1], **fields}

    @rule(names=st.lists(keys, max_size=3))
    def unbind(self, names: list[str]) -> None:
        self.ctx.run(unbind_context, *names)
        self.model[-1] = {k: v for k, v in self.model[-1].items() if k not in names}

    @rule(fields=st.dictionaries(keys, values, max_size=3))
    def enter(self, fields: dict[str, Any]) -> None:
        ctx = context(**fields)
        self.ctx.run(ctx.__enter__)
        self.open.append(ctx)
        self.model.append({**self.model[-1], **fields})

    @precondition(lambda self: self.open)
    @rule()
    def leave(self) -> None:
        self.ctx.run(self.open.pop().__exit__, None, None, None)
        self.model.pop()

    @invariant()
    def matches_the_model(self) -> None:
        assert self.ctx.run(get_context) == self.model[-1]
        pairs = self.ctx.run(_context.current)
        immutable = all(type(v) is not list for v in self.model[-1].values())
        assert (type(pairs) is tuple) == immutable


TestContextMachine = ContextMachine.TestCase
TestContextMachine.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
