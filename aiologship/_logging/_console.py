"""The console: when to colour a stream sink, and the formatter that colours by level.

``wants_color`` decides once, when the sink is added, in the order CPython 3.13's
own traceback colouring uses (``Lib/_colorize.py``, ``can_colorize``): a non-empty
``NO_COLOR`` turns colour off (https://no-color.org), then a non-empty
``FORCE_COLOR`` turns it on, then ``TERM=dumb`` turns it off; otherwise only a
terminal (``isatty``) is coloured, never a pipe, a file or a socket.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import IO

# SGR sequences (ECMA-48): the level name in colour, the line left alone.
RESET = "\x1b[0m"
LEVEL_COLORS: Mapping[int, str] = {
    logging.DEBUG: "\x1b[36m",  # cyan
    logging.INFO: "\x1b[32m",  # green
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[1;31m",  # bold red
}


def wants_color(target: IO[str] | int, environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    if env.get("NO_COLOR"):
        return False
    if env.get("FORCE_COLOR"):
        return True
    if env.get("TERM") == "dumb":
        return False
    try:
        fd = target if isinstance(target, int) else target.fileno()
        return os.isatty(fd)
    except (AttributeError, OSError, ValueError):
        return False  # no descriptor (io.StringIO, pytest's capsys): not a terminal


def _color_of(level: int) -> str:
    color = LEVEL_COLORS.get(level)
    if color is None:  # a custom level: the colour of the standard level below it
        below = [lvl for lvl in LEVEL_COLORS if lvl <= level]
        color = LEVEL_COLORS[max(below)] if below else ""
    return color


class ColorFormatter(logging.Formatter):
    """Wraps a text formatter: its ``%(levelname)s`` is coloured by level (the
    whole line when the format has no level name). Runs on the pump thread."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner
        self._names = "levelname" in (getattr(inner._style, "_fmt", "") or "")
        self._cache: dict[tuple[int, str], str] = {}

    def format(self, record: logging.LogRecord) -> str:
        level, name = record.levelno, record.levelname
        if not self._names:
            return _color_of(level) + self.inner.format(record) + RESET
        colored = self._cache.get((level, name))
        if colored is None:
            colored = self._cache[(level, name)] = _color_of(level) + name + RESET
        # The record may go to other sinks as well: lend it the coloured name for
        # this one call only.
        record.levelname = colored
        try:
            return self.inner.format(record)
        finally:
            record.levelname = name
