"""Text and JSON formatters with timezone-aware ISO-8601 timestamps.

Both run on the pump thread, once per record; the timestamp's date-and-offset
part is cached per second because ``datetime.fromtimestamp(..., tz)`` costs more
than the rest of a short text line.
"""

from __future__ import annotations

import copy
import functools
import json
import logging
import re
import sys
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

try:  # the [fast] extra: JSON lines through orjson, compact (see _make_encoder)
    import orjson as _orjson
except ImportError:
    _orjson = None  # type: ignore[assignment]

from .._config import DEFAULT_TEXT_FORMAT
from . import _records
from ._accel import speedups
from ._records import RESERVED, safe_repr

_MILLIS = tuple(f".{ms:03d}" for ms in range(1000))

# What a text format prints for a field the record does not have (a context field
# not bound for this record): "-", as in the common log format, so columns stay
# aligned and a grep for the field still finds the line.
MISSING = "-"
# logging.PercentStyle's own field pattern.
_FIELD = re.compile(r"%\((\w+)\)[#0+ -]*(\*|\d+)?(\.(\*|\d+))?[diouxefgcrsa%]", re.I)


class _Defaulted(dict):  # type: ignore[type-arg]
    """A record's ``__dict__`` copy in which an absent field reads as ``MISSING``."""

    def __missing__(self, key: str) -> str:
        return MISSING


def _all_str(fmt: str) -> str:
    """``fmt`` with every field that is no record attribute printed with ``%s``:
    ``MISSING`` has no numeric form, so ``%(count)05d`` cannot print it."""
    return _FIELD.sub(lambda m: m.group(0) if m.group(1) in RESERVED else f"%({m.group(1)})s", fmt)


class _Clock:
    """``record.created`` -> ``2026-11-29T17:43:59.123+08:00`` in one zone."""

    __slots__ = ("_cache", "tz")

    def __init__(self, tz: tzinfo) -> None:
        self.tz = tz
        # (second, "2026-11-29T17:43:59", "+08:00"): one tuple, replaced whole, so a
        # formatter shared by the pump and the after-close path never mixes halves.
        self._cache: tuple[int, str, str] = (-1, "", "")

    def iso(self, created: float, msecs: float) -> str:
        second = int(created)
        cache = self._cache
        if cache[0] != second:
            cache = self._refresh(second)
        return cache[1] + _MILLIS[int(msecs)] + cache[2]

    def _refresh(self, second: int) -> tuple[int, str, str]:
        moment = datetime.fromtimestamp(second, self.tz)
        offset = moment.strftime("%z")
        offset = "Z" if offset in ("+0000", "") else f"{offset[:3]}:{offset[3:]}"
        cache = (second, moment.strftime("%Y-%m-%dT%H:%M:%S"), offset)
        self._cache = cache
        return cache


class TextFormatter(logging.Formatter):
    """``logging.Formatter`` whose ``%(asctime)s`` is ISO-8601 in ``tz``.

    A ``datefmt`` falls back to ``strftime`` in ``tz``.
    """

    def __init__(self, fmt: str | None = None, datefmt: str | None = None, *, tz: tzinfo) -> None:
        super().__init__(fmt or DEFAULT_TEXT_FORMAT, datefmt)
        self._clock = _Clock(tz)
        self._uses_time = self.usesTime()
        self._percent = type(self._style) is logging.PercentStyle
        self._text = self._style._fmt
        self._text_all_str = _all_str(self._text) if self._text else self._text

    def format_captured(self, item: tuple[Any, ...]) -> str | None:
        """The line of a captured call (``_records.capture``) without a
        ``LogRecord``: the format compiled once into a function that computes only
        the fields it names. ``None`` when the record path must decide (a
        ``datefmt``, another style, a field the call lacks, a message that does
        not format): then the pump builds the record. Same text as ``format``
        (a Hypothesis property compares them)."""
        lines = self.captured_lines()
        if lines is None:
            return None
        try:
            line = lines(item)
        except (_NotHere, TypeError, ValueError, KeyError, ArithmeticError):
            return None  # e.g. "%d" of an infinite float: OverflowError
        return line[:-1]

    def captured_lines(self) -> Callable[[tuple[Any, ...]], str] | None:
        """The compiled format: a captured call -> its line, newline included
        (what the pump calls per record; it raises where ``format_captured``
        returns ``None``). ``None`` when this format does not compile."""
        if self._compiled is None and not self._cannot_compile:
            self._compile()
        return self._compiled

    _compiled: Callable[[tuple[Any, ...]], str] | None = None
    _cannot_compile = False

    def _compile(self) -> None:
        if not self._percent or self.datefmt or not self._text:
            self._cannot_compile = True
            return
        self._compiled = _compile_text(self._text, self._clock)
        if self._compiled is None:
            self._cannot_compile = True

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter.format, minus the per-record method calls that only
        # ever give one answer for this formatter (usesTime, style dispatch).
        if not self._percent:
            return super().format(record)
        msg = str(record.msg)
        if record.args:
            msg = msg % record.args
        record.message = msg
        if self._uses_time:
            if self.datefmt:
                record.asctime = self.formatTime(record, self.datefmt)
            else:
                # _Clock.iso inlined: this line runs once per record on the pump.
                cache = self._clock._cache
                if cache[0] != int(record.created):
                    cache = self._clock._refresh(int(record.created))
                record.asctime = cache[1] + _MILLIS[int(record.msecs)] + cache[2]
        try:
            s: str = self._text % record.__dict__
        except KeyError:
            s = self._with_missing(record.__dict__)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + record.exc_text
        if record.stack_info:
            if s[-1:] != "\n":
                s = s + "\n"
            s = s + self.formatStack(record.stack_info)
        return s

    def _with_missing(self, d: dict[str, Any]) -> str:
        """The line of a record that lacks a field of the format: ``MISSING`` in its
        place, never a KeyError on the pump (the record would be lost)."""
        fields = _Defaulted(d)
        try:
            return self._text % fields
        except (TypeError, ValueError):
            return self._text_all_str % fields

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt:
            return datetime.fromtimestamp(record.created, self._clock.tz).strftime(datefmt)
        return self._clock.iso(record.created, record.msecs)


class _NotHere(Exception):
    """A compiled text format's field is not in the captured call."""


# How a compiled text format computes each record attribute from the captured
# tuple's local names (see _compile_text): the expressions of _records.build.
_FROM_ITEM = {
    "name": "name",
    "msg": "msg",
    "args": "args",
    "levelname": "(_level_names.get(level) or _getLevelName(level))",
    "levelno": "level",
    "pathname": "pathname",
    "filename": "_names(pathname)[0]",
    "module": "_names(pathname)[1]",
    "exc_info": "None",
    "exc_text": "None",
    "stack_info": "None",
    "lineno": "lineno",
    "funcName": "func_name",
    "created": "ct",
    "msecs": "(int((ct - int(ct)) * 1000) + 0.0)",
    "relativeCreated": "((ct - _records._start_time) * 1000)",
    "thread": "thread",
    "threadName": "thread_name",
    "processName": "process_name",
    "process": "pid",
    "taskName": "task_name",
    "message": "message",
    "asctime": "asctime",
}


_SPEC = re.compile(r"%%|%\((\w+)\)([#0+ -]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[diouxXeEfFgGcrsa])|%")


# The fields _speedups.CompiledText computes: an index of the captured tuple
# (_records.capture), or one of its own codes. Any other field of _FROM_ITEM
# (filename, msecs...) leaves the format to the Python function.
_C_FIELDS = {
    "name": 1, "levelno": 2, "msg": 3, "args": 4, "created": 5, "pathname": 6, "lineno": 7,
    "funcName": 8, "thread": 9, "threadName": 10, "processName": 11, "process": 12,
    "taskName": 13, "levelname": 100, "message": 101, "asctime": 102,
}  # fmt: skip


def _compile_text(
    text: str, clock: _Clock, *, accel: bool = True
) -> Callable[[tuple[Any, ...]], str] | None:
    """``text`` (a %-style format) as a function of a captured call: each
    ``%(field)spec`` becomes a positional ``%spec`` and the function computes
    just those fields, in order, into one tuple. None for a format that names no
    field (no gain) or a ``taskName`` where records have none (Python 3.11).

    A format of bare ``%s`` fields, all of ``_C_FIELDS`` or context fields, is
    ``_speedups.CompiledText`` when the C module is there (and ``accel``): the
    same text from the same call, or the same exception (``test_speedups.py``)."""
    parts: list[str] = []
    exprs: list[str] = []
    fields: list[str] = []
    plain = True  # every field printed with a bare %s
    pos = 0
    # Left to right as the % operator reads it: "%%" first, then "%(field)spec".
    for m in _SPEC.finditer(text):
        if m.group(0) == "%%":
            continue
        if m.group(1) is None or "*" in m.group(2):
            return None  # a spec without a field, a "*" width: the record path reports it
        field = m.group(1)
        parts.append(text[pos : m.start()])
        parts.append("%" + m.group(2))
        plain = plain and m.group(2) == "s"
        pos = m.end()
        if field == "taskName" and not _records._TASK_NAME:
            return None
        expr = _FROM_ITEM.get(field)
        if expr is None:
            if field in RESERVED:
                return None
            expr = f"_field(extra, {field!r})"
        exprs.append(expr)
        fields.append(field)
    if not exprs:
        return None
    parts.append(text[pos:])
    if plain and accel and speedups is not None:
        compiled_c = _compile_c(parts, fields, clock)
        if compiled_c is not None:
            return compiled_c
    positional = "".join(parts)
    uses_time = "asctime" in exprs
    source = [
        "def compiled(item):",
        "    (_, name, level, msg, args, ct, pathname, lineno, func_name,",
        "     thread, thread_name, process_name, pid, task_name, extra) = item",
    ]
    # Always: format() makes record.message whether the format prints it or not,
    # and a message that does not format is the record path's error to report.
    source.append("    message = msg % args if args else msg")
    if uses_time:
        source += [
            "    second = int(ct)",
            "    cache = _clock._cache",
            "    if cache[0] != second:",
            "        cache = _clock._refresh(second)",
            "    asctime = cache[1] + _MILLIS[int((ct - second) * 1000)] + cache[2]",
        ]
    if plain:
        # An f-string: 0.15 µs less a line than the % operator (3.11), and the
        # same text: "{v!s}" is str(v), as "%s" is.
        body = []
        for i, part in enumerate(parts):
            if i % 2:
                source.append(f"    v{i // 2} = {exprs[i // 2]}")
                body.append(f"{{v{i // 2}!s}}")
            else:
                body.append(part.replace("%%", "%").replace("{", "{{").replace("}", "}}"))
        source.append(f"    return f{''.join(body) + chr(10)!r}")
    else:
        source.append(f"    return {positional + chr(10)!r} % ({', '.join(exprs)},)")
    scope: dict[str, Any] = {
        "_clock": clock,
        "_MILLIS": _MILLIS,
        "_level_names": _records._level_names,
        "_getLevelName": logging.getLevelName,
        "_names": _records.path_names,
        "_records": _records,
        "_field": _extra_field,
    }
    exec("\n".join(source), scope)  # our own source, made from a parsed format
    compiled: Callable[[tuple[Any, ...]], str] = scope["compiled"]
    return compiled


def _compile_c(
    parts: list[str], fields: list[str], clock: _Clock
) -> Callable[[tuple[Any, ...]], str] | None:
    """``_speedups.CompiledText`` of a plain format (``parts``: literal text and
    ``%s`` by turns); None when a field is not one it computes."""
    assert speedups is not None
    segments: list[str | int | tuple[str]] = []
    for i, part in enumerate(parts):
        if not i % 2:
            if part:
                segments.append(part.replace("%%", "%"))
            continue
        field = fields[i // 2]
        if field in _C_FIELDS:
            segments.append(_C_FIELDS[field])
        elif field in _FROM_ITEM:
            return None
        else:
            segments.append((field,))  # a context or extra= field
    compiled: Callable[[tuple[Any, ...]], str] = speedups.CompiledText(
        tuple(segments), clock, _MILLIS, _records._level_names, logging.getLevelName, _NotHere
    )
    return compiled


def _extra_field(extra: tuple[tuple[str, Any], ...] | None, key: str) -> Any:
    """A context or ``extra=`` field of the call; absent: the record path decides."""
    if extra:
        for k, v in reversed(extra):  # the last pair wins, as in d.update(extra)
            if k == key:
                return v
    raise _NotHere(key)


class JsonFormatter(_JsonFormatter):
    """One JSON object per line: ``timestamp`` (ISO-8601 with offset), ``level``,
    ``logger``, ``message``, every ``extra=`` field, and ``exc_info`` /
    ``stack_info`` text when present.

    The record's own fields always win: an ``extra=`` key (or a key of a logged
    dict) named ``timestamp``, ``level`` or ``logger`` does not replace them; its
    value is written under ``extra_<key>`` instead (``extra_extra_<key>`` when the
    caller used that name too, and so on), so nothing vanishes. ``message`` cannot
    clash: the stdlib refuses it in ``extra=``, and a logged dict's ``message`` is
    the message.

    A value JSON cannot encode never costs the record: it is written as its
    ``str()`` when its type defines one (UUID, Decimal, Path, datetime keep their
    usual text), else as its ``repr()``; a structure ``json`` refuses outright (a
    circular list, a dict with tuple keys) is written as its ``repr()``.
    """

    def __init__(self, *, tz: tzinfo) -> None:
        compact = _orjson is not None
        super().__init__(
            "%(message)s",
            json_ensure_ascii=False,
            json_default=_json_default,
            json_serializer=_compact_dumps if compact else json.dumps,
        )
        self._clock = _Clock(tz)
        self._skip = frozenset(self._skip_fields)
        # Whether the record path writes taskName (python-json-logger skips it on
        # the Pythons whose LogRecord has it, from its own attribute list).
        self._task_name = _TASK_NAME and "taskName" not in self._skip
        self._encode = _make_encoder(compact=compact)

    def format(self, record: logging.LogRecord) -> str:
        """python-json-logger's ``format`` for the usual record, in one pass: the
        same keys in the same order (``tests/logging/test_context_records.py``
        compares the two); a dict message or a clash with our own keys takes
        python-json-logger's path."""
        d = record.__dict__
        if type(record.msg) is dict or "timestamp" in d or "level" in d or "logger" in d:
            return super().format(record)
        message = record.getMessage()
        record.message = message
        cache = self._clock._cache  # _Clock.iso inlined, as in TextFormatter.format
        if cache[0] != int(record.created):
            cache = self._clock._refresh(int(record.created))
        log_data: dict[str, Any] = {
            "timestamp": cache[1] + _MILLIS[int(record.msecs)] + cache[2],
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        if record.exc_info:
            log_data["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            log_data["exc_info"] = record.exc_text
        if record.stack_info:
            log_data["stack_info"] = self.formatStack(record.stack_info)
        skip = self._skip
        for key, value in d.items():
            if key not in skip and not key.startswith("_"):
                log_data[key] = value
        try:
            return self._encode(log_data)
        except (TypeError, ValueError, RecursionError):
            return self.jsonify_log_record(log_data)

    def format_captured(self, item: tuple[Any, ...]) -> str | None:
        """``line_captured`` without its newline."""
        line = self.line_captured(item)
        return None if line is None else line[:-1]

    def line_captured(self, item: tuple[Any, ...]) -> str | None:
        """The line ``format(build(item))`` makes, and a newline, from a captured call
        (``_records.capture``) without building its ``LogRecord``: the pump's JSON
        path, where making the record cost a third of the line (measured in
        ``benchmarks/bench_context.py``). ``None`` when this needs the record
        (a field clashing with our keys, a message that does not format): the
        pump then builds it and takes the usual path, errors included.
        ``tests/logging/test_context_records.py`` checks both agree."""
        (
            _, name, level, msg, args, ct, _path, _line, _func,
            _thread, _thread_name, _process_name, _pid, task_name, extra,
        ) = item  # fmt: skip
        try:
            message = msg % args if args else msg
        except Exception:
            return None
        second = int(ct)
        cache = self._clock._cache
        if cache[0] != second:
            cache = self._clock._refresh(second)
        log_data: dict[str, Any] = {
            "timestamp": cache[1] + _MILLIS[int((ct - second) * 1000)] + cache[2],
            "level": _LEVEL_NAMES.get(level) or logging.getLevelName(level),
            "logger": name,
            "message": message,
        }
        if self._task_name:
            log_data["taskName"] = task_name
        if extra:
            for key, value in extra:
                if key in _OWN_KEYS:
                    return None
                if not key.startswith("_"):
                    log_data[key] = value
        try:
            return self._encode(log_data) + "\n"
        except (TypeError, ValueError, RecursionError):
            return self.jsonify_log_record(log_data) + "\n"

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        try:
            return super().jsonify_log_record(log_data)
        except (TypeError, ValueError, RecursionError):
            # Rare: find the values json refuses and write those as their repr.
            safe: dict[str, Any] = {}
            for key, value in log_data.items():
                try:
                    super().jsonify_log_record({key: value})
                    safe[key] = value
                except (TypeError, ValueError, RecursionError):
                    safe[key] = safe_repr(value)
            return super().jsonify_log_record(safe)

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        timestamp = self._clock.iso(record.created, record.msecs)
        log_data["timestamp"] = timestamp
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        super().add_fields(log_data, record, message_dict)
        d = record.__dict__
        # Three dict lookups per record; the repair below only runs on a clash.
        if "timestamp" in d or "level" in d or "logger" in d or message_dict:
            own = {"timestamp": timestamp, "level": record.levelname, "logger": record.name}
            for key, value in own.items():
                for source in (message_dict, d):  # the order they were merged in
                    if key in source:
                        _keep_clashing(log_data, key, source[key])
                log_data[key] = value


_OWN_KEYS = frozenset({"timestamp", "level", "logger"})
_LEVEL_NAMES: dict[int, str] = logging._levelToName
_TASK_NAME = sys.version_info >= (3, 12)


def _make_encoder(*, compact: bool = False) -> Callable[[Any], str]:
    """``json.dumps(obj, ensure_ascii=False, default=_json_default)`` (what
    jsonify_log_record does), made once. ``json.dumps`` with any option builds an
    encoder per call, and the C encoder's check for circular structures costs as
    much again: 3.8 -> 1.9 us for a 7-key line (timeit, Python 3.11). A circular
    structure then recurses until RecursionError, which the callers catch and
    hand to jsonify_log_record (its repr).

    ``compact`` (orjson is installed): no spaces after ``:`` and ``,``, and a
    line whose values are all strings, integers, booleans or ``None`` is encoded
    by orjson (0.3 against 2.2 us for a 6-key line), which writes those exactly as
    the json module does. Anything else takes the json encoder: a float (orjson
    writes ``6.1e-05`` as ``0.000061``), a nested structure, an enum, a datetime
    (``_json_default``'s rules, not orjson's), an integer past 64 bits, a lone
    surrogate. So a line is the same text whichever encoder wrote it."""
    item_sep, key_sep = (",", ":") if compact else (", ", ": ")
    c_make_encoder = getattr(json.encoder, "c_make_encoder", None)
    if c_make_encoder is None:  # an interpreter without the C accelerator
        encode_json: Callable[[Any], str] = json.JSONEncoder(
            ensure_ascii=False, default=_json_default, separators=(item_sep, key_sep)
        ).encode
    else:
        encoder = c_make_encoder(
            None, _json_default, json.encoder.encode_basestring, None, key_sep, item_sep,
            False, False, True,
        )  # fmt: skip

        def encode_json(obj: Any) -> str:
            return "".join(encoder(obj, 0))

    if not compact or _orjson is None:
        return encode_json
    dumps = _orjson.dumps
    refused = _orjson.JSONEncodeError

    def encode(obj: dict[str, Any]) -> str:
        for value in obj.values():
            if type(value) not in _ORJSON_AS_JSON:
                return encode_json(obj)
        try:
            return dumps(obj).decode()
        except refused:  # an int past 64 bits, a lone surrogate
            return encode_json(obj)

    return encode


# Values orjson writes as the json module does, to the byte.
_ORJSON_AS_JSON = frozenset({str, int, bool, type(None)})
_compact_dumps = functools.partial(json.dumps, separators=(",", ":"))


def needs_of(formatter: logging.Formatter | None) -> int:
    """Which groups of the caller's context (``_records.WHERE``...) lines made by
    ``formatter`` can print: what ``capture`` must collect for it. Our JSON
    formatter prints none of them but ``taskName``; a %-style text format prints
    those it names; any other formatter (a subclass, another style) may read
    anything, so it gets them all."""
    if formatter is None:  # the pump's default: logging.Formatter(), "%(message)s"
        return 0
    cls = type(formatter)
    if cls is JsonFormatter:
        return _records.TASK if formatter._task_name else 0  # type: ignore[attr-defined]
    if (cls is TextFormatter or cls is logging.Formatter) and type(
        formatter._style
    ) is logging.PercentStyle:
        needs = 0
        for field in _FIELD.findall(formatter._style._fmt):
            needs |= _records.NEEDS.get(field[0], 0)
        return needs
    return _records.EVERYTHING


def captured_formatter(formatter: logging.Formatter) -> Any:
    """A function of a captured call that returns its line, newline included, or
    ``None`` or raises when the call needs its ``LogRecord``: our JSON and text
    formatters' (not a subclass's, which may format otherwise). ``None`` when
    there is none: the pump builds records."""
    if type(formatter) is TextFormatter:
        return formatter.captured_lines()
    if type(formatter) is JsonFormatter:
        return formatter.line_captured
    return None


def _json_default(value: Any) -> str:
    if type(value).__str__ is not object.__str__:  # type: ignore[comparison-overlap]
        try:
            return str(value)
        except Exception:
            pass
    return safe_repr(value)


def _keep_clashing(log_data: dict[str, Any], key: str, value: Any) -> None:
    name = f"extra_{key}"
    while name in log_data:
        name = f"extra_{name}"
    log_data[name] = value


def format_filling(formatter: logging.Formatter, record: logging.LogRecord) -> str:
    """``formatter.format(record)``, any formatter (a dictConfig one too): a field
    its format names and the record lacks prints as ``MISSING``, instead of a
    KeyError that would lose the record. The field is set on a copy: the same
    record may wait in the queue for another sink (a JSON one must not get it)."""
    current = record
    for _ in range(_MAX_FILLS):
        try:
            return formatter.format(current)
        except (KeyError, ValueError) as exc:
            # logging.PercentStyle raises ValueError from the KeyError.
            missing = exc if isinstance(exc, KeyError) else exc.__context__
            key = missing.args[0] if isinstance(missing, KeyError) and missing.args else None
            if type(key) is not str or key in current.__dict__:
                raise
            if current is record:
                current = copy.copy(record)
            current.__dict__[key] = MISSING
    return formatter.format(current)


_MAX_FILLS = 32  # fields of one format a record may lack


def make_formatter(*, json: bool, fmt: str | None, tz: tzinfo) -> logging.Formatter:
    if json:
        return JsonFormatter(tz=tz)
    return TextFormatter(fmt, tz=tz)
