"""A faster ``LogRecord`` construction for calls made through ``aiologship.Logger``.

``logging.Logger._log`` walks the stack in ``findCaller`` and ``LogRecord.__init__``
splits the path on every call; together they are about half of what a log call
costs. Here the caller's frame is taken at a known depth and the path split is
cached per code file. The record is a plain ``logging.LogRecord`` with the same
attributes as the stdlib's (``tests/test_records.py`` compares them field by
field); anything unusual (a custom record factory or ``makeRecord``, ``stack_info``,
``stacklevel``) goes through the stdlib path instead.
"""

from __future__ import annotations

import collections.abc
import logging
import os
import sys
import threading
import time
from types import FrameType
from typing import Any

_LogRecord = logging.LogRecord
_new = object.__new__
_get_ident = threading.get_ident
_current_thread = threading.current_thread
_time = time.time
_start_time: float = logging._startTime  # type: ignore[attr-defined]
_level_names: dict[int, str] = logging._levelToName
_paths: dict[str, tuple[str, str]] = {}
_TASK_NAME = sys.version_info >= (3, 12)
_pid = os.getpid()


def _reset_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reset_pid)


_fast_types: dict[type, bool] = {}


def fast_path_ok(logger: logging.Logger) -> bool:
    """True when the stdlib would build exactly the record ``make_record`` builds."""
    cls = type(logger)
    ok = _fast_types.get(cls)
    if ok is None:
        ok = _fast_types[cls] = cls.makeRecord is logging.Logger.makeRecord
    return (
        ok
        and logging._logRecordFactory is _LogRecord  # type: ignore[attr-defined]
        and logging._srcfile is not None
    )


def make_record(
    logger: logging.Logger,
    level: int,
    msg: Any,
    args: Any,
    frame: FrameType,
    exc_info: Any,
    extra: collections.abc.Mapping[str, Any] | None,
) -> logging.LogRecord:
    ct = _time()
    code = frame.f_code
    pathname = code.co_filename
    names = _paths.get(pathname)
    if names is None:
        filename = os.path.basename(pathname)
        names = _paths[pathname] = (filename, os.path.splitext(filename)[0])
    if args and len(args) == 1 and isinstance(args[0], collections.abc.Mapping) and args[0]:
        args = args[0]
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
    if logging.logThreads:
        thread: int | None = _get_ident()
        thread_name: str | None = _current_thread().name
    else:
        thread = thread_name = None
    process_name: str | None = None
    if logging.logMultiprocessing:
        process_name = "MainProcess"
        mp = sys.modules.get("multiprocessing")
        if mp is not None:
            try:
                process_name = mp.current_process().name
            except Exception:
                pass
    # One dict display instead of twenty attribute stores: same keys, same order
    # as LogRecord.__init__ (tests/test_records.py compares them).
    d = {
        "name": logger.name,
        "msg": msg,
        "args": args,
        "levelname": _level_names.get(level) or logging.getLevelName(level),
        "levelno": level,
        "pathname": pathname,
        "filename": names[0],
        "module": names[1],
        "exc_info": exc_info,
        "exc_text": None,
        "stack_info": None,
        "lineno": frame.f_lineno,
        "funcName": code.co_name,
        "created": ct,
        "msecs": int((ct - int(ct)) * 1000) + 0.0,
        "relativeCreated": (ct - _start_time) * 1000,
        "thread": thread,
        "threadName": thread_name,
        "processName": process_name,
        "process": _pid if logging.logProcesses else None,
    }
    if _TASK_NAME:
        d["taskName"] = None
        if getattr(logging, "logAsyncioTasks", False):
            asyncio = sys.modules.get("asyncio")
            if asyncio is not None:
                try:
                    d["taskName"] = asyncio.current_task().get_name()
                except Exception:
                    pass
    record: logging.LogRecord = _new(_LogRecord)
    record.__dict__ = d
    if extra is not None:
        for key in extra:
            if key in ("message", "asctime") or key in d:
                raise KeyError(f"Attempt to overwrite {key!r} in LogRecord")
            d[key] = extra[key]
    return record
