"""Issue 5 on a real three-node Ray cluster (head + 2 workers, one machine)."""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import pytest
import ray
from _raytest import engine_factory, wait_for
from _tasks import (
    Barrier,
    GatedFactory,
    ManagerService,
    UserService,
    call_on_node,
    manager_task,
    start_copy_task,
)

from aiologship import ray as aray
from aiologship._copiers._ray_copier import NAMESPACE, RayCopier, find_copiers
from aiologship._exceptions import CopyConflictError

SKIP_LINE = "HDFS copy operation '{}' skipped: disabled in Ray cluster worker node"


def make_logs(folder: Path, count: int, prefix: str = "app") -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for i in range(count):
        data = f"{prefix} line {i}\n".encode() * (50 + i)
        (folder / f"{prefix}-{i:03d}.log").write_bytes(data)
        files[f"{prefix}-{i:03d}.log"] = data
    return files


def shipped(dest: Path) -> dict[str, list[Path]]:
    """Every file under ``dest`` by base name (a duplicate shows as two paths)."""
    out: dict[str, list[Path]] = {}
    for path in dest.rglob("*"):
        if path.is_file():
            out.setdefault(path.name, []).append(path)
    return out


def params(name: str, src: Path, dest: Path, **extra: Any) -> dict[str, Any]:
    p: dict[str, Any] = {
        "copy_name": name,
        "path_patterns": [str(src / "*.log")],
        "hdfs_destination": str(dest),
        "copy_interval": 60,
    }
    p.update(extra)
    return p


def copier_handle(name: str) -> Any:
    return ray.get_actor(name, namespace=NAMESPACE)


@pytest.mark.timeout(240)
def test_ten_tasks_one_copier(cluster: Any, tmp_path: Path) -> None:
    """The guide's scenario: ten tasks over all nodes start the same copy at once."""
    files = make_logs(tmp_path / "src", 6)
    p = params("app_logs", tmp_path / "src", tmp_path / "dest")
    barrier = Barrier.remote(10)
    nodes = ["head", "w1", "w2"]
    refs = [
        start_copy_task.options(scheduling_strategy=cluster.on(nodes[i % 3])).remote(
            p, state_dir=str(tmp_path / "state"), factory=engine_factory(), barrier=barrier
        )
        for i in range(10)
    ]
    results = ray.get(refs, timeout=180)

    by_node = Counter(cluster.name_of(r["node_id"]) for r in results)
    assert by_node == {"head": 4, "w1": 3, "w2": 3}
    for r in results:
        where = cluster.name_of(r["node_id"])
        if where == "head":
            assert r["role"] == "head" and r["started"], r
            assert "INFO Ray head node detected: HDFS copy enabled" in r["logs"]
            assert r["actor_name"] == "copy:app_logs"
        else:
            assert r["role"] == "worker" and not r["started"], r
            assert "INFO Ray worker node detected: HDFS copy disabled" in r["logs"]
            assert f"INFO {SKIP_LINE.format('app_logs')}" in r["logs"]

    # Exactly one copier, on the head node, still alive after every task ended.
    refs_found = find_copiers()
    assert [c.actor_name for c in refs_found] == ["copy:app_logs"]
    handle = copier_handle("copy:app_logs")
    info = ray.get(handle.info.remote(), timeout=30)
    assert info["node_id"] == cluster.node_ids["head"]

    ray.get(handle.flush.remote(), timeout=60)
    out = shipped(tmp_path / "dest")
    assert sorted(out) == sorted(files)
    for name, data in files.items():
        assert len(out[name]) == 1, out[name]
        assert out[name][0].read_bytes() == data
    statuses = aray.list_copies()
    assert len(statuses) == 1
    assert statuses[0].files_shipped == len(files)


@pytest.mark.timeout(120)
def test_env_override_on_head(cluster: Any, tmp_path: Path) -> None:
    make_logs(tmp_path / "src", 2)
    p = params("env_logs", tmp_path / "src", tmp_path / "dest")
    env = {"env_vars": {"RAY_DISABLE_HDFS_COPY": "Yes"}}
    off = start_copy_task.options(scheduling_strategy=cluster.on("head"), runtime_env=env).remote(
        p, state_dir=str(tmp_path / "state"), factory=engine_factory()
    )
    r = ray.get(off, timeout=90)
    assert r["role"] == "head" and not r["enabled"] and not r["started"]
    assert "INFO Ray head node detected: HDFS copy disabled by RAY_DISABLE_HDFS_COPY" in r["logs"]
    assert (
        "INFO HDFS copy operation 'env_logs' skipped: disabled by RAY_DISABLE_HDFS_COPY"
        in r["logs"]
    )
    assert find_copiers() == []
    assert aray.list_copies() == []
    assert not (tmp_path / "dest").exists()

    # A value that is neither yes nor no is named in a warning and changes nothing.
    env = {"env_vars": {"RAY_DISABLE_HDFS_COPY": "maybe"}}
    on = start_copy_task.options(scheduling_strategy=cluster.on("head"), runtime_env=env).remote(
        p, state_dir=str(tmp_path / "state"), factory=engine_factory()
    )
    r = ray.get(on, timeout=90)
    assert r["enabled"] and r["started"]
    assert any(line.startswith("WARNING") and "'maybe'" in line for line in r["logs"]), r["logs"]
    assert [c.actor_name for c in find_copiers()] == ["copy:env_logs"]


@pytest.mark.timeout(180)
def test_async_actor_keeps_serving_while_awaiting_start(
    cluster: Any, tmp_path: Path, record_property: Any
) -> None:
    make_logs(tmp_path / "src", 3)
    p = params("actor_logs", tmp_path / "src", tmp_path / "dest")
    # The start is held (in its worker thread) until the service has served 3 calls.
    service = UserService.options(scheduling_strategy=cluster.on("head")).remote(hold_pings=3)
    start = service.start_copy.remote(p, str(tmp_path / "state"), GatedFactory())
    # Calls sent while the start is in flight must be served, not queued behind it.
    answered = []
    while True:
        done, _ = ray.wait([start], timeout=0)
        answered.append(ray.get(service.ping.remote(len(answered)), timeout=30))
        if done:
            break
    result = ray.get(start, timeout=120)
    assert result["actor_name"] == "copy:actor_logs"
    assert answered == list(range(len(answered)))
    assert result["pings_during_start"] >= 3, result
    assert result["ticks"] > 0
    assert result["engine_loaded_here"] is False
    # Data, not an assertion (timing never goes into a test): the worst loop stall.
    record_property("max_loop_lag_ms", round(result["max_lag"] * 1000, 3))
    print(f"async actor: worst loop lag during start {result['max_lag'] * 1000:.2f} ms")
    ray.kill(service)


@pytest.mark.timeout(240)
def test_scope_node_ships_each_node_under_its_prefix(cluster: Any, tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    expected = {}
    refs = []
    for name in ("head", "w1", "w2"):
        # All nodes share this machine's disk, so each gets its own source folder.
        expected[name] = make_logs(tmp_path / "src" / name, 3, prefix=name)
        p = params("node_logs", tmp_path / "src" / name, dest, scope="node")
        for _ in range(2):  # two tasks per node: still one copier per node
            refs.append(
                start_copy_task.options(scheduling_strategy=cluster.on(name)).remote(
                    p, state_dir=str(tmp_path / "state"), factory=engine_factory()
                )
            )
    results = ray.get(refs, timeout=180)
    assert all(r["started"] for r in results), results
    names = sorted(c.actor_name for c in find_copiers("node_logs"))
    assert names == sorted(f"copy:node_logs@{nid}" for nid in cluster.node_ids.values())
    for name, node_id in cluster.node_ids.items():
        handle = copier_handle(f"copy:node_logs@{node_id}")
        info = ray.get(handle.info.remote(), timeout=30)
        assert info["node_id"] == node_id  # pinned to its node
        ray.get(handle.flush.remote(), timeout=60)
        out = shipped(dest / node_id)
        assert sorted(out) == sorted(expected[name])
        for fname, data in expected[name].items():
            assert [p.read_bytes() for p in out[fname]] == [data]
    # Nothing outside the per-node prefixes.
    assert sorted(p.name for p in dest.iterdir()) == sorted(cluster.node_ids.values())
    # One stop ends the copy on every node.
    assert len(aray.stop_copy("node_logs")) == 3
    wait_for(lambda: find_copiers("node_logs") == [], timeout=30, what="per-node copiers gone")


@pytest.mark.timeout(240)
def test_killed_copier_restarts_and_resumes(cluster: Any, tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    p = params("restart_logs", src, dest, copy_interval=0.2)
    stop = threading.Event()
    written: dict[str, bytes] = {}

    def produce() -> None:
        i = 0
        while not stop.is_set() and i < 400:
            data = f"record {i}\n".encode() * 200
            # Atomic at the source: a copier never sees a half-written file, so any
            # file rewritten at the destination after the restart was shipped twice.
            tmp = src / f".part-{i:04d}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, src / f"part-{i:04d}.log")
            written[f"part-{i:04d}.log"] = data
            i += 1
            time.sleep(0.02)

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    try:
        r = ray.get(
            start_copy_task.options(scheduling_strategy=cluster.on("head")).remote(
                p, state_dir=str(tmp_path / "state"), factory=engine_factory()
            ),
            timeout=90,
        )
        assert r["started"], r
        handle = copier_handle("copy:restart_logs")
        first = ray.get(handle.info.remote(), timeout=30)
        wait_for(
            lambda: ray.get(handle.status.remote(), timeout=30).files_shipped >= 10,
            timeout=60,
            what="the copier to ship 10 files",
        )
        # What had arrived before the kill must not be written again afterwards.
        before = {
            path.name: (path.stat().st_ino, path.stat().st_mtime_ns) for path in dest.rglob("*.log")
        }
        ray.kill(handle, no_restart=False)
        # A caller's handle rides through the restart (bounded retries), not an error.
        copier = RayCopier(handle, "copy:restart_logs", "restart_logs", cluster.node_ids["head"])
        assert anyio.run(lambda: copier.status(timeout=90)).name == "restart_logs"

        def restarted() -> dict[str, Any] | None:
            try:
                info: dict[str, Any] = ray.get(handle.info.remote(), timeout=5)
            except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
                return None
            return info if info["pid"] != first["pid"] else None

        again = wait_for(restarted, timeout=90, what="the copier actor to restart")
        assert again["restarted"] and again["node_id"] == cluster.node_ids["head"]
    finally:
        stop.set()
        producer.join(timeout=30)
    ray.get(handle.flush.remote(), timeout=120)

    out = shipped(dest)
    assert sorted(out) == sorted(written), set(out) ^ set(written)
    for name, data in written.items():
        assert [path.read_bytes() for path in out[name]] == [data], name
    for name, (ino, mtime) in before.items():
        st = out[name][0].stat()
        assert (st.st_ino, st.st_mtime_ns) == (ino, mtime), f"{name} shipped twice"
    assert len(before) >= 10


@pytest.mark.timeout(180)
def test_list_stop_and_describe_from_any_node(cluster: Any, tmp_path: Path) -> None:
    files = make_logs(tmp_path / "src", 2)
    p = params("listed", tmp_path / "src", tmp_path / "dest")
    r = ray.get(
        start_copy_task.options(scheduling_strategy=cluster.on("head")).remote(
            p, state_dir=str(tmp_path / "state"), factory=engine_factory()
        ),
        timeout=90,
    )
    assert r["started"]

    # Listed from a worker node: the cluster's copies, not just the local ones.
    statuses = ray.get(
        call_on_node.options(scheduling_strategy=cluster.on("w2")).remote("list_copies"),
        timeout=60,
    )
    assert [s.name for s in statuses] == ["listed"]

    desc = aray.describe_cluster()
    assert desc.role == aray.Role.HEAD
    assert len(desc.nodes) == 3
    assert desc.head is not None and desc.head.node_id == cluster.node_ids["head"]
    assert desc.current is not None and desc.current.node_id == cluster.node_ids["head"]
    assert [c.copy_name for c in desc.head.copiers] == ["listed"]
    assert "copier 'listed'" in str(desc)
    remote_desc = ray.get(
        call_on_node.options(scheduling_strategy=cluster.on("w1")).remote("describe_cluster"),
        timeout=60,
    )
    assert remote_desc.role == aray.Role.WORKER
    assert remote_desc.current.node_id == cluster.node_ids["w1"]

    # A file written after the last cycle still ships: stop runs a final cycle.
    late = make_logs(tmp_path / "src", 3)  # adds app-002.log
    finals = ray.get(
        call_on_node.options(scheduling_strategy=cluster.on("w1")).remote("stop_copy", "listed"),
        timeout=90,
    )
    assert len(finals) == 1
    out = shipped(tmp_path / "dest")
    assert sorted(out) == sorted(late) and len(late) > len(files)
    wait_for(lambda: find_copiers("listed") == [], timeout=30, what="the copier to be killed")


@pytest.mark.timeout(120)
def test_conflicting_parameters_raise_in_the_caller(cluster: Any, tmp_path: Path) -> None:
    import anyio

    from aiologship._copiers._ray_copier import start_ray_copier

    make_logs(tmp_path / "src", 1)
    p = params("conflict", tmp_path / "src", tmp_path / "dest")
    state = tmp_path / "state"
    first = anyio.run(lambda: start_ray_copier(p, state_dir=state, factory=engine_factory()))
    again = anyio.run(lambda: start_ray_copier(p, state_dir=state, factory=engine_factory()))
    assert first.actor_name == again.actor_name == "copy:conflict"
    other = dict(p, copy_interval=30)
    with pytest.raises(CopyConflictError) as info:
        anyio.run(lambda: start_ray_copier(other, state_dir=state, factory=engine_factory()))
    assert "copy_interval" in info.value.differences
    assert os.fspath(tmp_path / "dest") in str(p["hdfs_destination"])


# ------------------------------------------------------------------ through LogManager


@pytest.mark.timeout(180)
def test_manager_gate_on_each_node(cluster: Any, tmp_path: Path) -> None:
    """``hdfs_copy_enabled`` / ``_ray_hdfs_enabled`` and the skipped handle, through
    LogManager (passes with the manager wiring described in the ray branch report)."""
    make_logs(tmp_path / "src", 1)
    p = params("mgr_logs", tmp_path / "src", tmp_path / "dest")
    state = str(tmp_path / "state")
    workers = [
        manager_task.options(scheduling_strategy=cluster.on(n)).remote(p, state_dir=state)
        for n in ("w1", "w2")
    ]
    head = manager_task.options(scheduling_strategy=cluster.on("head")).remote(
        None, state_dir=state
    )
    env = {"env_vars": {"RAY_DISABLE_HDFS_COPY": "true"}}
    head_off = manager_task.options(scheduling_strategy=cluster.on("head"), runtime_env=env).remote(
        None, state_dir=state
    )
    for r in ray.get(workers, timeout=120):
        assert r["node_id"] != cluster.node_ids["head"], r
        assert (r["enabled"], r["ray_enabled"], r["state"]) == (False, False, "skipped"), str(r)
        assert "INFO Ray worker node detected: HDFS copy disabled" in r["logs"]
        assert f"INFO {SKIP_LINE.format('mgr_logs')}" in r["logs"]
    r = ray.get(head, timeout=120)
    assert (r["enabled"], r["ray_enabled"]) == (True, True)
    assert "INFO Ray head node detected: HDFS copy enabled" in r["logs"]
    r = ray.get(head_off, timeout=120)
    assert (r["enabled"], r["ray_enabled"]) == (False, False)
    assert find_copiers() == []


@pytest.mark.timeout(180)
def test_manager_in_async_actor_leaves_the_engine_to_the_copier(
    cluster: Any, tmp_path: Path
) -> None:
    """``await lm.start_hdfs_copy`` in an async actor: the engine (pyarrow) is loaded
    only by the copier actor, and the switch interval lowered during the start is put
    back."""
    files = make_logs(tmp_path / "src", 2)
    p = params("svc_logs", tmp_path / "src", tmp_path / "dest")
    service = ManagerService.options(scheduling_strategy=cluster.on("head")).remote(
        str(tmp_path / "state")
    )
    r = ray.get(service.start.remote(p), timeout=120)
    assert r["state"] == "running"
    assert r["engine_loaded_here"] is False
    assert r["switch_interval"] == (0.005, 0.005)
    ray.get(service.close.remote(), timeout=60)
    assert [c.actor_name for c in find_copiers()] == ["copy:svc_logs"]
    ray.get(copier_handle("copy:svc_logs").flush.remote(), timeout=60)
    assert sorted(shipped(tmp_path / "dest")) == sorted(files)
    ray.kill(service)


@pytest.mark.timeout(240)
def test_manager_ten_tasks_one_copier(cluster: Any, tmp_path: Path) -> None:
    """The guide's scenario through LogManager: one copier that outlives the tasks."""
    files = make_logs(tmp_path / "src", 4)
    p = params("mgr_app_logs", tmp_path / "src", tmp_path / "dest")
    barrier = Barrier.remote(10)
    nodes = ["head", "w1", "w2"]
    refs = [
        manager_task.options(scheduling_strategy=cluster.on(nodes[i % 3])).remote(
            p, state_dir=str(tmp_path / "state"), barrier=barrier
        )
        for i in range(10)
    ]
    results = ray.get(refs, timeout=180)
    for r in results:
        if cluster.name_of(r["node_id"]) == "head":
            assert r["state"] != "skipped"
        else:
            assert r["state"] == "skipped"
    # Every manager has closed; the copier must still be there, exactly once.
    assert [c.actor_name for c in find_copiers()] == ["copy:mgr_app_logs"]
    ray.get(copier_handle("copy:mgr_app_logs").flush.remote(), timeout=60)
    out = shipped(tmp_path / "dest")
    assert sorted(out) == sorted(files)
    assert all(len(v) == 1 for v in out.values())


@pytest.mark.timeout(180)
def test_plain_process_stands_by_while_the_ray_copier_runs(cluster: Any, tmp_path: Path) -> None:
    """Same host, same state dir: a process outside the actor (here the driver, with
    HostLockBackend) does not copy alongside the Ray copier; it takes over once the
    copier is stopped."""
    import types

    from aiologship._copiers._host_copier import HostLockBackend, HostState
    from aiologship._copy import CopySpec

    files = make_logs(tmp_path / "src", 2)
    p = params("shared_host", tmp_path / "src", tmp_path / "dest", copy_interval=0.2)
    state = tmp_path / "state"
    r = ray.get(
        start_copy_task.options(scheduling_strategy=cluster.on("head")).remote(
            p, state_dir=str(state), factory=engine_factory()
        ),
        timeout=90,
    )
    assert r["started"]

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            backend = HostLockBackend(
                CopySpec.from_params(**p),
                runtime=types.SimpleNamespace(spawn=tg.start_soon),
                state_dir=state,
            )
            await backend.start()
            assert backend.copier is not None
            assert backend.copier.state is HostState.STANDBY
            await anyio.to_thread.run_sync(aray.stop_copy, "shared_host")
            with anyio.fail_after(30):
                while not backend.copier.is_leader:
                    await anyio.sleep(0.02)
            late = make_logs(tmp_path / "src", 3)
            await backend.flush()
            await backend.stop()
            out = shipped(tmp_path / "dest")
            assert sorted(out) == sorted(late) and len(late) > len(files)
            assert all(len(v) == 1 for v in out.values())

    anyio.run(main)


@pytest.mark.timeout(120)
def test_engine_that_cannot_open_fails_the_start_and_frees_the_name(
    cluster: Any, tmp_path: Path
) -> None:
    from aiologship._copiers._ray_copier import start_ray_copier
    from aiologship._exceptions import ConfigError

    make_logs(tmp_path / "src", 1)
    p = params("bad_state", tmp_path / "src", tmp_path / "dest")
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("a file where the state dir should be")
    with pytest.raises(ConfigError) as info:
        anyio.run(lambda: start_ray_copier(p, state_dir=not_a_dir, factory=engine_factory()))
    assert info.value.key == "state_dir"  # the engine's own error, rebuilt in the caller
    wait_for(lambda: find_copiers("bad_state") == [], timeout=30, what="the failed copier gone")
    # The name is free again: a corrected start creates a working copier.
    good = anyio.run(
        lambda: start_ray_copier(p, state_dir=tmp_path / "state", factory=engine_factory())
    )
    assert good.actor_name == "copy:bad_state"


@pytest.mark.timeout(240)
def test_template_node_id_is_the_copiers_ray_node(cluster: Any, tmp_path: Path) -> None:
    """``{node_id}`` in the destination is the node the copier actor runs on
    (the head for a cluster-scope copy started from a worker)."""
    files = make_logs(tmp_path / "src", 2, prefix="tpl")
    p = params("templated", tmp_path / "src", tmp_path / "dest", compression="gzip")
    p["hdfs_destination"] = f"{tmp_path / 'dest'}/{{node_id}}/"
    result = ray.get(
        start_copy_task.options(scheduling_strategy=cluster.on("head")).remote(
            p, state_dir=str(tmp_path / "state"), factory=engine_factory()
        ),
        timeout=180,
    )
    assert result["started"], result
    try:
        ray.get(copier_handle("copy:templated").flush.remote(), timeout=60)
        head = cluster.node_ids["head"]
        assert sorted(p.name for p in (tmp_path / "dest").iterdir()) == [head]
        assert sorted(p.name for p in (tmp_path / "dest" / head).iterdir()) == sorted(
            f"{name}.gz" for name in files
        )
    finally:
        aray.stop_copy("templated")
