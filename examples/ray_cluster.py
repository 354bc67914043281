"""The Ray cluster guide's scenario: ten tasks, spread over every node, each create a
LogManager and start the same copy. Exactly one copier runs (a detached actor on the
head node), worker-node tasks log that their start was skipped, and the copier keeps
running after every task has ended.

    python examples/ray_cluster.py                       # a local 3-node cluster
    python examples/ray_cluster.py --address auto        # an existing cluster
    python examples/ray_cluster.py --destination hdfs://namenode:9000/logs/

Without ``--address`` it starts a head and two worker nodes on this machine with
``ray.cluster_utils.Cluster`` (about 10 s) and stops them at the end. The default
destination is a local folder, so it runs without HDFS.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from aiologship import LogManager
from aiologship import ray as aray

COPY_NAME = "app_logs"


@ray.remote(num_cpus=0)
def distributed_task(task_id: int, log_dir: str, destination: str) -> tuple[int, str, str]:
    # The guide's task, unchanged: every task builds its own LogManager.
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    with LogManager() as log_manager:
        logger = log_manager.get_logger(f"task_{task_id}")
        logger.add(f"{log_dir}/task_{task_id}.log")
        logger.info("Processing task %d", task_id)
        op = log_manager.start_hdfs_copy(
            copy_name=COPY_NAME,
            path_patterns=[f"{log_dir}/*.log"],
            hdfs_destination=destination,
            copy_interval=5,
        )
        node = ray.get_runtime_context().get_node_id()[:8]
        return task_id, node, op.state


def start_local_cluster() -> Any:
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": 80 * 1024**2},
    )
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=80 * 1024**2)
    cluster.wait_for_nodes(timeout=60)
    return cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--address", help="an existing cluster (default: start a local one)")
    parser.add_argument("--destination", help="where the copier ships (default: a temp folder)")
    parser.add_argument("--work", help="folder for the logs (default: a new temp folder)")
    args = parser.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="aiologship-ray-"))
    log_dir = work / "logs"  # on one machine every node shares this folder
    log_dir.mkdir(parents=True)
    destination = args.destination or str(work / "shipped")
    cluster = None if args.address else start_local_cluster()
    ray.init(address=args.address or cluster.address, log_to_driver=True)
    try:
        nodes = [n["NodeID"] for n in ray.nodes() if n["Alive"]]
        futures = [
            distributed_task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(
                    nodes[i % len(nodes)], soft=False
                )
            ).remote(i, str(log_dir), destination)
            for i in range(10)
        ]
        for task_id, node, state in ray.get(futures, timeout=300):
            print(f"task {task_id} on node {node}: copy {state}")

        # Every task has ended; the copier has not.
        print()
        print(aray.describe_cluster())
        for status in aray.list_copies():
            print(f"{status.name}: {status.state}, {status.files_shipped} files shipped")

        final = aray.stop_copy(COPY_NAME)  # a final cycle, then the copier ends
        print(f"stopped after a final cycle: {final[0].files_shipped} files shipped in all")
        if not args.destination:
            shipped = sorted(p.name for p in Path(destination).rglob("*.log"))
            print(f"{len(shipped)} files under {destination}: {', '.join(shipped)}")
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()


if __name__ == "__main__":
    main()
