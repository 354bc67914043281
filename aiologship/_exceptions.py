"""The errors aiologship raises.

::

    AiologshipError                 base of everything below
    ├── ConfigError                 bad configuration: a key, its value and why
    ├── ClosedError                 an operation on a closed LogManager
    ├── DestinationError            a destination URI or filesystem failed (URI redacted)
    └── CopyError                   a copy operation cannot be started or run
        └── CopyConflictError       copy_name already used with other parameters

Errors of pyarrow, hdfs-native and Ray are mapped to these at the boundary
(``raise DestinationError(...) from exc``) so callers catch one family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


class AiologshipError(Exception):
    """Base class of every error raised by aiologship."""


class ConfigError(AiologshipError, ValueError):
    """Raised by the configuration layer, ``LogManager`` and ``start_hdfs_copy``
    when a setting is invalid, and by ``aiologship.context`` / ``bind_context`` /
    ``Logger.bind`` for a field name that is no ``str`` or shadows a ``LogRecord``
    attribute (``key`` is then ``"context field"``, ``value`` the name).

    Carries the offending ``key``, its ``value`` and a ``reason``; for settings read
    from a file, its ``path`` and ``line`` (1-based) when known.
    """

    def __init__(
        self,
        key: str,
        value: Any,
        reason: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
    ) -> None:
        self.key = key
        self.value = value
        self.reason = reason
        self.path = None if path is None else str(path)
        self.line = line
        where = ""
        if self.path is not None:
            where = f" in {self.path}" + (f", line {line}" if line is not None else "")
        shown = _short_repr(value)
        super().__init__(f"invalid {key}={shown}{where}: {reason}")

    def __reduce__(self) -> Any:
        # Crosses process boundaries (Ray tasks, multiprocessing) as itself. The
        # value goes as its repr: it may not be picklable.
        return (
            _rebuild_config_error,
            (self.key, _short_repr(self.value), self.reason, self.path, self.line, str(self)),
        )


class ClosedError(AiologshipError, RuntimeError):
    """Raised by ``LogManager`` methods that start work after ``close()``."""


class DestinationError(AiologshipError):
    """Raised by the destination layer when a URI cannot be resolved or its
    filesystem fails. ``uri`` is always redacted (no password or token)."""

    def __init__(self, uri: str, reason: str) -> None:
        self.uri = uri
        self.reason = reason
        super().__init__(f"destination {uri}: {reason}")

    def __reduce__(self) -> Any:
        return (type(self), (self.uri, self.reason))


class CopyError(AiologshipError):
    """Raised by the copy engine when an operation cannot start or run."""


class CopyConflictError(CopyError):
    """Raised by ``start_hdfs_copy`` when ``copy_name`` is already running with
    different parameters. ``differences`` maps each differing parameter to
    ``(running, requested)``."""

    def __init__(self, copy_name: str, differences: dict[str, tuple[Any, Any]]) -> None:
        self.copy_name = copy_name
        self.differences = differences
        diff = ", ".join(f"{k}: {a!r} != {b!r}" for k, (a, b) in sorted(differences.items()))
        super().__init__(
            f"copy operation {copy_name!r} is already running with other parameters ({diff})"
        )

    def __reduce__(self) -> Any:
        return (type(self), (self.copy_name, self.differences))


def _rebuild_config_error(
    key: str, value: Any, reason: str, path: str | None, line: int | None, message: str
) -> ConfigError:
    error = ConfigError.__new__(ConfigError)
    Exception.__init__(error, message)
    error.key, error.value, error.reason, error.path, error.line = key, value, reason, path, line
    return error


def _short_repr(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
