"""A FastAPI app whose lifespan opens a LogManager and ships its logs.

Run: ``APP_LOG_DIR=/tmp/app/logs APP_LOG_DEST=/tmp/app/shipped uvicorn examples.fastapi_app:app``

- the LogManager lives exactly as long as the app (``async with`` in the lifespan);
- every request gets a request id (``RequestIdMiddleware``): the client's
  ``X-Request-ID`` if it is a sane one, else a new one; it is bound to the
  request's context, so every record logged while serving the request carries it
  (the endpoint's, a worker thread's, the request log's), and the response echoes
  it in ``X-Request-ID``;
- every request is logged as one JSON line (method, path, status, duration, request id);
- uvicorn's own records, its access log included, go through aiologship's queue as
  JSON lines to the streams uvicorn configured (``capture="all"``: its blocking
  ``StreamHandler`` s are replaced while the app runs, and put back at shutdown);
- a copy operation ships the log folder every ``APP_COPY_INTERVAL`` seconds, and once
  more at shutdown, after the last request's record is on disk;
- ``GET /metrics`` answers Prometheus: aiologship's figures (records accepted,
  dropped, queue depth; the copy's bytes behind, age of the oldest unshipped byte,
  failures) next to whatever else the app registers (extra ``aiologship[metrics]``).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

import aiologship
import aiologship.metrics
from aiologship import Logger, LogManager

LOG_DIR = Path(os.environ.get("APP_LOG_DIR", "/tmp/aiologship-fastapi/logs"))
DESTINATION = os.environ.get("APP_LOG_DEST", "/tmp/aiologship-fastapi/shipped")
COPY_INTERVAL = float(os.environ.get("APP_COPY_INTERVAL", "30"))

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A client's id is kept only if it is 1-128 characters of letters, digits and
# ``. _ : / + = @ -``: enough for UUIDs, ULIDs, base64 and W3C trace ids, and
# nothing that could forge a line or a field in a text log (no spaces, quotes,
# control or non-ASCII characters). Anything else is replaced by a new id.
REQUEST_ID_HEADER = b"x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")


def request_id_from(headers: list[tuple[bytes, bytes]]) -> str:
    """The first ``X-Request-ID`` header if it is sane, else a new UUID (hex)."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            text = value.decode("latin-1")
            if _SANE_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Plain ASGI middleware (not ``BaseHTTPMiddleware``): the request's context is
    set around the whole call of the app, so it covers the endpoint, its
    background work in threads and tasks, streaming bodies, and whatever is logged
    while the response is sent."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(scope["headers"])

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v) for k, v in message.get("headers", []) if k.lower() != REQUEST_ID_HEADER
                ]
                headers.append((REQUEST_ID_HEADER, request_id.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        with aiologship.context(request_id=request_id):
            await self.app(scope, receive, send_with_id)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with LogManager(
        format="json", capture="all", timezone=os.environ.get("APP_TZ", "UTC")
    ) as lm:
        log = lm.get_logger("app.requests")
        log.add(LOG_DIR / "requests.log")
        await lm.start_hdfs_copy(
            copy_name="fastapi_logs",
            path_patterns=[str(LOG_DIR / "*.log")],
            hdfs_destination=DESTINATION,
            copy_interval=COPY_INTERVAL,
        )
        app.state.log = log
        log.info("app started")
        yield
        log.info("app stopping")
    # Leaving the block drained every record and ran the final copy cycle.


app = FastAPI(lifespan=lifespan)
aiologship.metrics.register(REGISTRY)


@app.get("/metrics")
def metrics() -> Response:
    """Prometheus' text format; a plain ``def``: FastAPI runs it in a worker thread."""
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)


@app.middleware("http")
async def log_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    response = await call_next(request)
    # request_id comes from the context RequestIdMiddleware bound.
    request.app.state.log.info(
        "request",
        extra={
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
    return response


# Added last, so it is the outermost middleware: log_requests runs inside it.
app.add_middleware(RequestIdMiddleware)


def lookup(log: Logger, item_id: int) -> int:
    """Blocking work in a worker thread: the request's context came along."""
    log.info("lookup in a worker thread", extra={"item_id": item_id})
    return item_id


@app.get("/items/{item_id}")
async def read_item(item_id: int, request: Request) -> dict[str, int]:
    log: Logger = request.app.state.log
    log.info("reading item", extra={"item_id": item_id})
    await asyncio.sleep(0)  # other requests run here; this one keeps its id
    found = await anyio.to_thread.run_sync(lookup, log, item_id)
    return {"item_id": found}
