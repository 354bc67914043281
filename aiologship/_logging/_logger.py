"""The logger users hold: a stdlib logger plus ``add``/``remove`` for file sinks."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from datetime import timedelta
from logging import CRITICAL, DEBUG, ERROR, INFO, WARNING
from typing import IO, Any, Protocol

from . import _context, _records
from ._accel import speedups
from ._context import Pairs, merge_pairs, snapshot, snapshot_pairs, source_pairs
from ._queue import emit_captured
from ._records import RESERVED, all_immutable, fast_path_ok, make_record

_current_fields = _context.current

# Logger classes whose isEnabledFor and makeRecord are the stdlib's: the C level
# methods (_fast) read the first's cache and skip the second.
_plain_loggers: dict[type, bool] = {}


def _classify_logger(cls: type) -> bool:
    plain = _plain_loggers[cls] = (
        getattr(cls, "makeRecord", None) is logging.Logger.makeRecord
        and getattr(cls, "isEnabledFor", None) is logging.Logger.isEnabledFor
    )
    return plain


# speedups.log(adapter, level, msg, args, kwargs): a level method's whole call in C
# when nothing needs the Python path below (see _speedups.c); False otherwise.
_fast = None
if speedups is not None:
    speedups.configure_logger(
        _context._current, _context, _plain_loggers, _classify_logger, logging, _records._LogRecord
    )
    _fast = speedups.log


class SinkRegistry(Protocol):
    """What a :class:`Logger` needs of its manager: attach and detach file sinks.
    ``LogManager`` is one; the logger never imports the manager (it sits above)."""

    def add_sink(
        self,
        logger_name: str,
        path: str | os.PathLike[str] | IO[str] | int,
        *,
        level: int | str = ...,
        fmt: str | None = ...,
        json: bool | None = ...,
        rotation: int | str | timedelta | None = ...,
        retention: int | None = ...,
        color: bool | None = ...,
    ) -> int: ...

    def remove_sink(self, sink_id: int) -> None: ...


def _plain_extra(extra: Any) -> bool:
    """``extra=`` that can travel in a captured call: a dict of immutable values
    whose keys are no record attribute (those raise KeyError on the stdlib path)."""
    if type(extra) is not dict:
        return False
    for key in extra:
        if type(key) is not str or key in RESERVED:
            return False
    return all_immutable(extra.values())


def _stdlib_extra(fields: Pairs, extra: Any) -> dict[str, Any] | None:
    """What ``logging.Logger._log`` gets as ``extra=``: the merged fields, then the
    caller's ``extra=`` (which wins a clash), each mutable value snapshotted."""
    if extra is None:
        return dict(fields) if fields else None
    merged = dict(fields)
    for key in extra:
        merged[key] = snapshot(extra[key])
    return merged


class Logger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """Wraps ``logging.getLogger(name)``: every stdlib method works as usual
    (``info``, ``exception``, ``exc_info=``, ``stack_info=``, ``extra=``,
    ``isEnabledFor``), and records reach the stdlib handlers and pytest's caplog.

    ``add()`` attaches an aiologship file sink to this logger; ``remove()`` detaches it.
    ``bind()`` returns a logger whose records all carry some fixed fields.

    Every record carries, lowest precedence first: the automatic fields of the
    sources (``_context.add_source``), the bound context (``aiologship.context``),
    this logger's ``bind()`` fields, the call's ``extra=``.
    """

    def __init__(self, logger: logging.Logger, manager: SinkRegistry) -> None:
        super().__init__(logger, None)
        self._log_manager = manager
        self._fields: Pairs = ()

    def bind(self, **fields: Any) -> Logger:
        """A logger over the same stdlib logger (same level, handlers and sinks;
        ``add``/``remove`` work as on this one) whose records also carry
        ``fields``, on top of this logger's own. A field named like a ``LogRecord``
        attribute raises ``ConfigError`` here, not at the log call."""
        bound = Logger(self.logger, self._log_manager)
        bound._fields = merge_pairs(self._fields, fields)
        return bound

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        # LoggerAdapter replaces the caller's extra= with its own; keep the caller's.
        return msg, kwargs

    # The level methods call _emit directly (not through LoggerAdapter.log) so the
    # caller is always exactly two frames above _emit (and one above the level
    # method, where the C version, _fast, finds it).
    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if _fast is not None and _fast(self, DEBUG, msg, args, kwargs):
            return
        if self.logger.isEnabledFor(DEBUG):
            self._emit(DEBUG, msg, args, kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if _fast is not None and _fast(self, INFO, msg, args, kwargs):
            return
        if self.logger.isEnabledFor(INFO):
            self._emit(INFO, msg, args, kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if _fast is not None and _fast(self, WARNING, msg, args, kwargs):
            return
        if self.logger.isEnabledFor(WARNING):
            self._emit(WARNING, msg, args, kwargs)

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if _fast is not None and _fast(self, ERROR, msg, args, kwargs):
            return
        if self.logger.isEnabledFor(ERROR):
            self._emit(ERROR, msg, args, kwargs)

    def exception(self, msg: Any, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        if self.logger.isEnabledFor(ERROR):
            kwargs["exc_info"] = exc_info
            self._emit(ERROR, msg, args, kwargs)

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        if _fast is not None and _fast(self, CRITICAL, msg, args, kwargs):
            return
        if self.logger.isEnabledFor(CRITICAL):
            self._emit(CRITICAL, msg, args, kwargs)

    fatal = critical

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        if not isinstance(level, int):
            if logging.raiseExceptions:
                raise TypeError("level must be an integer")
            return
        if self.logger.isEnabledFor(level):
            self._emit(level, msg, args, kwargs)

    def _emit(self, level: int, msg: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        logger = self.logger
        exc_info = extra = None
        stack_info = False
        stacklevel = 1
        if kwargs:
            exc_info = kwargs.pop("exc_info", None)
            extra = kwargs.pop("extra", None)
            stack_info = kwargs.pop("stack_info", False)
            stacklevel = kwargs.pop("stacklevel", 1)
            if kwargs:
                raise TypeError(f"unexpected keyword arguments: {', '.join(kwargs)}")
        # The merged fields, lowest precedence first (a later pair wins in the
        # record's dict). With nothing bound this is a ContextVar.get and three tests.
        fields = _current_fields()
        frozen = type(fields) is tuple
        if not frozen:
            fields = snapshot_pairs(fields)
        if _context._sources:
            sole = _context._sole
            pairs = sole() if sole is not None else source_pairs()
            if pairs:
                fields = pairs + fields
        own = self._fields
        if own:
            if type(own) is not tuple:
                own = snapshot_pairs(own)
                frozen = False
            fields = fields + own
        if stack_info or stacklevel != 1 or not fast_path_ok(logger):
            # findCaller skips stdlib frames only; ours are _emit and the level method.
            logger._log(
                level, msg, args, exc_info=exc_info, extra=_stdlib_extra(fields, extra),
                stack_info=stack_info, stacklevel=stacklevel + 2,
            )  # fmt: skip
            return
        if (
            frozen
            and exc_info is None
            and type(msg) is str
            and (extra is None or _plain_extra(extra))
            and emit_captured(logger, level, msg, args, fields, extra)
        ):
            return
        record = make_record(logger, level, msg, args, sys._getframe(2), exc_info, extra, fields)
        logger.handle(record)

    def add(
        self,
        sink: str | os.PathLike[str] | IO[str] | int,
        *,
        level: int | str = logging.NOTSET,
        fmt: str | None = None,
        json: bool | None = None,
        rotation: int | str | timedelta | None = None,
        retention: int | None = None,
        color: bool | None = None,
    ) -> int:
        """Attach a sink: a file path, a text stream (``sys.stdout``, ``sys.stderr``)
        or a file descriptor; returns its id for ``remove()``.

        ``json=True`` writes one JSON object per line (``None``: the manager's
        format); ``fmt`` is a ``%``-style text format. Files: ``rotation`` is a size
        (``10_000_000``, ``"10 MB"``) or an interval (``"1 hour"``, ``timedelta``);
        ``retention`` keeps that many rotated files; the parent folder is created.
        Streams: the object given is the one written to (as ``StreamHandler``
        does); text is coloured by level on a terminal (``color=None``, honouring
        ``NO_COLOR`` and ``FORCE_COLOR``), ``color=True``/``False`` decides.
        """
        return self._log_manager.add_sink(
            self.logger.name if self.logger.name != "root" else "",
            sink,
            level=level,
            fmt=fmt,
            json=json,
            rotation=rotation,
            retention=retention,
            color=color,
        )

    def remove(self, sink_id: int) -> None:
        """Detach a sink added by ``add()`` after its queued records are written."""
        self._log_manager.remove_sink(sink_id)

    def __repr__(self) -> str:
        level = logging.getLevelName(self.logger.getEffectiveLevel())
        bound = "".join(f" {key}={value!r}" for key, value in self._fields)
        return f"<aiologship.Logger {self.logger.name} ({level}){bound}>"
