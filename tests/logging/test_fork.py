"""A forked child always gets a working pipeline, wherever the fork lands.

Each scenario runs in a fresh ``python -c`` process, so the first fork really
happens while the parent's runtime thread is still starting (its imports in
flight). A thread logs in a loop; the main thread forks at chosen record counts;
each child logs, flushes, closes and reports through its exit status. Every wait
is bounded, and a child that does not end in time is killed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.logging.test_rotation import files_by_age

ROOT = Path(__file__).resolve().parents[2]

_SCENARIO = textwrap.dedent(
    """
    import json, os, sys, threading, time
    from aiologship import LogManager

    path, points, rotation = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
    CHILD_RECORDS = 300
    lm = LogManager()
    log = lm.get_logger("forky")
    log.logger.propagate = False
    log.add(path, fmt="%(message)s", rotation=None if rotation == "none" else rotation)
    reached = [threading.Event() for _ in points]
    stop = threading.Event()

    def produce():
        i = 0
        targets = list(enumerate(points))
        while not stop.is_set():
            log.info("P %d", i)
            i += 1
            while targets and i >= targets[0][1]:
                reached[targets.pop(0)[0]].set()
        results["parent_records"] = i

    results = {"children": []}
    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    for event in reached:
        if not event.wait(30):
            print(json.dumps({"error": "producer stalled"}), flush=True)
            os._exit(1)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for i in range(CHILD_RECORDS):
                    log.info("C%d %d", os.getpid(), i)
                if not lm.flush(timeout=20):
                    code = 3
                lm.close()
                stats = lm.stats()
                if code == 0 and stats.queued + stats.write_errors + stats.dropped:
                    code = 4
            except BaseException:
                code = 5
            os._exit(code)
        deadline = time.monotonic() + 30
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                results["children"].append([pid, os.waitstatus_to_exitcode(status)])
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                results["children"].append([pid, "timeout"])
                break
            time.sleep(0.005)
    stop.set()
    thread.join(30)
    lm.close()
    print(json.dumps(results), flush=True)
    """
)


def _run(tmp_path: Path, points: list[int], rotation: str = "none") -> None:
    path = tmp_path / "fork.log"
    proc = subprocess.run(
        [sys.executable, "-c", _SCENARIO, str(path), json.dumps(points), rotation],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    # 0: the child's records were all flushed, close() worked, nothing lost.
    assert [code for _, code in results["children"]] == [0] * len(points), proc.stderr
    lines = [line for p in files_by_age(path) for line in p.read_text().splitlines()]
    parent = [int(line.split()[1]) for line in lines if line.startswith("P ")]
    assert parent == list(range(results["parent_records"]))
    for pid, _ in results["children"]:
        mine = [int(line.split()[1]) for line in lines if line.startswith(f"C{pid} ")]
        assert mine == list(range(300)), f"child {pid}"


@pytest.mark.parametrize("attempt", range(4))
def test_fork_right_after_the_first_record_of_a_fresh_process(tmp_path: Path, attempt: int) -> None:
    _run(tmp_path, [1])


def test_fork_at_many_points_while_a_thread_logs(tmp_path: Path) -> None:
    _run(tmp_path, [1, 2, 3, 10, 50, 200, 1000, 5000, 20000])


def test_forked_children_share_a_rotated_file_with_the_parent(tmp_path: Path) -> None:
    _run(tmp_path, [1, 10, 300, 3000, 10000], rotation="4 KB")


_IMPORT_SPY = textwrap.dedent(
    """
    import os, sys, tempfile, threading

    seen = []

    class Spy:
        @staticmethod
        def find_spec(name, path=None, target=None):
            if threading.current_thread() is not threading.main_thread():
                seen.append((threading.current_thread().name, name))
            return None

    sys.meta_path.insert(0, Spy)
    from aiologship import LogManager

    folder = tempfile.mkdtemp()
    with LogManager() as lm:
        log = lm.get_logger("spy")
        log.logger.propagate = False
        text = log.add(os.path.join(folder, "a.log"))
        log.add(os.path.join(folder, "r.log"), rotation=300, retention=1)
        log.add(os.path.join(folder, "j.log"), json=True)
        for i in range(200):
            log.info("x %d", i, extra={"k": i})
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("boom")
        lm.flush()
        log.remove(text)
    lm = LogManager()
    lm.get_logger("spy").info("a second manager")
    lm.close()
    print(seen)
    """
)


def test_nothing_is_imported_on_pipeline_threads() -> None:
    """The design rule behind fork safety: a thread importing a module holds that
    module's import lock, and a child forked meanwhile inherits it held by a thread
    that does not exist there; its own runtime thread then blocks on the same
    import forever. So the pipeline's threads never import after they start."""
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_SPY],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
