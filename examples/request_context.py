"""Context that follows each request: 200 concurrent "requests" log through an
``aiologship.Logger``, a task group child, a worker thread and a plain stdlib
logger (as a library or uvicorn would); every JSON line carries its request's id.

    python examples/request_context.py [/tmp/ctx-demo]

Prints one line per request id found in the file and how many records it has.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import uuid
from collections import Counter
from pathlib import Path

import anyio
import anyio.to_thread

import aiologship
from aiologship import LogManager

REQUESTS = 200


async def handle(log: aiologship.Logger, n: int) -> None:
    # What a middleware does: take the id from the request, else make one.
    request_id = f"req-{n:03d}" if n % 2 else uuid.uuid4().hex[:12]
    with aiologship.context(request_id=request_id, path=f"/items/{n}"):
        log.info("request started")
        async with anyio.create_task_group() as tg:
            tg.start_soon(lookup, log, n)  # children inherit the context
        await anyio.to_thread.run_sync(log.info, "rendered in a worker thread")
        logging.getLogger("library").warning("a library's own record")
        log.bind(status=200).info("request done")


async def lookup(log: aiologship.Logger, n: int) -> None:
    await asyncio.sleep(0)
    log.info("looked up item %d", n)


async def main(folder: Path) -> Counter[str]:
    path = folder / "requests.json"
    async with LogManager(format="json") as lm:
        log = lm.get_logger("app")
        log.add(path)
        # A plain stdlib logger writing to the same file through the handler class.
        library = logging.getLogger("library")
        library.addHandler(aiologship.AsyncFileHandler(path, json=True, manager=lm))
        library.propagate = False
        await asyncio.gather(*(handle(log, n) for n in range(REQUESTS)))
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    return Counter(line.get("request_id", "<none>") for line in lines)


if __name__ == "__main__":
    folder = Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/aiologship-context-demo")
    folder.mkdir(parents=True, exist_ok=True)
    counts = asyncio.run(main(folder))
    for request_id, count in sorted(counts.items()):
        print(f"{request_id}: {count} records")
    print(f"{len(counts)} requests, {sum(counts.values())} records in {folder / 'requests.json'}")
