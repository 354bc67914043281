"""A faster ``LogRecord`` construction for calls made through ``aiologship.Logger``.

``logging.Logger._log`` walks the stack in ``findCaller`` and ``LogRecord.__init__``
splits the path on every call; together they are about half of what a log call
costs. Here the caller's frame is taken at a known depth and the path split is
cached per code file. The record is a plain ``logging.LogRecord`` with the same
attributes as the stdlib's (``tests/logging/test_records.py`` compares them field by
field); anything unusual (a custom record factory or ``makeRecord``, ``stack_info``,
``stacklevel``) goes through the stdlib path instead.

``capture`` + ``build`` split the same work in two: the caller captures its
context into a flat tuple, the pump thread builds the record from it (see
``capture`` for why).
"""

from __future__ import annotations

import collections.abc
import copy
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
_threads: dict[int, Any] = threading._active  # type: ignore[attr-defined]
_time = time.time
_start_time: float = logging._startTime  # type: ignore[attr-defined]
_level_names: dict[int, str] = logging._levelToName
_paths: dict[str, tuple[str, str]] = {}
_TASK_NAME = sys.version_info >= (3, 12)
_pid = os.getpid()
_modules = sys.modules


def _reset_pid() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_reset_pid)


# Values of these types cannot change after the call, so a record built or
# formatted later on the pump prints what the caller meant, and a tuple of them is
# untracked by the garbage collector (see ``capture``).
IMMUTABLE = frozenset({str, int, float, bool, type(None), bytes, complex})


def all_immutable(values: collections.abc.Iterable[Any]) -> bool:
    # A loop, not all(<generator>): this runs on every log call.
    for value in values:  # noqa: SIM110
        if type(value) not in IMMUTABLE:
            return False
    return True


def snapshot(value: Any) -> Any:
    """``value`` as it is now: itself when immutable, else a deep copy; its
    ``repr`` when it cannot be copied (a lock, a socket...), never an error."""
    if type(value) in IMMUTABLE:
        return value
    try:
        return copy.deepcopy(value)
    except Exception:
        return safe_repr(value)


def safe_repr(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"


# How many attributes a record made by the stdlib has: one with more carries
# ``extra=`` fields (or a formatter's ``message``), which snapshot_extras checks.
_PLAIN_SIZE = len(vars(logging.LogRecord("", 0, "", 0, "", (), None)))


def snapshot_extras(d: dict[str, Any]) -> None:
    """Replace each mutable ``extra=`` value of a record's ``__dict__`` by its
    ``snapshot``: the record is formatted later, on the pump."""
    if len(d) > _PLAIN_SIZE:
        for key, value in d.items():
            if type(value) not in IMMUTABLE and key not in RESERVED:
                d[key] = snapshot(value)  # an existing key: the dict keeps its size


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
    fields: tuple[tuple[str, Any], ...] = (),
) -> logging.LogRecord:
    """The record ``logging.Logger.makeRecord`` would make, with the merged context
    ``fields`` (checked at bind time) and then ``extra=`` (checked here as the
    stdlib does: ``KeyError`` on a record attribute) on top. Mutable ``extra``
    values are copied now: the record may be formatted later, on the pump."""
    if args and len(args) == 1 and isinstance(args[0], collections.abc.Mapping) and args[0]:
        args = args[0]
    if exc_info:
        if isinstance(exc_info, BaseException):
            exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
        elif not isinstance(exc_info, tuple):
            exc_info = sys.exc_info()
    record = build(capture(0, logger, level, msg, args, frame), exc_info)
    d = record.__dict__
    if extra is not None:
        for key in extra:
            if key in ("message", "asctime") or key in d:
                raise KeyError(f"Attempt to overwrite {key!r} in LogRecord")
    if fields:
        d.update(fields)
    if extra is not None:
        for key in extra:
            value = extra[key]
            d[key] = value if type(value) in IMMUTABLE else snapshot(value)
    return record


# The groups of a log call's context that ``capture`` collects only for a sink
# that prints them (``_formatting.needs_of``; ``RecordQueue.needs`` ORs a
# manager's sinks): each costs 0.1-0.5 µs of the caller's time.
WHERE = 1  # pathname, filename, module, lineno, funcName
THREAD = 2  # thread, threadName
PROCESS = 4  # process, processName
TASK = 8  # taskName (3.12+)
EVERYTHING = WHERE | THREAD | PROCESS | TASK
NEEDS: dict[str, int] = {
    "pathname": WHERE, "filename": WHERE, "module": WHERE, "lineno": WHERE,
    "funcName": WHERE, "thread": THREAD, "threadName": THREAD, "process": PROCESS,
    "processName": PROCESS, "taskName": TASK,
}  # fmt: skip
# What logging.Logger.findCaller gives when it finds no caller frame.
_UNKNOWN_FILE = "(unknown file)"
_UNKNOWN_FUNCTION = "(unknown function)"


def capture(
    index: int,
    logger: logging.Logger,
    level: int,
    msg: str,
    args: tuple[Any, ...],
    frame: FrameType,
    extra: tuple[tuple[str, Any], ...] | None = None,
    needs: int = EVERYTHING,
) -> tuple[Any, ...]:
    """A log call as one flat tuple of str/int/float/None (and ``args``): what the
    queue holds instead of a ``LogRecord`` when the call reaches only aiologship
    sinks. ``build`` makes the record on the pump thread.

    Why: a ``LogRecord`` and its ``__dict__`` are garbage-collector containers that
    live as long as they wait in the queue, so a busy queue promotes hundreds of
    thousands of them to the oldest generation and sets off full collections
    (~18% of a burst's time, measured). The collector untracks a tuple of atomic
    values the first time it sees it: a queue of these costs it nothing.

    ``index`` is the sink's number in its ``RecordQueue`` (``item[0]``); ``extra``
    the caller's ``extra=`` as ``(key, value)`` pairs, none of them a record
    attribute (see ``RESERVED``). The fields after ``args`` are what
    ``LogRecord.__init__`` reads from the caller's context: created, pathname,
    lineno, funcName, thread, threadName, processName, process, taskName.

    ``needs`` names the groups of those (``WHERE``, ``THREAD``, ``PROCESS``,
    ``TASK``) that some sink prints; a group left out gets the values the stdlib
    itself gives when it does not collect it (``findCaller`` finding no frame,
    ``logThreads = False``...): that saves most of this function's time when the
    formats print only the time, level, name and message.
    """
    if not needs:  # the usual formats; the same tuple as below, in one step
        return (
            index, logger.name, level, msg, args, _time(), _UNKNOWN_FILE, 0,
            _UNKNOWN_FUNCTION, None, None, None, None, None, extra,
        )  # fmt: skip
    pathname = _UNKNOWN_FILE
    lineno = 0
    func_name = _UNKNOWN_FUNCTION
    if needs & WHERE:
        code = frame.f_code
        pathname = code.co_filename
        func_name = code.co_name
        key = (id(code), frame.f_lasti)
        hit = _lines.get(key)
        lineno = hit[1] if hit is not None and hit[0] is code else _lineno(frame, code, key)
    thread: int | None = None
    thread_name: str | None = None
    if needs & THREAD and logging.logThreads:
        thread = ident = _get_ident()
        try:
            # current_thread().name without its second get_ident() and the
            # property: 0.09 against 0.35 µs (3.11); a thread threading does not
            # know (a foreign one) gets current_thread()'s dummy, as the stdlib.
            thread_name = _threads[ident]._name
        except (KeyError, AttributeError):
            thread_name = _current_thread().name
    process_name: str | None = None
    pid: int | None = None
    if needs & PROCESS:
        if logging.logProcesses:
            pid = _pid
        if logging.logMultiprocessing:
            process_name = "MainProcess"
            mp = _modules.get("multiprocessing")
            if mp is not None:
                try:
                    process_name = mp.current_process().name
                except Exception:
                    pass
    task_name: str | None = None
    if needs & TASK and _TASK_NAME and logging.logAsyncioTasks:  # type: ignore[attr-defined]
        task_name = _task_name()
    return (
        index,
        logger.name,
        level,
        msg,
        args,
        _time(),
        pathname,
        lineno,
        func_name,
        thread,
        thread_name,
        process_name,
        pid,
        task_name,
        extra,
    )


def _task_name() -> str | None:
    asyncio = _modules.get("asyncio")
    if asyncio is not None:
        try:
            return asyncio.current_task().get_name()  # type: ignore[no-any-return]
        except Exception:
            pass
    return None


# ``frame.f_lineno`` decodes the code's line table on every read (0.4 µs, about a
# tenth of a log call, measured on 3.11); a call site's line is fixed by its code
# object and instruction offset. Keyed on ``id(code)`` (hashing a code object
# hashes its contents); the entry holds the code object, so the id cannot be
# reused while the entry lives, and ``is`` tells a stale entry. Cleared when full.
_LINES_LIMIT = 8192
_lines: dict[tuple[int, int], tuple[Any, int]] = {}


def _lineno(frame: FrameType, code: Any, key: tuple[int, int]) -> int:
    """The line of a call site ``capture`` has not seen (its hits are inline)."""
    lineno = frame.f_lineno
    if frame.f_trace is not None:
        return lineno  # a tracer (a debugger) may have set f_lineno itself
    if len(_lines) >= _LINES_LIMIT:
        _lines.clear()
    _lines[key] = (code, lineno)
    return lineno


def path_names(pathname: str) -> tuple[str, str]:
    """``(filename, module)`` of a source path, as ``LogRecord`` has them; cached."""
    names = _paths.get(pathname)
    if names is None:
        filename = os.path.basename(pathname)
        names = _paths[pathname] = (filename, os.path.splitext(filename)[0])
    return names


def build(item: tuple[Any, ...], exc_info: Any = None) -> logging.LogRecord:
    """The ``LogRecord`` of a ``capture``d call, equal to the stdlib's."""
    (
        _, name, level, msg, args, ct, pathname, lineno, func_name,
        thread, thread_name, process_name, pid, task_name, extra,
    ) = item  # fmt: skip
    names = _paths.get(pathname) or path_names(pathname)
    # One dict display instead of twenty attribute stores: same keys, same order
    # as LogRecord.__init__ (tests/logging/test_records.py compares them).
    d = {
        "name": name,
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
        "lineno": lineno,
        "funcName": func_name,
        "created": ct,
        "msecs": int((ct - int(ct)) * 1000) + 0.0,
        "relativeCreated": (ct - _start_time) * 1000,
        "thread": thread,
        "threadName": thread_name,
        "processName": process_name,
        "process": pid,
    }
    if _TASK_NAME:
        d["taskName"] = task_name
    if extra:
        d.update(extra)
    record: logging.LogRecord = _new(_LogRecord)
    record.__dict__ = d
    return record


# What ``extra=`` may not set (``logging.Logger.makeRecord`` raises KeyError).
RESERVED = frozenset(
    {
        "name", "msg", "args", "levelname", "levelno", "pathname", "filename", "module",
        "exc_info", "exc_text", "stack_info", "lineno", "funcName", "created", "msecs",
        "relativeCreated", "thread", "threadName", "processName", "process", "taskName",
        "message", "asctime",
    }
)  # fmt: skip
