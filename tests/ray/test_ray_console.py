"""Records a Ray task writes through aiologship stream sinks reach the driver's
console through Ray's log monitor (the worker's stdout and stderr are files Ray
tails), on the real three-node cluster."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
import uuid

from conftest import HERE, ROOT, RayCluster

WAIT = 120.0
DONE = re.compile(r"task done accepted=(\d+) written=(\d+) dropped=(\d+)")


def test_task_records_reach_the_driver_console(ray_cluster: RayCluster) -> None:
    token = uuid.uuid4().hex[:12]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    driver = subprocess.Popen(
        [sys.executable, str(HERE / "_console_driver.py"), ray_cluster.cluster.address,
         ray_cluster.node_ids["w1"], token, env["PYTHONPATH"]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, cwd=ROOT,
    )  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert driver.stdout is not None
        for line in driver.stdout:
            lines.put(line)
        lines.put("")

    threading.Thread(target=read, daemon=True).start()
    wanted = {f"INFO raytask stdout-{token}-{i}" for i in range(3)}
    wanted |= {f"captured stderr-{token}", f"captured stdout-{token}-0"}
    seen: list[str] = []
    done = ""
    try:
        deadline = time.monotonic() + WAIT
        while (wanted or not done) and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if not line:
                break
            seen.append(line)
            wanted = {w for w in wanted if not line.rstrip().endswith(w)}
            if m := DONE.search(line):  # a forwarded line may share its line
                done = m.group(0)
    finally:
        assert driver.stdin is not None
        driver.stdin.close()
        try:
            driver.wait(timeout=60)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait(timeout=10)
            assert driver.stdout is not None
            driver.stdout.close()
    output = "".join(seen)
    assert not wanted, f"not forwarded to the driver: {sorted(wanted)}\n{output}"
    # Ray's log monitor prefixes each forwarded line with the task's name and pid
    # (coloured by Ray when it decides to).
    forwarded = [ln for ln in seen if f"INFO raytask stdout-{token}-0" in ln]
    assert "(log_task pid=" in forwarded[0], forwarded
    # Nothing lost in the task: every accepted record was written.
    m = DONE.fullmatch(done)
    assert m is not None, f"no 'task done' line:\n{output}"
    accepted, written, dropped = m.groups()
    assert written == accepted and dropped == "0", done
