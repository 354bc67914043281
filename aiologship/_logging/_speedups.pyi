# The optional C module (_speedups.c); _queue falls back to Python without it.
import logging
from collections.abc import Callable
from typing import Any

from ._queue import SinkHandler

def emit_captured(
    logger: logging.Logger,
    level: int,
    msg: str,
    args: tuple[Any, ...],
    fields: tuple[tuple[str, Any], ...],
    extra: dict[str, Any] | None,
    /,
) -> bool: ...
def direct_sinks(logger: logging.Logger, level: int, /) -> list[SinkHandler] | None: ...
def configure(
    cache: dict[type, bool],
    classify: Callable[[type], bool],
    capture: Callable[..., tuple[Any, ...]],
    time: Callable[[], float],
    /,
) -> None: ...
