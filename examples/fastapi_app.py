"""A FastAPI app whose lifespan opens a LogManager and ships its logs.

Run: ``APP_LOG_DIR=/tmp/app/logs APP_LOG_DEST=/tmp/app/shipped uvicorn examples.fastapi_app:app``

- the LogManager lives exactly as long as the app (``async with`` in the lifespan);
- every request is logged as one JSON line (method, path, status, duration, request id);
- uvicorn's own records, its access log included, go through aiologship's queue as
  JSON lines to the streams uvicorn configured (``capture="all"``: its blocking
  ``StreamHandler`` s are replaced while the app runs, and put back at shutdown);
- a copy operation ships the log folder every ``APP_COPY_INTERVAL`` seconds, and once
  more at shutdown, after the last request's record is on disk.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request, Response

from aiologship import LogManager

LOG_DIR = Path(os.environ.get("APP_LOG_DIR", "/tmp/aiologship-fastapi/logs"))
DESTINATION = os.environ.get("APP_LOG_DEST", "/tmp/aiologship-fastapi/shipped")
COPY_INTERVAL = float(os.environ.get("APP_COPY_INTERVAL", "30"))


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


@app.middleware("http")
async def log_requests(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    started = time.perf_counter()
    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
    response = await call_next(request)
    request.app.state.log.info(
        "request",
        extra={
            "request_id": request_id,
            "method": request.method,
            "path": request.url.path,
            "status": response.status_code,
            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
        },
    )
    return response


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    return {"item_id": item_id}
