"""The Ray Serve example on a local Ray: replicas log, one copier ships for the app."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_serve_requests_are_logged_and_shipped_once(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve", reason="ray[serve] is not installed (extra: ray)")
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        AIOLOGSHIP_STATE_DIR=str(tmp_path / "state"),
        RAY_DEDUP_LOGS="0",
    )
    env.pop("RAY_ADDRESS", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "ray_serve_app.py"),
         "--requests", "30", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=280, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(proc.stdout.splitlines()[-2])
    # Every request logged by some replica, shipped exactly once.
    assert result["logged"] == sorted(result["requests"])
    assert result["replicas"] == 2
    # One copier for the whole application, stopped by the driver at the end.
    assert result["copies_before_stop"] == ["serve_logs"]
    assert result["copies_after_stop"] == []
