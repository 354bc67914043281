"""A second Ray driver for test_ray_console: joins the test cluster with
``log_to_driver=True`` (the default users have), runs one task on node w1 that
logs through aiologship stream sinks, prints ``task done``, and stays connected
(so Ray's log monitor can forward the worker's output) until stdin closes.

    python _console_driver.py ADDRESS NODE_ID TOKEN PYTHONPATH
"""

from __future__ import annotations

import sys

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy


@ray.remote(num_cpus=0)
def log_task(token: str) -> tuple[int, int, int]:
    import logging

    from aiologship import LogManager

    # Whole-process mode too: a StreamHandler the task's code set up on the root
    # logger writes through aiologship while the manager is open.
    root_handler = logging.StreamHandler(sys.stderr)
    root_handler.setFormatter(logging.Formatter("captured %(message)s"))
    logging.getLogger().addHandler(root_handler)
    try:
        with LogManager(capture="root") as lm:
            log = lm.get_logger("raytask")
            log.add(sys.stdout, fmt="%(levelname)s %(name)s %(message)s")
            for i in range(3):
                log.info("stdout-%s-%d", token, i)
            logging.getLogger("raytask.lib").warning("stderr-%s", token)
        stats = lm.stats()
        return stats.accepted, stats.written, stats.dropped
    finally:
        logging.getLogger().removeHandler(root_handler)


def main() -> None:
    address, node_id, token, pythonpath = sys.argv[1:5]
    ray.init(
        address=address,
        namespace="aiologship-console",
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        log_to_driver=True,
    )
    strategy = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
    accepted, written, dropped = ray.get(
        log_task.options(scheduling_strategy=strategy).remote(token), timeout=120
    )
    # One write: print() writes its text and its newline separately, and Ray's log
    # monitor thread writes forwarded lines to this stdout in between.
    sys.stdout.write(f"task done accepted={accepted} written={written} dropped={dropped}\n")
    sys.stdout.flush()
    sys.stdin.read()  # the test closes stdin once it saw the forwarded lines
    ray.shutdown()


if __name__ == "__main__":
    main()
