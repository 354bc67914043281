"""Automatic Ray fields on the real three-node cluster: records logged in a task,
an async actor and the driver carry the ids ``ray.get_runtime_context()`` gives
there, each task its own, also in a reused worker and across an actor's awaits."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import ray
from _context_tasks import LoggingActor, log_in_task, log_without_fields

from aiologship import LogManager

RAY_KEYS = ("ray_job_id", "ray_node_id", "ray_actor_id", "ray_task_id")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def ray_fields(record: dict[str, Any]) -> dict[str, Any]:
    return {k: record[k] for k in RAY_KEYS if k in record}


@pytest.mark.timeout(180)
def test_task_records_carry_its_ids_also_in_a_reused_worker(cluster: Any, tmp_path: Path) -> None:
    # One after the other on one node: Ray hands them an idle worker of the job,
    # which must not label a task's records with the previous task's id. Up to 8
    # tasks, until one lands in a worker an earlier task used.
    by_tag: dict[str, dict[str, Any]] = {}
    pids: dict[int, list[str]] = defaultdict(list)
    for i in range(8):
        tag = f"t{i}"
        ref = log_in_task.options(scheduling_strategy=cluster.on("w1")).remote(
            str(tmp_path / f"{tag}.log"), tag
        )
        by_tag[tag] = ray.get(ref, timeout=90)
        pids[by_tag[tag]["pid"]].append(tag)
        if len(pids[by_tag[tag]["pid"]]) >= 2 and len(by_tag) >= 3:
            break
    assert max(len(tags) for tags in pids.values()) >= 2, f"no worker was reused: {pids}"
    assert len({ids["task_id"] for ids in by_tag.values()}) == len(by_tag)

    for tag, ids in by_tag.items():
        assert ids["node_id"] == cluster.node_ids["w1"]
        assert ids["actor_id"] is None and ids["task_id"]
        recs = records(tmp_path / f"{tag}.log")
        assert [r["message"] for r in recs] == ["task start", "task in a span", "task end"]
        for r in recs:
            assert ray_fields(r) == {
                "ray_job_id": ids["job_id"],
                "ray_node_id": ids["node_id"],
                "ray_task_id": ids["task_id"],
            }, r
        trace_ids = [(r.get("trace_id"), r.get("span_id")) for r in recs]
        assert trace_ids == [(None, None), tuple(ids["span"]), (None, None)]


@pytest.mark.timeout(180)
def test_async_actor_calls_carry_their_own_task_ids_across_awaits(
    cluster: Any, tmp_path: Path
) -> None:
    path = tmp_path / "actor.log"
    actor = LoggingActor.options(scheduling_strategy=cluster.on("w2")).remote(str(path), 3)
    try:
        init_ids = ray.get(actor.init_ids_seen.remote(), timeout=90)
        tags = ["a", "b", "c"]
        # Three concurrent calls: each waits until all three are inside.
        answers = ray.get([actor.work.remote(t) for t in tags], timeout=90)
        results = dict(zip(tags, answers, strict=True))
        ray.get(actor.close.remote(), timeout=60)
    finally:
        ray.kill(actor)

    assert init_ids["node_id"] == cluster.node_ids["w2"] and init_ids["actor_id"]
    task_ids = {r["task_id"] for r in results.values()}
    assert len(task_ids) == 3 and init_ids["task_id"] not in task_ids
    by_tag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records(path):
        by_tag[r["tag"]].append(r)
    assert [r["message"] for r in by_tag["init"]] == ["actor init"]
    assert ray_fields(by_tag["init"][0]) == {
        "ray_job_id": init_ids["job_id"],
        "ray_node_id": init_ids["node_id"],
        "ray_actor_id": init_ids["actor_id"],
        "ray_task_id": init_ids["task_id"],
    }
    for tag, ids in results.items():
        assert ids["actor_id"] == init_ids["actor_id"]
        recs = by_tag[tag]
        assert sorted(r["message"] for r in recs) == [
            "call after await",
            "call in thread",
            "call start",
        ]
        # Ray's own answer in the worker thread (asyncio.to_thread copies the
        # call's context): the call's task id.
        assert ids["thread_task_id"] == ids["task_id"]
        for r in recs:
            assert ray_fields(r) == {
                "ray_job_id": ids["job_id"],
                "ray_node_id": ids["node_id"],
                "ray_actor_id": ids["actor_id"],
                "ray_task_id": ids["task_id"],
            }, r


@pytest.mark.timeout(120)
def test_driver_records_carry_job_and_node_only(cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "driver.log"
    context = ray.get_runtime_context()
    with LogManager(format="json") as lm:
        log = lm.get_logger("ctx.driver")
        log.add(path)
        log.info("from the driver")
    (r,) = records(path)
    assert ray_fields(r) == {
        "ray_job_id": context.get_job_id(),
        "ray_node_id": context.get_node_id(),
    }


@pytest.mark.timeout(120)
def test_switched_off_in_a_task(cluster: Any, tmp_path: Path) -> None:
    path = tmp_path / "off.log"
    ids = ray.get(
        log_without_fields.options(scheduling_strategy=cluster.on("head")).remote(str(path), "off"),
        timeout=90,
    )
    assert ids["task_id"]
    (r,) = records(path)
    assert r["message"] == "no ray fields" and ray_fields(r) == {}
