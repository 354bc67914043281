"""The FastAPI example under a real uvicorn on 127.0.0.1, driven over HTTP."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_answering(
    client: httpx.Client, server: subprocess.Popen[str], path: str, **kwargs: Any
) -> None:
    """GET ``path`` until the server answers; fail if it exits or 60 s pass first."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.get(path, **kwargs)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or server.poll() is not None:
                raise AssertionError("uvicorn did not come up") from None
            time.sleep(0.1)


@dataclass
class Served:
    base_url: str
    logs: Path
    shipped: Path
    output: str = ""
    returncode: int | None = None


@contextmanager
def serve_example(tmp_path: Path) -> Iterator[Served]:
    """``examples.fastapi_app`` under a real uvicorn on 127.0.0.1, up and answering;
    stopped with SIGINT (graceful: the lifespan's exit runs) when the block ends."""
    pytest.importorskip("fastapi", reason="fastapi is not installed (extra: test)")
    pytest.importorskip("uvicorn", reason="uvicorn is not installed (extra: test)")
    served = Served("", tmp_path / "logs", tmp_path / "shipped")
    port = free_port()
    served.base_url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        APP_LOG_DIR=str(served.logs),
        APP_LOG_DEST=str(served.shipped),
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
        with httpx.Client(base_url=served.base_url, timeout=5) as client:
            wait_until_answering(client, server, "/items/0", headers={"x-request-id": "warmup"})
        yield served
        server.send_signal(signal.SIGINT)
        served.output, _ = server.communicate(timeout=60)
        served.returncode = server.returncode
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate(timeout=10)


@pytest.mark.timeout(120)
def test_every_request_is_shipped_after_shutdown(tmp_path: Path) -> None:
    ids = [f"req-{i}" for i in range(50)]
    with (
        serve_example(tmp_path) as served,
        httpx.Client(base_url=served.base_url, timeout=5) as client,
    ):
        for i, request_id in enumerate(ids):
            response = client.get(f"/items/{i}", headers={"x-request-id": request_id})
            assert response.status_code == 200 and response.json() == {"item_id": i}
    assert served.returncode == 0, served.output
    records = [
        json.loads(line) for line in (served.shipped / "requests.log").read_text().splitlines()
    ]
    requests = [r for r in records if r["message"] == "request"]
    assert [r["request_id"] for r in requests] == ["warmup", *ids]
    assert all(r["status"] == 200 and r["method"] == "GET" for r in requests)
    assert records[0]["message"] == "app started" and records[-1]["message"] == "app stopping"
    # uvicorn's own logging setup (dictConfig) did not silence or close our sink.
    assert "Application startup complete" in served.output


# What the client sends as X-Request-ID (None: no header), and whether the app
# keeps it: 1-128 of letters, digits and ". _ : / + = @ -" (examples/fastapi_app.py).
HEADER_CASES: list[tuple[str, Any, bool]] = [
    *((f"given-{i}", f"req-{i}", True) for i in range(24)),
    ("uuid", "0f8fad5b-d9cb-469f-a165-70867728950e", True),
    ("longest", "a" * 128, True),
    ("base64ish", "ab+/cd==@x.y:z_1", True),
    *((f"absent-{i}", None, False) for i in range(6)),
    ("empty", "", False),
    ("too-long", "a" * 129, False),
    ("space", "bad id", False),
    ("quote", 'a"b', False),
    ("tab", "a\tb", False),
    ("newline-like", "a%0Ab", False),
    ("non-ascii", "caf\u00e9".encode(), False),
    ("obs-text", b"\xff\xfe", False),
]


@pytest.mark.timeout(180)
def test_each_request_s_records_carry_its_own_id(tmp_path: Path) -> None:
    """Concurrent requests: every record logged while serving a request (the
    endpoint's, its worker thread's, the request log's) carries that request's id
    and no other; the response echoes it; a missing or insane id is replaced by a
    generated one."""

    async def send_all(base_url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:

            async def one(item: int, header: Any) -> httpx.Response:
                headers = {} if header is None else {"x-request-id": header}
                return await client.get(f"/items/{item}", headers=headers)

            return await asyncio.gather(
                *(one(item, header) for item, (_, header, _) in enumerate(HEADER_CASES))
            )

    with serve_example(tmp_path) as served:
        responses = asyncio.run(send_all(served.base_url))
        # Two X-Request-ID headers: the first one counts.
        with httpx.Client(base_url=served.base_url, timeout=5) as client:
            twice = client.get(
                "/items/999", headers=[("x-request-id", "first"), ("x-request-id", "second")]
            )
    assert served.returncode == 0, served.output
    assert twice.headers.get_list("x-request-id") == ["first"]

    echoed: dict[int, str] = {}
    for item, ((name, header, kept), response) in enumerate(
        zip(HEADER_CASES, responses, strict=True)
    ):
        assert response.status_code == 200 and response.json() == {"item_id": item}, name
        (request_id,) = response.headers.get_list("x-request-id")
        if kept:
            assert request_id == header, name
        else:
            assert re.fullmatch(r"[0-9a-f]{32}", request_id), (name, request_id)
        echoed[item] = request_id
    assert len(set(echoed.values())) == len(echoed)  # generated ids are distinct

    records = [json.loads(line) for line in (served.logs / "requests.log").read_text().splitlines()]
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["message"] in ("app started", "app stopping"):
            assert "request_id" not in r, r
        else:
            by_id[r["request_id"]].append(r)
    for item, request_id in echoed.items():
        mine = by_id.pop(request_id)
        assert sorted(r["message"] for r in mine) == [
            "lookup in a worker thread",
            "reading item",
            "request",
        ], (item, mine)
        assert all(r.get("item_id", item) == item for r in mine), mine
        assert [r["path"] for r in mine if r["message"] == "request"] == [f"/items/{item}"]
    # What is left: the warm-up request and the one with two headers, nothing else.
    assert sorted(by_id) == ["first", "warmup"]


@given(
    values=st.lists(st.binary(max_size=140) | st.text(max_size=140).map(str.encode), max_size=3),
    other=st.lists(st.tuples(st.sampled_from([b"x-other", b"accept"]), st.binary(max_size=20))),
)
def test_request_id_rule(values: list[bytes], other: list[tuple[bytes, bytes]]) -> None:
    """The first X-Request-ID is kept iff it is 1-128 of letters, digits and
    ``. _ : / + = @ -``; otherwise (and without one) a new 32-hex id."""
    pytest.importorskip("fastapi", reason="fastapi is not installed (extra: test)")
    from examples.fastapi_app import request_id_from

    headers = [*other, *((b"X-Request-ID", v) for v in values)]
    got = request_id_from(headers)
    first = values[0] if values else None
    if first is not None and re.fullmatch(rb"[A-Za-z0-9._:/+=@-]{1,128}", first):
        assert got == first.decode()
    else:
        assert re.fullmatch(r"[0-9a-f]{32}", got)


def _scrape(client: httpx.Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@pytest.mark.timeout(120)
def test_metrics_endpoint_moves_with_requests(tmp_path: Path) -> None:
    """``/metrics`` of the example under real uvicorn, read with prometheus_client's
    parser: each request adds its records; the copy is there, caught up."""
    accepted = ("aiologship_records_accepted_total", frozenset())
    cycles = ("aiologship_copy_cycles_total", frozenset({("copy", "fastapi_logs")}))
    behind = ("aiologship_copy_bytes_behind", frozenset({("copy", "fastapi_logs")}))
    with (
        serve_example(tmp_path) as served,
        httpx.Client(base_url=served.base_url, timeout=5) as client,
    ):
        first = _scrape(client)
        for i in range(20):
            assert client.get(f"/items/{i}").status_code == 200
        second = _scrape(client)
        # Each /items request logs 3 records of the app and 1 access-log line
        # (capture="all"); the first scrape's own request log and access line
        # are in the second scrape too.
        assert second[accepted] - first[accepted] >= 20 * 4
        assert ("aiologship_queue_capacity", frozenset()) in second
        # The copy's first cycle started with the app; it may still be running.
        deadline = time.monotonic() + 30
        while (third := _scrape(client)).get(cycles, 0) < 1:
            assert time.monotonic() < deadline, "the copy's first cycle never finished"
            time.sleep(0.1)
        assert third[behind] == 0
    assert served.returncode == 0, served.output
