"""Configuration: frozen, keyword-only objects built once.

Precedence, lowest first: YAML file < keyword arguments < ``AIOLOGSHIP_*``
environment variables. Every invalid value raises :class:`ConfigError` naming the
key, the value and, for a file, its path and line.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml

from ._exceptions import ConfigError

DEFAULT_LEVEL = logging.INFO
DEFAULT_QUEUE_SIZE = 100_000
DEFAULT_OVERFLOW_TIMEOUT = 1.0
DEFAULT_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENV_PREFIX = "AIOLOGSHIP_"


class Overflow(StrEnum):
    """What a full queue does with a new record."""

    WAIT = "wait"  # a non-loop thread waits up to overflow_timeout, then drops
    DROP_NEWEST = "drop_newest"
    DROP_OLDEST = "drop_oldest"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class Capture(StrEnum):
    """Whole-process mode: which loggers' blocking ``StreamHandler`` s the manager
    replaces by its own stream sinks for its lifetime."""

    NONE = "none"
    ROOT = "root"  # the root logger's (basicConfig, dictConfig's root)
    ALL = "all"  # every configured logger's as well (uvicorn's, Ray's)


class HdfsDriver(StrEnum):
    AUTO = "auto"
    NATIVE = "native"
    LIBHDFS = "libhdfs"
    WEBHDFS = "webhdfs"


@dataclass(frozen=True, kw_only=True, slots=True)
class Rotation:
    """When a file sink starts a new file: past ``max_bytes``, or every ``interval``."""

    max_bytes: int | None = None
    interval: timedelta | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SinkConfig:
    """A sink declared in the config; attached to the stdlib logger ``logger``
    (``""`` is the root logger). Either a file ``path`` or a ``stream``."""

    path: Path | None = None
    # A stream sink: "stdout"/"stderr" (YAML), a text stream or a descriptor;
    # color None: on a terminal only (see _logging._console).
    stream: Any = None
    color: bool | None = None
    logger: str = ""
    level: int = logging.NOTSET
    format: LogFormat | None = None  # None: the manager's format
    fmt: str | None = None
    rotation: Rotation | None = None
    retention: int | None = None

    @classmethod
    def from_call(
        cls,
        logger: str,
        target: str | os.PathLike[str] | Any,
        *,
        level: int | str,
        fmt: str | None,
        json: bool | None,
        rotation: int | str | timedelta | None,
        retention: int | None,
        color: bool | None,
    ) -> SinkConfig:
        """The sink of a ``Logger.add`` call: a path (``~`` expanded), else a
        stream or descriptor (checked when it is attached); values validated."""
        is_path = isinstance(target, str | os.PathLike)
        return cls(
            path=Path(os.fspath(target)).expanduser() if is_path else None,
            stream=None if is_path else target,
            color=color,
            logger=logger,
            level=parse_level(level, "level"),
            format=None if json is None else (LogFormat.JSON if json else LogFormat.TEXT),
            fmt=fmt,
            rotation=parse_rotation(rotation, "rotation"),
            retention=parse_retention(retention, "retention"),
        )


@dataclass(frozen=True, kw_only=True, slots=True)
class ManagerConfig:
    level: int = DEFAULT_LEVEL
    format: LogFormat = LogFormat.TEXT
    fmt: str = DEFAULT_TEXT_FORMAT
    timezone: tzinfo = UTC
    queue_size: int = DEFAULT_QUEUE_SIZE
    overflow: Overflow = Overflow.WAIT
    overflow_timeout: float = DEFAULT_OVERFLOW_TIMEOUT
    state_dir: Path | None = None
    hdfs_driver: HdfsDriver = HdfsDriver.AUTO
    capture: Capture = Capture.NONE
    sinks: tuple[SinkConfig, ...] = ()
    copies: tuple[Mapping[str, Any], ...] = field(default=())
    # Automatic fields (``_logging/_sources``): Ray ids in a Ray process, trace and
    # span ids while an OpenTelemetry span is current.
    ray_fields: bool = True
    trace_fields: bool = True


# Settings an AIOLOGSHIP_* variable may set; lists (sinks, copies) only in YAML or kwargs.
_ENV_KEYS = (
    "level",
    "format",
    "fmt",
    "timezone",
    "queue_size",
    "overflow",
    "overflow_timeout",
    "state_dir",
    "hdfs_driver",
    "capture",
    "ray_fields",
    "trace_fields",
)
_KEYS = frozenset(_ENV_KEYS) | {"sinks", "copies"}
_SINK_KEYS = frozenset(
    {"path", "stream", "logger", "level", "format", "fmt", "rotation", "retention"}
)


class _Source:
    """Where a value came from, for error messages."""

    def __init__(self, path: Path | None = None, lines: Mapping[str, int] | None = None) -> None:
        self.path = path
        self.lines = lines or {}

    def error(self, key: str, value: Any, reason: str) -> ConfigError:
        return ConfigError(key, value, reason, path=self.path, line=self.lines.get(key))


_NO_SOURCE = _Source()


def load_config(
    config_path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ManagerConfig:
    """Merge file < overrides < environment into one validated ``ManagerConfig``."""
    merged: dict[str, tuple[Any, _Source]] = {}
    if config_path is not None:
        path = Path(config_path)
        data, lines = _read_yaml(path)
        source = _Source(path, lines)
        for key, value in data.items():
            merged[key] = (value, source)
    for key, value in (overrides or {}).items():
        if value is not None:
            merged[key] = (value, _NO_SOURCE)
    env = os.environ if environ is None else environ
    for key in _ENV_KEYS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            merged[key] = (raw, _Source(Path(f"${ENV_PREFIX}{key.upper()}")))
    unknown = sorted(set(merged) - _KEYS)
    if unknown:
        value, source = merged[unknown[0]]
        raise source.error(
            unknown[0], value, f"unknown key; known keys: {', '.join(sorted(_KEYS))}"
        )
    values: dict[str, Any] = {}
    for key, (value, source) in merged.items():
        values[key] = _CONVERTERS[key](value, key, source)
    return ManagerConfig(**values)


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config_path", str(path), "file not found") from None
    except OSError as exc:
        raise ConfigError("config_path", str(path), f"cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("config_path", str(path), f"not UTF-8 text: {exc}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            "config_path", str(path), f"invalid YAML: {problem}", path=path, line=line
        ) from exc
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(
            "config_path", str(path), "the top level must be a mapping of keys", path=path, line=1
        )
    return data, _key_lines(node)


def _key_lines(node: yaml.Node | None, prefix: str = "") -> dict[str, int]:
    """Map dotted keys (``sinks[0].level``) to their 1-based line in the file."""
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            lines[key] = key_node.start_mark.line + 1
            lines.update(_key_lines(value_node, key + "."))
    elif isinstance(node, yaml.SequenceNode):
        base = prefix.rstrip(".")
        for i, item in enumerate(node.value):
            key = f"{base}[{i}]"
            lines[key] = item.start_mark.line + 1
            lines.update(_key_lines(item, key + "."))
    return lines


# ---------------------------------------------------------------- converters


def parse_level(value: Any, key: str = "level", source: _Source = _NO_SOURCE) -> int:
    if isinstance(value, bool):
        raise source.error(key, value, "expected a level name such as INFO or a number")
    if isinstance(value, int):
        if value < 0:
            raise source.error(key, value, "a level number must not be negative")
        return value
    if isinstance(value, str):
        name = value.strip().upper()
        if name.isdigit():
            return int(name)
        level = logging.getLevelNamesMapping().get(name)
        if level is not None:
            return level
    raise source.error(
        key, value, "expected a level name (DEBUG, INFO, WARNING, ERROR, CRITICAL) or a number"
    )


def _enum(enum: type[StrEnum]) -> Any:
    def convert(value: Any, key: str, source: _Source = _NO_SOURCE) -> StrEnum:
        if isinstance(value, enum):
            return value
        if isinstance(value, str):
            try:
                return enum(value.strip().lower())
            except ValueError:
                pass
        choices = ", ".join(m.value for m in enum)
        raise source.error(key, value, f"expected one of: {choices}")

    return convert


def _string(value: Any, key: str, source: _Source = _NO_SOURCE) -> str:
    if not isinstance(value, str) or not value:
        raise source.error(key, value, "expected a non-empty string")
    return value


def parse_timezone(value: Any, key: str = "timezone", source: _Source = _NO_SOURCE) -> tzinfo:
    if isinstance(value, tzinfo):
        return value
    if not isinstance(value, str) or not value.strip():
        raise source.error(key, value, "expected an IANA zone name such as 'Asia/Singapore'")
    name = value.strip()
    if name.upper() == "UTC":
        return UTC
    if name.lower() == "local":
        local: tzinfo | None = datetime.now().astimezone().tzinfo
        assert local is not None
        return local
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise source.error(key, value, "unknown time zone (not in the IANA database)") from exc


_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


def _bool(value: Any, key: str, source: _Source = _NO_SOURCE) -> bool:
    """``true``/``false`` (YAML or keyword), or for a variable ``true``, ``1``,
    ``yes``, ``on`` and ``false``, ``0``, ``no``, ``off`` in any case."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
    raise source.error(key, value, "expected true or false (also 1/0, yes/no, on/off)")


def _positive_int(value: Any, key: str, source: _Source = _NO_SOURCE) -> int:
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise source.error(key, value, "expected a whole number")
    if value <= 0:
        raise source.error(key, value, "must be greater than zero")
    return value


def _non_negative_seconds(value: Any, key: str, source: _Source = _NO_SOURCE) -> float:
    seconds = parse_duration(value, key, source)
    return seconds.total_seconds()


def _path(value: Any, key: str, source: _Source = _NO_SOURCE) -> Path:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise source.error(key, value, "expected a path")
    return Path(value).expanduser()


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
}
_DURATION_UNITS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 604800,
    "week": 604800,
    "weeks": 604800,
}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: Any, key: str, source: _Source = _NO_SOURCE) -> int:
    """``1048576``, ``"10 MB"``, ``"512 KiB"`` -> bytes (> 0)."""
    if isinstance(value, bool):
        raise source.error(key, value, "expected a size such as 10485760 or '10 MB'")
    if isinstance(value, int):
        size = value
    else:
        match = _QUANTITY.match(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else ""
        if match is None or unit not in _SIZE_UNITS:
            raise source.error(key, value, "expected a size such as 10485760 or '10 MB'")
        size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise source.error(key, value, "a size must be greater than zero")
    return size


def parse_duration(value: Any, key: str, source: _Source = _NO_SOURCE) -> timedelta:
    """``5``, ``2.5``, ``"30 s"``, ``"1 day"``, ``timedelta`` -> timedelta (>= 0)."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise source.error(key, value, "expected seconds or a duration such as '30 s'")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        match = _QUANTITY.match(value)
        unit = match.group(2).lower() if match else ""
        if match is None or (unit and unit not in _DURATION_UNITS):
            raise source.error(key, value, "expected seconds or a duration such as '30 s'")
        result = timedelta(seconds=float(match.group(1)) * _DURATION_UNITS.get(unit, 1))
    else:
        raise source.error(key, value, "expected seconds or a duration such as '30 s'")
    if result < timedelta(0):
        raise source.error(key, value, "must not be negative")
    return result


def parse_rotation(
    value: Any, key: str = "rotation", source: _Source = _NO_SOURCE
) -> Rotation | None:
    """An int or a size string rotates by size; a duration rotates by time."""
    if value is None or isinstance(value, Rotation):
        return value
    if isinstance(value, timedelta):
        interval = parse_duration(value, key, source)
        if interval <= timedelta(0):
            raise source.error(key, value, "a rotation interval must be greater than zero")
        return Rotation(interval=interval)
    if isinstance(value, str):
        match = _QUANTITY.match(value)
        if (
            match
            and match.group(2).lower() in _DURATION_UNITS
            and match.group(2).lower() not in _SIZE_UNITS
        ):
            interval = parse_duration(value, key, source)
            if interval <= timedelta(0):
                raise source.error(key, value, "a rotation interval must be greater than zero")
            return Rotation(interval=interval)
    try:
        return Rotation(max_bytes=parse_size(value, key, source))
    except ConfigError:
        raise source.error(
            key, value, "expected a size ('10 MB', 10485760) or an interval ('1 hour', '1 day')"
        ) from None


def parse_retention(value: Any, key: str = "retention", source: _Source = _NO_SOURCE) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise source.error(key, value, "expected the number of rotated files to keep")
    if value < 0:
        raise source.error(key, value, "must not be negative")
    return value


def _sinks(value: Any, key: str, source: _Source = _NO_SOURCE) -> tuple[SinkConfig, ...]:
    if isinstance(value, SinkConfig):
        return (value,)
    if not isinstance(value, list | tuple):
        raise source.error(key, value, "expected a list of sinks, each with at least a path")
    sinks = []
    for i, item in enumerate(value):
        if isinstance(item, SinkConfig):
            sinks.append(item)
            continue
        where = f"{key}[{i}]"
        if isinstance(item, str | os.PathLike):
            item = {"path": item}
        if not isinstance(item, Mapping):
            raise source.error(where, item, "expected a mapping with at least a path")
        unknown = sorted(set(item) - _SINK_KEYS)
        if unknown:
            raise source.error(
                f"{where}.{unknown[0]}",
                item[unknown[0]],
                f"unknown sink key; known: {', '.join(sorted(_SINK_KEYS))}",
            )
        stream = _stream(item, where, source)
        fmt = item.get("format")
        sinks.append(
            SinkConfig(
                path=None if stream else _path(item["path"], f"{where}.path", source),
                stream=stream,
                logger=str(item.get("logger", "") or ""),
                level=parse_level(item.get("level", 0), f"{where}.level", source),
                format=None if fmt is None else _enum(LogFormat)(fmt, f"{where}.format", source),
                fmt=None
                if item.get("fmt") is None
                else _string(item["fmt"], f"{where}.fmt", source),
                rotation=parse_rotation(item.get("rotation"), f"{where}.rotation", source),
                retention=parse_retention(item.get("retention"), f"{where}.retention", source),
            )
        )
    return tuple(sinks)


_STREAMS = ("stdout", "stderr")


def _stream(item: Mapping[str, Any], where: str, source: _Source) -> str | None:
    """A sink's ``stream:`` (``stdout`` or ``stderr``), checked against ``path``."""
    if "stream" not in item:
        if "path" not in item:
            raise source.error(f"{where}.path", None, "every sink needs a path or a stream")
        return None
    value = item["stream"]
    if "path" in item:
        raise source.error(f"{where}.stream", value, "a sink has a path or a stream, not both")
    name = value.strip().lower() if isinstance(value, str) else None
    if name not in _STREAMS:
        raise source.error(f"{where}.stream", value, "expected stdout or stderr")
    for key in ("rotation", "retention"):
        if item.get(key) is not None:
            raise source.error(f"{where}.{key}", item[key], "a stream sink does not rotate")
    return name


def _copies(value: Any, key: str, source: _Source = _NO_SOURCE) -> tuple[Mapping[str, Any], ...]:
    # Validated in full by the copy engine's spec when the manager starts them;
    # here only the shape, so the error still names the file and line.
    if not isinstance(value, list | tuple):
        raise source.error(key, value, "expected a list of copy operations")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise source.error(
                f"{key}[{i}]", item, "expected a mapping of start_hdfs_copy arguments"
            )
    return tuple(dict(item) for item in value)


_CONVERTERS: dict[str, Any] = {
    "level": parse_level,
    "format": _enum(LogFormat),
    "fmt": _string,
    "timezone": parse_timezone,
    "queue_size": _positive_int,
    "overflow": _enum(Overflow),
    "overflow_timeout": _non_negative_seconds,
    "state_dir": _path,
    "hdfs_driver": _enum(HdfsDriver),
    "capture": _enum(Capture),
    "ray_fields": _bool,
    "trace_fields": _bool,
    "sinks": _sinks,
    "copies": _copies,
}


def default_state_dir() -> Path:
    """Per-user cache folder for copy manifests (XDG_CACHE_HOME honoured)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "aiologship"


def configured_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The state dir a manager configured by the environment alone uses:
    ``AIOLOGSHIP_STATE_DIR``, else :func:`default_state_dir`. For readers of the
    state (``aiologship status``) that have no manager."""
    env = os.environ if environ is None else environ
    key = "state_dir"
    raw = env.get(ENV_PREFIX + key.upper())
    if raw is None or raw == "":
        return default_state_dir()
    return _path(raw, key, _Source(Path(f"${ENV_PREFIX}{key.upper()}")))
