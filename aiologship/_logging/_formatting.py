"""Text and JSON formatters with timezone-aware ISO-8601 timestamps.

Both run on the pump thread, once per record; the timestamp's date-and-offset
part is cached per second because ``datetime.fromtimestamp(..., tz)`` costs more
than the rest of a short text line.
"""

from __future__ import annotations

import logging
from datetime import datetime, tzinfo
from typing import Any

from pythonjsonlogger.json import JsonFormatter as _JsonFormatter

from .._config import DEFAULT_TEXT_FORMAT

_MILLIS = tuple(f".{ms:03d}" for ms in range(1000))


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
        s: str = self._text % record.__dict__
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
    """

    def __init__(self, *, tz: tzinfo) -> None:
        super().__init__("%(message)s", json_ensure_ascii=False, json_default=str)
        self._clock = _Clock(tz)

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


def _keep_clashing(log_data: dict[str, Any], key: str, value: Any) -> None:
    name = f"extra_{key}"
    while name in log_data:
        name = f"extra_{name}"
    log_data[name] = value


def make_formatter(*, json: bool, fmt: str | None, tz: tzinfo) -> logging.Formatter:
    if json:
        return JsonFormatter(tz=tz)
    return TextFormatter(fmt, tz=tz)
