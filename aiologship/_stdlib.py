"""``AsyncFileHandler``: the async file sink as a plain ``logging.Handler`` class,
for ``logging.config.dictConfig`` / ``fileConfig`` and hand-written setups::

    "handlers": {"app": {"()": "aiologship.AsyncFileHandler",
                         "filename": "/var/log/app.log", "rotation": "100 MB"}}

It feeds the process-wide default ``LogManager`` (or the one passed as
``manager``), so it has the same guarantees: O(1) ``emit``, batched writes off the
caller's loop, drained at interpreter exit.

Layer rule: part of the public surface (``aiologship.AsyncFileHandler``), above
the manager: a handler made by ``dictConfig`` has no manager of its own, so it
feeds the default one. That is why it is not in ``_logging``, which sits below
the manager and never imports it.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path

from ._config import parse_level, parse_retention, parse_rotation
from ._logging._formatting import make_formatter
from ._logging._queue import SinkHandler
from ._manager import LogManager, default_manager


class AsyncFileHandler(SinkHandler):
    def __init__(
        self,
        filename: str | os.PathLike[str],
        level: int | str = logging.NOTSET,
        *,
        fmt: str | None = None,
        json: bool = False,
        rotation: int | str | timedelta | None = None,
        retention: int | None = None,
        manager: LogManager | None = None,
    ) -> None:
        lm = manager or default_manager()
        # The manager's sink registry hands out the writer of the real path and the
        # pipeline this handler feeds; nothing else of the manager is used.
        sinks = lm._sinks
        writer = sinks.writer_for(
            Path(os.fspath(filename)).expanduser(),
            parse_rotation(rotation, "rotation"),
            parse_retention(retention, "retention"),
        )
        pipeline = sinks.pipeline
        formatter = make_formatter(json=json, fmt=fmt or lm.config.fmt, tz=lm.config.timezone)
        super().__init__(
            pipeline.queue,
            writer,
            formatter,
            parse_level(level, "level"),
            after_close=pipeline.write_after_close,
        )
        self._pipeline = pipeline

    def flush(self) -> None:
        """Wait (up to 30 s) until the records queued so far are written."""
        if not self._pipeline.in_runtime_thread():
            self._pipeline.flush(timeout=30)
