# The optional C module (_speedups.c); _queue falls back to Python without it.
import logging
from collections.abc import Callable
from types import ModuleType
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

class CompiledText:
    def __init__(
        self,
        segments: tuple[str | int | tuple[str], ...],
        clock: object,
        millis: tuple[str, ...],
        level_names: dict[int, str],
        get_level_name: Callable[[int], Any],
        not_here: type[Exception],
        /,
    ) -> None: ...
    def __call__(self, item: tuple[Any, ...], /) -> str: ...

def log(
    adapter: logging.LoggerAdapter[Any],
    level: int,
    msg: object,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    /,
) -> bool: ...
def configure_logger(
    context_var: Any,
    context_module: ModuleType,
    plain_loggers: dict[type, bool],
    classify_logger: Callable[[type], bool],
    logging_module: ModuleType,
    log_record: type[logging.LogRecord],
    /,
) -> None: ...

API: int
