"""Whole-process mode: the blocking ``StreamHandler`` s of stdlib loggers are
replaced by aiologship stream sinks for a manager's lifetime, then put back.

``capture="root"`` replaces those on the root logger (``basicConfig``,
``dictConfig``'s ``root``); ``capture="all"`` also those of every logger that
exists when the manager starts (uvicorn's ``uvicorn`` and ``uvicorn.access``,
Ray's ``ray``). A replacement writes to the same stream at the same level with
the same filters, in the same place of the handler list; its format is the
manager's JSON with ``format="json"``, else the replaced handler's own formatter
(so the console looks as the application configured it). Once every handler up
a logger's chain is aiologship's, calls through ``aiologship.Logger`` take the
fast path (``_queue.direct_sinks``); a record that still reaches a foreign
handler (a ``FileHandler``, pytest's ``caplog``) takes the stdlib path.

Only plain ``StreamHandler`` s are replaced: a subclass that changes ``emit``,
``handle`` or ``format``, a ``FileHandler``, a handler whose stream is closed or
whose ``terminator`` is not a newline is left alone (it does something a stream
sink would not). Restoring puts each original back where its replacement is; a
replacement someone removed meanwhile (a later ``dictConfig``) is not undone.
"""

from __future__ import annotations

import logging

from .._config import Capture, LogFormat, ManagerConfig
from .._exceptions import ConfigError
from ._console import ColorFormatter, wants_color
from ._formatting import make_formatter
from ._queue import SinkHandler
from ._sinks import FileSinks
from ._streams import check_stream


def replaceable(handler: logging.Handler) -> bool:
    cls = type(handler)
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    if (
        cls.emit is not logging.StreamHandler.emit
        or cls.handle is not logging.Handler.handle
        or cls.format is not logging.Handler.format
        or handler.terminator != "\n"
    ):
        return False
    try:
        check_stream(handler.stream)
    except ConfigError:
        return False
    return True


class ProcessCapture:
    """The replacements one manager made; ``restore()`` undoes them (idempotent)."""

    def __init__(self, config: ManagerConfig, sinks: FileSinks) -> None:
        self._config = config
        self._sinks = sinks
        # (logger, original, replacement's sink id, replacement), in the order made.
        self._replaced: list[tuple[logging.Logger, logging.Handler, int, SinkHandler]] = []

    def __len__(self) -> int:
        return len(self._replaced)

    def start(self) -> None:
        mode = self._config.capture
        if mode is Capture.NONE:
            return
        loggers = [logging.getLogger()]
        if mode is Capture.ALL:
            with logging._lock:  # type: ignore[attr-defined]
                existing = list(logging.Logger.manager.loggerDict.values())
            loggers += [lg for lg in existing if isinstance(lg, logging.Logger)]
        try:
            for std in loggers:
                for original in list(std.handlers):
                    if replaceable(original):
                        self._replace(std, original)  # type: ignore[arg-type]
        except BaseException:
            self.restore()
            raise

    def _replace(self, std: logging.Logger, original: logging.StreamHandler) -> None:  # type: ignore[type-arg]
        config = self._config
        stream = original.stream
        formatter: logging.Formatter
        if config.format is LogFormat.JSON:
            formatter = make_formatter(json=True, fmt=None, tz=config.timezone)
        elif original.formatter is not None:
            formatter = original.formatter
        else:
            formatter = make_formatter(json=False, fmt=config.fmt, tz=config.timezone)
            if wants_color(stream):
                formatter = ColorFormatter(formatter)
        # Not under logging's lock: FileSinks takes its own lock, then logging's.
        position = std.handlers.index(original)
        sink_id, handler = self._sinks.attach_stream(
            std, stream, formatter, original.level, position=position, filters=original.filters
        )
        std.removeHandler(original)
        self._replaced.append((std, original, sink_id, handler))

    def restore(self) -> None:
        """Put every original back in its replacement's place, newest first."""
        replaced, self._replaced = self._replaced, []
        for std, original, sink_id, handler in reversed(replaced):
            with logging._lock:  # type: ignore[attr-defined]
                handlers = std.handlers
                if handler in handlers and original not in handlers:
                    handlers[handlers.index(handler)] = original
            try:
                self._sinks.remove(sink_id, drain=False)
            except ConfigError:
                pass  # already removed with the manager's other sinks
