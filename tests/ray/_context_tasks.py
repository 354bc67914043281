"""Remote functions and actors that log through a LogManager of their own and say
what ``ray.get_runtime_context()`` answers where they logged (for the automatic
Ray fields). In their own module on the workers' PYTHONPATH, so Ray pickles them
by reference, as a user's code would be."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import ray


def _ids() -> dict[str, Any]:
    context = ray.get_runtime_context()
    return {
        "job_id": context.get_job_id(),
        "node_id": context.get_node_id(),
        "actor_id": context.get_actor_id(),
        "task_id": context.get_task_id(),
        "pid": os.getpid(),
    }


@ray.remote(num_cpus=0)
def log_in_task(path: str, tag: str) -> dict[str, Any]:
    """A plain task: a manager of its own, one JSON sink, three records (one of
    them in an OpenTelemetry span)."""
    from opentelemetry.sdk.trace import TracerProvider

    from aiologship import LogManager

    with LogManager(format="json") as lm:
        log = lm.get_logger(f"ctx.task.{tag}")
        log.add(path)
        log.info("task start", extra={"tag": tag})
        ids = _ids()
        # Ray and trace fields together.
        with TracerProvider().get_tracer("ctx").start_as_current_span("in task") as span:
            log.info("task in a span", extra={"tag": tag})
            context = span.get_span_context()
            ids["span"] = (f"{context.trace_id:032x}", f"{context.span_id:016x}")
        log.info("task end", extra={"tag": tag})
    return ids


@ray.remote(num_cpus=0)
def log_without_fields(path: str, tag: str) -> dict[str, Any]:
    """The same with ``ray_fields=False``: records carry no Ray ids."""
    from aiologship import LogManager

    with LogManager(format="json", ray_fields=False) as lm:
        log = lm.get_logger(f"ctx.off.{tag}")
        log.add(path)
        log.info("no ray fields", extra={"tag": tag})
    return _ids()


@ray.remote(num_cpus=0)
class LoggingActor:
    """An async actor whose concurrent calls log across awaits: a call waits (at
    most 60 s) until ``parties`` calls are inside, so their records interleave."""

    def __init__(self, path: str, parties: int) -> None:
        from aiologship import LogManager

        self.lm = LogManager(format="json")
        self.log = self.lm.get_logger("ctx.actor")
        self.log.add(path)
        self.parties = parties
        self.inside = 0
        self.all_inside = asyncio.Event()
        self.log.info("actor init", extra={"tag": "init"})
        self.init_ids = _ids()

    def init_ids_seen(self) -> dict[str, Any]:
        return self.init_ids

    async def work(self, tag: str) -> dict[str, Any]:
        self.log.info("call start", extra={"tag": tag})
        ids = _ids()
        self.inside += 1
        if self.inside >= self.parties:
            self.all_inside.set()
        await asyncio.wait_for(self.all_inside.wait(), timeout=60)
        self.log.info("call after await", extra={"tag": tag})
        # A thread the call hands work to: Ray's answer there, and our record there.
        ids["thread_task_id"] = await asyncio.to_thread(self._in_thread, tag)
        return ids

    def _in_thread(self, tag: str) -> str | None:
        self.log.info("call in thread", extra={"tag": tag})
        task_id: str | None = ray.get_runtime_context().get_task_id()
        return task_id

    async def close(self) -> None:
        await self.lm.aclose()
