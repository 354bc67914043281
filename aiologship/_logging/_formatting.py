"""Text and JSON formatters with timezone-aware ISO-8601 timestamps.

Both run on the pump thread, once per record; the timestamp's date-and-offset
part is cached per second because ``datetime.fromtimestamp(..., tz)`` costs more
than the rest of a short text line.
"""

from __future__ import annotations

import logging
import re
from datetime import datetime, tzinfo
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from .._config import DEFAULT_TEXT_FORMAT
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
        super().__init__("%(message)s", json_ensure_ascii=False, json_default=_json_default)
        self._clock = _Clock(tz)

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
    its format names and the record lacks is set to ``MISSING`` on the record and
    the line made again, instead of a KeyError that would lose the record."""
    for _ in range(_MAX_FILLS):
        try:
            return formatter.format(record)
        except (KeyError, ValueError) as exc:
            # logging.PercentStyle raises ValueError from the KeyError.
            missing = exc if isinstance(exc, KeyError) else exc.__context__
            key = missing.args[0] if isinstance(missing, KeyError) and missing.args else None
            if type(key) is not str or key in record.__dict__:
                raise
            record.__dict__[key] = MISSING
    return formatter.format(record)


_MAX_FILLS = 32  # fields of one format a record may lack


def make_formatter(*, json: bool, fmt: str | None, tz: tzinfo) -> logging.Formatter:
    if json:
        return JsonFormatter(tz=tz)
    return TextFormatter(fmt, tz=tz)
