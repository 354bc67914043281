"""Whole-process mode under a real uvicorn on 127.0.0.1: uvicorn's access log and
the app's records reach the JSON stdout sink; at shutdown uvicorn's handlers are
back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from .test_fastapi import free_port, wait_until_answering

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(120)
def test_access_log_and_app_records_reach_the_json_stdout_sink(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="fastapi is not installed (extra: test)")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (extra: test)")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT), AIOLOGSHIP_STATE_DIR=str(tmp_path / "state"))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "tests.integrations._capture_app:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until_answering(client, server, "/items/-1")
            for i in range(20):
                assert client.get(f"/items/{i}").json() == {"item_id": i}
        server.send_signal(signal.SIGINT)
        out, err = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
    assert server.returncode == 0, err
    # Every line on stdout is JSON: uvicorn's own access format never wrote there.
    records = [json.loads(line) for line in out.splitlines()]
    summary = records.pop()
    access = [r for r in records if r["logger"] == "uvicorn.access"]
    items = [r for r in records if r["logger"] == "app"]
    assert [r["item"] for r in items] == [-1, *range(20)]
    paths = [r["message"].split('"')[1] for r in access]
    assert paths == [f"GET /items/{i} HTTP/1.1" for i in [-1, *range(20)]]
    assert all(r["message"].endswith(" 200") for r in access)
    # While the app ran, uvicorn's StreamHandlers were aiologship's sinks; after
    # the lifespan ended they were the same objects as before.
    assert summary["during"]["uvicorn.access"] == ["SinkHandler"]
    assert summary["during"]["uvicorn"] == ["SinkHandler"]
    assert summary["restored"] is True
    # uvicorn's startup record went through its replaced stderr handler as JSON.
    startup = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(r["message"] == "Application startup complete." for r in startup)
