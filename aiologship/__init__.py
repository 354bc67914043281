"""aiologship: asyncio-native logging, and log files shipped to HDFS once per byte."""

from __future__ import annotations

from ._config import HdfsDriver, LogFormat, Overflow, Rotation
from ._exceptions import (
    AiologshipError,
    ClosedError,
    ConfigError,
    CopyConflictError,
    CopyError,
    DestinationError,
)
from ._logging._context import bind_context, context, get_context, unbind_context
from ._logging._logger import Logger
from ._logging._queue import Stats
from ._manager import LogManager
from ._operation import CopyOperation
from ._stdlib import AsyncFileHandler

__version__ = "0.1.0"

__all__ = [
    "AiologshipError",
    "AsyncFileHandler",
    "ClosedError",
    "ConfigError",
    "CopyConflictError",
    "CopyError",
    "CopyOperation",
    "DestinationError",
    "HdfsDriver",
    "LogFormat",
    "LogManager",
    "Logger",
    "Overflow",
    "Rotation",
    "Stats",
    "__version__",
    "bind_context",
    "context",
    "get_context",
    "unbind_context",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and _name != "__version__":
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):
            pass
del _name, _obj
