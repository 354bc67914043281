"""The app of test_uvicorn_capture: whole-process mode with JSON on stdout.

At shutdown it prints one JSON line: whether every logger's handlers are the
objects they were before the manager started, and what they were meanwhile.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from aiologship import LogManager

NAMES = ("", "uvicorn", "uvicorn.error", "uvicorn.access")


def handlers() -> dict[str, list[logging.Handler]]:
    return {name: list(logging.getLogger(name or None).handlers) for name in NAMES}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    before = handlers()
    async with LogManager(format="json", capture="all") as lm:
        log = lm.get_logger("app")
        log.add(sys.stdout)
        during = {k: [type(h).__name__ for h in v] for k, v in handlers().items()}
        app.state.log = log
        yield
    print(json.dumps({"restored": handlers() == before, "during": during}), flush=True)


app = FastAPI(lifespan=lifespan)


@app.get("/items/{item_id}")
async def read_item(item_id: int) -> dict[str, int]:
    app.state.log.info("item", extra={"item": item_id})
    return {"item_id": item_id}
