"""The Ray examples run end to end: one on the folder's shared cluster (its
``--address`` path), one starting a Ray of its own (the path without it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_example(name: str, timeout: float, *args: str) -> str:
    # RAY_ADDRESS=local: an example that starts its own Ray never joins the test
    # cluster of conftest.py (alive for the whole folder); --address overrides it.
    env = dict(os.environ, PYTHONPATH=str(ROOT), RAY_DEDUP_LOGS="0", RAY_ADDRESS="local")
    env.pop("RAY_DISABLE_HDFS_COPY", None)
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return done.stdout + done.stderr


@pytest.mark.timeout(300)
def test_ray_cluster_example(cluster: Any, tmp_path: Path) -> None:
    # The shared three-node cluster saves the example's own start (about 10 s).
    out = run_example(
        "ray_cluster.py", 280, "--address", cluster.cluster.address, "--work", str(tmp_path)
    )
    states = [line.rsplit(": copy ", 1)[1] for line in out.splitlines() if ": copy " in line]
    assert len(states) == 10 and states.count("skipped") >= 1, out[-3000:]
    assert "HDFS copy operation 'app_logs' skipped: disabled in Ray cluster worker node" in out
    assert out.count("copier 'app_logs'") == 1, out[-3000:]
    assert f"10 files under {tmp_path / 'shipped'}" in out


@pytest.mark.timeout(300)
def test_ray_async_actor_example(tmp_path: Path) -> None:
    out = run_example("ray_async_actor.py", 280, "--work", str(tmp_path))
    assert "'state': 'running'" in out, out[-3000:]
    assert "copier 'service_logs'" in out
