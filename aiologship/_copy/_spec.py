"""The validated parameters of one copy operation."""

from __future__ import annotations

import glob
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import tzinfo
from enum import StrEnum
from pathlib import Path
from typing import Any

from .._config import parse_duration, parse_size
from .._exceptions import ConfigError
from .._fs import normalize_destination, redact
from ._statedir import state_key
from ._template import Template, split_destination

DEFAULT_COPY_INTERVAL = 60.0
DEFAULT_MAX_RETRIES = 3
DEFAULT_RETRY_DELAY = 5.0


class Compression(StrEnum):
    """How shipped files are compressed; the destination name gets :attr:`suffix`."""

    GZIP = "gzip"
    ZSTD = "zstd"

    @property
    def suffix(self) -> str:
        return _SUFFIXES[self]


_SUFFIXES = {Compression.GZIP: ".gz", Compression.ZSTD: ".zst"}


# Roll-up defaults (``rollup=True``): Flume's HDFS sink rolls by size and time
# too; 256 MiB is two HDFS blocks of the default 128 MiB.
DEFAULT_ROLL_SIZE = 256 << 20
DEFAULT_ROLL_INTERVAL = 3600.0
DEFAULT_ROLL_SETTLE = 60.0
_ROLLUP_KEYS = ("size", "interval", "settle")


@dataclass(frozen=True, kw_only=True, slots=True)
class RollUp:
    """How sealed files are rolled up (``rollup=``): a source's new bytes are
    appended to its partition's open roll file once the source has not been
    modified for ``settle`` seconds; a roll file is closed when it holds
    ``size`` destination bytes or has been open ``interval`` seconds (None: no
    such limit; at least one of the two is set)."""

    size: int | None = DEFAULT_ROLL_SIZE
    interval: float | None = DEFAULT_ROLL_INTERVAL
    settle: float = DEFAULT_ROLL_SETTLE


class Scope(StrEnum):
    """Where a copy runs in a Ray cluster (read by the coordination layer)."""

    CLUSTER = "cluster"  # one copier, on the head node
    NODE = "node"  # one copier on every node


@dataclass(frozen=True, kw_only=True, slots=True)
class CopySpec:
    """``start_hdfs_copy`` parameters after validation. Build with :meth:`from_params`."""

    copy_name: str
    path_patterns: tuple[str, ...]  # absolute, normalized (relative ones joined to root_dir)
    # Canonical (plain paths absolute); may hold credentials and template fields.
    hdfs_destination: str
    root_dir: Path | None = None
    copy_interval: float | None = DEFAULT_COPY_INTERVAL  # None: copy once
    create_dest_dirs: bool = True
    preserve_structure: bool = False
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_delay: float = DEFAULT_RETRY_DELAY
    scope: Scope = Scope.CLUSTER
    compression: Compression | None = None
    rollup: RollUp | None = None
    # Of the destination template: {node_id} (None: the host name) and the zone
    # of {date} (None: local time).
    node_id: str | None = None
    timezone: tzinfo | None = None

    @classmethod
    def from_params(
        cls,
        *,
        copy_name: Any,
        path_patterns: Any,
        hdfs_destination: Any,
        root_dir: Any = None,
        copy_interval: Any = DEFAULT_COPY_INTERVAL,
        create_dest_dirs: Any = True,
        preserve_structure: Any = False,
        max_retries: Any = DEFAULT_MAX_RETRIES,
        retry_delay: Any = DEFAULT_RETRY_DELAY,
        scope: Any = Scope.CLUSTER,
        compression: Any = None,
        rollup: Any = None,
        node_id: Any = None,
        timezone: Any = None,
    ) -> CopySpec:
        """Validate every parameter; raise ``ConfigError(key, value, reason)``.

        Never touches the filesystem, so it is safe on an event loop.
        """
        name = _copy_name(copy_name)
        root = _root_dir(root_dir)
        preserve = _bool("preserve_structure", preserve_structure)
        patterns = _patterns(path_patterns, root, preserve)
        destination = normalize_destination(hdfs_destination)
        split_destination(destination, redact(destination))  # the template checked
        return cls(
            copy_name=name,
            path_patterns=patterns,
            hdfs_destination=destination,
            root_dir=root,
            copy_interval=_interval(copy_interval),
            create_dest_dirs=_bool("create_dest_dirs", create_dest_dirs),
            preserve_structure=preserve,
            max_retries=_max_retries(max_retries),
            retry_delay=_seconds("retry_delay", retry_delay),
            scope=_scope(scope),
            compression=_compression(compression),
            rollup=_rollup(rollup),
            node_id=_node_id(node_id),
            timezone=_timezone(timezone),
        )

    def __repr__(self) -> str:
        # Error trackers (Sentry, rich tracebacks) capture locals through repr():
        # the destination is shown redacted.
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["hdfs_destination"] = self.destination_redacted
        shown = ", ".join(f"{name}={value!r}" for name, value in values.items())
        return f"{type(self).__name__}({shown})"

    @property
    def destination_redacted(self) -> str:
        return redact(self.hdfs_destination)

    @property
    def state_key(self) -> str:
        """Folder name of this copy's state (see ``_statedir.state_key``)."""
        return state_key(self.copy_name, self.destination_redacted)

    @property
    def destination_base(self) -> str:
        """The destination before its first template field: what is resolved
        and listed (the whole destination when it has no field)."""
        return split_destination(self.hdfs_destination, self.destination_redacted)[0]

    @property
    def template(self) -> Template:
        return split_destination(self.hdfs_destination, self.destination_redacted)[1]

    @property
    def dest_suffix(self) -> str:
        """Appended to each shipped file's name (``.gz``, ``.zst``; empty uncompressed)."""
        return "" if self.compression is None else self.compression.suffix

    def differences(self, other: CopySpec) -> dict[str, tuple[Any, Any]]:
        """``{parameter: (self's value, other's value)}`` for each differing
        parameter; destinations are compared in full but shown redacted."""
        diff: dict[str, tuple[Any, Any]] = {}
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(other, f.name)
            if mine != theirs:
                if f.name == "hdfs_destination":
                    mine, theirs = redact(mine), redact(theirs)
                diff[f.name] = (mine, theirs)
        return diff

    def as_params(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this spec through ``from_params``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _copy_name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("copy_name", value, "expected a non-empty string")
    if any(ord(c) < 32 for c in value):
        raise ConfigError("copy_name", value, "must not contain control characters")
    name: str = value.strip()
    return name


def _root_dir(value: Any) -> Path | None:
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError("root_dir", value, "expected a directory path")
    return Path(os.path.abspath(os.path.expanduser(value)))


def _patterns(value: Any, root: Path | None, preserve: bool) -> tuple[str, ...]:
    if isinstance(value, str | os.PathLike):
        # A lone string is almost always meant as a one-pattern list; iterating
        # its characters would glob nonsense.
        value = [value]
    if not isinstance(value, list | tuple) or not value:
        raise ConfigError("path_patterns", value, "expected a non-empty list of glob patterns")
    patterns: list[str] = []
    for item in value:
        if isinstance(item, os.PathLike):
            item = os.fspath(item)
        if not isinstance(item, str) or not item.strip():
            raise ConfigError("path_patterns", item, "each pattern must be a non-empty string")
        text = os.path.expanduser(item.strip())
        if not os.path.isabs(text):
            if root is None:
                raise ConfigError(
                    "path_patterns",
                    item,
                    "a relative pattern needs root_dir (or use an absolute one)",
                )
            text = os.path.join(root, text)
        text = os.path.normpath(text)
        if preserve and root is None:
            raise ConfigError(
                "root_dir", None, "preserve_structure=True needs root_dir to relate paths to"
            )
        if root is not None and not _under(_literal_prefix(text), str(root)):
            # Refused rather than skipped file by file: a copy that silently
            # ships nothing for a pattern would still report success.
            raise ConfigError(
                "path_patterns",
                item,
                f"matches files outside root_dir {str(root)!r}; nothing outside root_dir "
                "is ever read (widen root_dir or drop it)",
            )
        if text not in patterns:
            patterns.append(text)
    return tuple(patterns)


def _literal_prefix(pattern: str) -> str:
    """The directory part of ``pattern`` before its first wildcard."""
    parts = pattern.split(os.sep)
    literal: list[str] = []
    for part in parts:
        if glob.has_magic(part):
            break
        literal.append(part)
    return os.sep.join(literal) or os.sep


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(key, value, "expected True or False")
    return value


def _interval(value: Any) -> float | None:
    if value is None:
        return None
    seconds = _seconds("copy_interval", value)
    if seconds <= 0:
        raise ConfigError("copy_interval", value, "must be greater than zero (None copies once)")
    return seconds


def _seconds(key: str, value: Any) -> float:
    seconds: float = parse_duration(value, key).total_seconds()
    return seconds


def _max_retries(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError("max_retries", value, "expected a whole number")
    if value < 0:
        raise ConfigError("max_retries", value, "must not be negative")
    return value


def _scope(value: Any) -> Scope:
    if isinstance(value, Scope):
        return value
    if isinstance(value, str):
        try:
            return Scope(value.strip().lower())
        except ValueError:
            pass
    raise ConfigError("scope", value, "expected 'cluster' or 'node'")


def _compression(value: Any) -> Compression | None:
    if value is None or isinstance(value, Compression):
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none"):
            return None
        try:
            return Compression(text)
        except ValueError:
            pass
    raise ConfigError("compression", value, "expected None, 'gzip' or 'zstd'")


def _rollup(value: Any) -> RollUp | None:
    """None/False: off; True: the defaults; a mapping of ``size`` (bytes or
    '256 MiB'), ``interval`` and ``settle`` (seconds or '1 h'); a ``RollUp``."""
    if value is None or value is False:
        return None
    if value is True:
        return RollUp()
    if isinstance(value, RollUp):
        return value
    if not isinstance(value, Mapping):
        raise ConfigError(
            "rollup", value, "expected True, None or a mapping of size, interval and settle"
        )
    unknown = sorted(str(k) for k in value if k not in _ROLLUP_KEYS)
    if unknown:
        raise ConfigError(
            "rollup", value, f"unknown key {unknown[0]!r} (known: size, interval, settle)"
        )
    size = value.get("size")
    interval = value.get("interval")
    if size is None and interval is None:
        raise ConfigError("rollup", value, "needs a size or an interval (or both)")
    rollup = RollUp(
        size=None if size is None else parse_size(size, "rollup.size"),
        interval=None if interval is None else _seconds("rollup.interval", interval),
        settle=_seconds("rollup.settle", value.get("settle", DEFAULT_ROLL_SETTLE)),
    )
    if rollup.interval is not None and rollup.interval <= 0:
        raise ConfigError("rollup.interval", interval, "must be greater than zero")
    return rollup


def _node_id(value: Any) -> str | None:
    if value is None:
        return None
    if (
        not isinstance(value, str)
        or value in ("", ".", "..")
        or any(c == "/" or ord(c) < 32 for c in value)
    ):
        raise ConfigError("node_id", value, "expected a name usable as a folder (no '/')")
    return value


def _timezone(value: Any) -> tzinfo | None:
    if value is None or isinstance(value, tzinfo):
        return value
    raise ConfigError("timezone", value, "expected a datetime.tzinfo or None (local time)")
