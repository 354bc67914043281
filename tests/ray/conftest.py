"""A real three-node Ray cluster for the coordination tests.

One ``ray.cluster_utils.Cluster`` for this folder (it takes about 7-13 s to start on
this 2-core machine): the head plus two worker nodes, each with a custom resource
(``node_head``, ``node_w1``, ``node_w2``) and small CPU/memory settings. It is shut
down when the folder's last test is done, so the tests of the other folders run in
a process where Ray is not initialized (role detection, the manager's own copies).
Tasks are placed with ``NodeAffinitySchedulingStrategy``.
Detached copier actors outlive their job, so every test kills the ones it made.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

_STDLIB_RECORD_FACTORY = logging.getLogRecordFactory()
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'aiologship[ray]')")
# Importing Ray installs a process-wide LogRecord factory (it adds _ray_timestamp_ns).
# Keep it inside this module's cluster fixture, so the other test modules of the
# session see the stdlib's records as they would without Ray.
_RAY_RECORD_FACTORY = logging.getLogRecordFactory()
logging.setLogRecordFactory(_STDLIB_RECORD_FACTORY)

from _raytest import kill_copiers  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
NODE_NAMES = ("head", "w1", "w2")
_OBJECT_STORE = 80 * 1024 * 1024


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = [i for i, item in enumerate(items) if Path(str(item.fspath)).is_relative_to(HERE)]
    for i in here:
        items[i].add_marker(pytest.mark.ray)
    # The tests that start a Ray of their own (an example) go first, before the
    # shared cluster starts: its nine idle processes would slow them down.
    ours = sorted((items[i] for i in here), key=lambda item: "ray_cluster" in item.fixturenames)
    for i, item in zip(here, ours, strict=True):
        items[i] = item


@dataclass
class RayCluster:
    cluster: Any
    node_ids: dict[str, str]  # "head"/"w1"/"w2" -> hex node id

    def on(self, name: str) -> NodeAffinitySchedulingStrategy:
        """Scheduling strategy that puts a task or actor on node ``name``."""
        return NodeAffinitySchedulingStrategy(node_id=self.node_ids[name], soft=False)

    def name_of(self, node_id: str) -> str:
        return next(k for k, v in self.node_ids.items() if v == node_id)


@contextlib.contextmanager
def _three_nodes() -> Iterator[RayCluster]:
    logging.setLogRecordFactory(_RAY_RECORD_FACTORY)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "resources": {"node_head": 1},
            "object_store_memory": _OBJECT_STORE,
            "include_dashboard": False,
            # Metrics reach the node's Prometheus endpoint within 2 s (default 10 s).
            # Idle workers stay: the ten-task tests need ten at once (4, 3, 3 per
            # node), and a worker start costs about a second of this machine's CPU.
            # Ray's default keeps num_cpus (1) per node and kills the rest after 1 s,
            # so each such test started its workers again.
            "_system_config": {
                "metrics_report_interval_ms": 2000,
                "num_workers_soft_limit": 4,
                "idle_worker_killing_time_threshold_ms": 600_000,
            },
        },
    )
    try:
        for name in NODE_NAMES[1:]:
            cluster.add_node(
                num_cpus=1, resources={f"node_{name}": 1}, object_store_memory=_OBJECT_STORE
            )
        cluster.wait_for_nodes(timeout=60)
        # Workers (and the detached actors they start) import aiologship and the
        # test helpers from this checkout; nothing is pip-installed (brief).
        pythonpath = os.pathsep.join([str(ROOT), str(HERE)])
        ray.init(
            address=cluster.address,
            namespace="aiologship-tests",
            runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
            log_to_driver=False,
        )
        node_ids = {}
        for node in ray.nodes():
            if not node["Alive"]:
                continue
            for name in NODE_NAMES:
                if f"node_{name}" in node["Resources"]:
                    node_ids[name] = node["NodeID"]
        assert set(node_ids) == set(NODE_NAMES), node_ids
        yield RayCluster(cluster, node_ids)
    finally:
        ray.shutdown()
        cluster.shutdown()
        logging.setLogRecordFactory(_STDLIB_RECORD_FACTORY)


# A "package" fixture of a folder without __init__.py lives as long as the session
# (measured: Ray was still initialized in tests/test_manager_copy.py), so the
# cluster is shut down by hand after this folder's last test.
_RUNNING = contextlib.ExitStack()


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    yield _RUNNING.enter_context(_three_nodes())
    _RUNNING.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    try:
        return (yield)
    finally:
        if nextitem is None or not Path(str(nextitem.fspath)).is_relative_to(HERE):
            _RUNNING.close()  # the folder's last test: no Ray left for the next folders


@pytest.fixture
def cluster(ray_cluster: RayCluster) -> Iterator[RayCluster]:
    """The session cluster, with no copier actors before or after the test."""
    kill_copiers()
    try:
        yield ray_cluster
    finally:
        kill_copiers()
