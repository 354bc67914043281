"""What the automatic fields cost a log call (``aiologship/_logging/_sources.py``).

    python benchmarks/bench_sources.py [--runs 3] [--calls 100000] [--no-ray]

Each figure is nanoseconds per call of the source alone (a ``timeit`` loop, the
fastest of 5 repeats within a run, the median over ``--runs`` runs), next to an
anchor measured in the same process:

- Ray, in a task, an async actor method and the driver (a local one-node
  cluster): ``RAY_FIELDS()`` against reading the same four ids from
  ``ray.get_runtime_context()`` at every call (what Ray's own
  ``ray._common.filters.CoreContextFilter`` does per record). Each run also
  checks that both give the same ids.
- OpenTelemetry: ``TRACE_FIELDS()`` inside a span against reading the current
  span and formatting its ids at every call (what
  ``opentelemetry-instrumentation-logging``'s record factory does); outside any
  span.
- A process that imported neither: what the default-on switches cost everyone
  else (``RAY_AND_TRACE_FIELDS``, the one source added when both are on).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import load_avg

from aiologship._logging._sources import RAY_AND_TRACE_FIELDS, TRACE_FIELDS


def per_call_ns(fn: Callable[[], Any], calls: int) -> float:
    return min(timeit.repeat(fn, number=calls, repeat=5)) / calls * 1e9


def ray_anchor() -> tuple[tuple[str, Any], ...]:
    """The four ids read from the runtime context, as a per-record filter would."""
    import ray

    context = ray.get_runtime_context()
    pairs = [("ray_job_id", context.get_job_id()), ("ray_node_id", context.get_node_id())]
    # As CoreContextFilter does: a driver is not asked (Ray warns) for these.
    if context.worker.mode == ray.WORKER_MODE:
        actor_id = context.get_actor_id()
        if actor_id:
            pairs.append(("ray_actor_id", actor_id))
        task_id = context.get_task_id()
        if task_id:
            pairs.append(("ray_task_id", task_id))
    return tuple(pairs)


def measure_ray_here(calls: int) -> dict[str, Any]:
    # Imported here: in a Ray worker this runs in a fresh process (and the
    # process-wide source instance is not something to pickle).
    from aiologship._logging._sources import RAY_FIELDS

    return {
        "same": RAY_FIELDS() == ray_anchor(),
        "source_ns": per_call_ns(RAY_FIELDS, calls),
        "anchor_ns": per_call_ns(ray_anchor, calls),
    }


def ray_runs(runs: int, calls: int) -> dict[str, list[dict[str, Any]]]:
    import ray

    root = str(Path(__file__).resolve().parent.parent)
    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": root}},
    )
    try:
        task = ray.remote(num_cpus=0)(measure_ray_here)

        @ray.remote(num_cpus=0)
        class Actor:
            async def measure(self, calls: int) -> dict[str, Any]:
                # Yield once so the call runs as an asyncio task, as a real one does.
                await asyncio.sleep(0)
                return measure_ray_here(calls)

        actor = Actor.remote()  # type: ignore[attr-defined]
        out: dict[str, list[dict[str, Any]]] = {"task": [], "async actor": [], "driver": []}
        for _ in range(runs):
            out["task"].append(ray.get(task.remote(calls), timeout=300))
            out["async actor"].append(ray.get(actor.measure.remote(calls), timeout=300))
            out["driver"].append(measure_ray_here(calls))
        return out
    finally:
        ray.shutdown()


def trace_runs(runs: int, calls: int) -> dict[str, list[dict[str, Any]]]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    tracer = TracerProvider().get_tracer("bench")

    def anchor() -> tuple[tuple[str, str], ...]:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid:
            return ()
        return (
            ("trace_id", format(context.trace_id, "032x")),
            ("span_id", format(context.span_id, "016x")),
        )

    out: dict[str, list[dict[str, Any]]] = {"in a span": [], "no span": []}
    for _ in range(runs):
        with tracer.start_as_current_span("bench"):
            out["in a span"].append(
                {
                    "same": TRACE_FIELDS() == anchor(),
                    "source_ns": per_call_ns(TRACE_FIELDS, calls),
                    "anchor_ns": per_call_ns(anchor, calls),
                }
            )
        out["no span"].append(
            {
                "same": TRACE_FIELDS() == anchor() == (),
                "source_ns": per_call_ns(TRACE_FIELDS, calls),
                "anchor_ns": per_call_ns(anchor, calls),
            }
        )
    return out


def idle_runs(runs: int, calls: int) -> dict[str, list[dict[str, Any]]]:
    """What a manager with both switches on adds to every call of a process that
    imported neither Ray nor OpenTelemetry: the one source the context layer
    calls, against a function that returns ``()``; and the context layer's
    ``source_pairs()`` with that source held, against no source at all."""
    from aiologship._logging._context import source_pairs
    from aiologship._logging._sources import Kind, SourceHold

    def nothing() -> tuple[()]:
        return ()

    out: dict[str, list[dict[str, Any]]] = {"the joined source": [], "source_pairs()": []}
    for _ in range(runs):
        out["the joined source"].append(
            {
                "same": RAY_AND_TRACE_FIELDS() == (),
                "source_ns": per_call_ns(RAY_AND_TRACE_FIELDS, calls),
                "anchor_ns": per_call_ns(nothing, calls),
            }
        )
        bare = per_call_ns(source_pairs, calls)
        hold = SourceHold([Kind.RAY, Kind.TRACE])
        try:
            held = per_call_ns(source_pairs, calls)
            same = source_pairs() == ()
        finally:
            hold.release()
        out["source_pairs()"].append({"same": same, "source_ns": held, "anchor_ns": bare})
    return out


def report(title: str, anchor: str, results: dict[str, list[dict[str, Any]]]) -> bool:
    ok = True
    print(f"\n{title} (ns per call; anchor: {anchor})")
    print(f"  {'where':<32} {'source':>9} {'anchor':>9} {'anchor/source':>14}  runs (source)")
    for where, runs in results.items():
        source = statistics.median(r["source_ns"] for r in runs)
        anchor_ns = statistics.median(r["anchor_ns"] for r in runs)
        each = " ".join(f"{r['source_ns']:.0f}" for r in runs)
        print(f"  {where:<32} {source:9.0f} {anchor_ns:9.0f} {anchor_ns / source:13.2f}x  {each}")
        if not all(r["same"] for r in runs):
            ok = False
            print(f"  FAIL: {where}: the source and the anchor disagreed")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--calls", type=int, default=100_000)
    p.add_argument("--no-ray", action="store_true", help="skip the Ray part (~15 s)")
    a = p.parse_args()
    print(f"load average (1 min) at start: {load_avg():.2f}; runs: {a.runs}; calls: {a.calls}")
    ok = report(
        "Nothing applies (Ray not imported, OpenTelemetry not imported)",
        "a function returning (); source_pairs() with no source",
        idle_runs(a.runs, a.calls),
    )
    ok &= report(
        "OpenTelemetry",
        "get_current_span() and two hex formats per call",
        trace_runs(a.runs, a.calls),
    )
    if not a.no_ray:
        ok &= report(
            "Ray (local one-node cluster)",
            "ray.get_runtime_context() ids per call",
            ray_runs(a.runs, a.calls),
        )
    print(f"\nload average (1 min) at end: {load_avg():.2f}")
    print("PASS: sources agree with their anchors" if ok else "FAIL: see above")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
