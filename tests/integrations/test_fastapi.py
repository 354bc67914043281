"""The FastAPI example under a real uvicorn on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.timeout(120)
def test_every_request_is_shipped_after_shutdown(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="fastapi is not installed (extra: test)")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (extra: test)")
    logs, shipped = tmp_path / "logs", tmp_path / "shipped"
    port = free_port()
    env = dict(
        os.environ,
        APP_LOG_DIR=str(logs),
        APP_LOG_DEST=str(shipped),
        APP_COPY_INTERVAL="3600",  # only the shutdown's final cycle ships
        AIOLOGSHIP_STATE_DIR=str(tmp_path / "state"),
        PYTHONPATH=str(ROOT),
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "info"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            while True:
                try:
                    client.get("/items/0", headers={"x-request-id": "warmup"})
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise AssertionError("uvicorn did not come up") from None
                    time.sleep(0.1)
            ids = [f"req-{i}" for i in range(50)]
            for i, request_id in enumerate(ids):
                response = client.get(f"/items/{i}", headers={"x-request-id": request_id})
                assert response.status_code == 200 and response.json() == {"item_id": i}
        server.send_signal(signal.SIGINT)  # graceful: the lifespan's exit runs
        output, _ = server.communicate(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)
    assert server.returncode == 0, output
    records = [json.loads(line) for line in (shipped / "requests.log").read_text().splitlines()]
    requests = [r for r in records if r["message"] == "request"]
    assert [r["request_id"] for r in requests] == ["warmup", *ids]
    assert all(r["status"] == 200 and r["method"] == "GET" for r in requests)
    assert records[0]["message"] == "app started" and records[-1]["message"] == "app stopping"
    # uvicorn's own logging setup (dictConfig) did not silence or close our sink.
    assert "Application startup complete" in output
