"""Destination templates: ``hdfs://nn:8020/logs/{date:%Y/%m/%d}/{hostname}/``.

The destination splits at the last ``/`` before its first field: the part
before is the base the engine resolves and lists once; the rest is a path
template rendered once per source file, when the file is first seen, and kept
in the manifest (``Entry.part``), so a file never moves between partitions
(a log that lives across midnight stays under the day it started). A renamed
file keeps the partition of the name it had.

Fields: ``{date:FMT}`` (strftime; ``{date}`` is ``%Y-%m-%d``) in the given time
zone (None: local time), ``{hostname}``, ``{node_id}`` (the caller's, e.g. a Ray
node id; the host name without one), ``{copy_name}``. ``{{`` and ``}}`` are a
literal brace.

No pyarrow here: a spec is validated without loading the engine.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING, Protocol

from .._exceptions import ConfigError

if TYPE_CHECKING:
    from ._scan import SourceFile


class Placed(Protocol):
    """What a manifest record tells of a file's place (``Entry``, ``Rolled``)."""

    @property
    def dev(self) -> int: ...
    @property
    def ino(self) -> int: ...
    @property
    def part(self) -> str: ...


FIELDS = ("date", "hostname", "node_id", "copy_name")
DEFAULT_DATE_FORMAT = "%Y-%m-%d"
# strftime directives whose output is the same on every platform Python runs on
# here (C89 + the ISO 8601 week fields); anything else is refused, not passed
# through ("%Q" prints itself on glibc, which would name a folder "%Q").
_DIRECTIVES = frozenset("aAbBcdHIjmMpSUwWxXyYzZGuV%")
_KEY = "hdfs_destination"
_SAMPLE_DATE = datetime(2001, 12, 31, 23, 59, 58)
_FORMATTER = string.Formatter()


@dataclass(frozen=True, slots=True)
class Template:
    """The templated tail of a destination (``""``: none); see the module docstring."""

    text: str = ""

    def __bool__(self) -> bool:
        return bool(self.text)

    def render(self, when: datetime, *, hostname: str, node_id: str | None, copy_name: str) -> str:
        """The partition, a relative folder path ending in ``/`` (``""`` without a template)."""
        if not self.text:
            return ""
        values = {"hostname": hostname, "node_id": node_id or hostname, "copy_name": copy_name}
        out = []
        for literal, field, spec, _ in _FORMATTER.parse(self.text):
            out.append(literal)
            if field == "date":
                out.append(when.strftime(spec or DEFAULT_DATE_FORMAT))
            elif field is not None:
                out.append(values[field])
        rendered = "".join(out).strip("/")
        return rendered + "/" if rendered else ""

    def pattern(self, *, hostname: str, node_id: str | None, copy_name: str) -> re.Pattern[str]:
        """Matches what :meth:`render` makes, at any date."""
        values = {"hostname": hostname, "node_id": node_id or hostname, "copy_name": copy_name}
        out = []
        for literal, field, _, _ in _FORMATTER.parse(self.text.strip("/")):
            out.append(re.escape(literal))
            if field == "date":
                out.append(".+?")
            elif field is not None:
                out.append(re.escape(values[field]))
        return re.compile("".join(out) + "/")


def split_destination(destination: str, redacted: str) -> tuple[str, Template]:
    """(base, template) of a normalized destination, braces of the base
    unescaped. Raises ``ConfigError`` naming the destination (``redacted``)
    for an unknown field, a bad format, or a field outside the path."""
    try:
        parts = list(_FORMATTER.parse(destination))
    except ValueError as exc:
        reason = f"bad template: {exc} (a literal brace is written {{{{ or }}}})"
        raise ConfigError(_KEY, redacted, reason) from None
    for _, field, spec, conversion in parts:
        if field is not None:
            _check_field(field, spec, conversion, redacted)
    first = _first_field(destination)
    if first is None:
        return _unescape(destination), Template()
    cut = destination.rfind("/", 0, first)
    scheme = destination.find("://", 0, first)
    path_start = destination.find("/", scheme + 3) if scheme >= 0 else 0
    if cut < 0 or path_start < 0 or cut < path_start:
        raise ConfigError(_KEY, redacted, "template fields belong in the path, after a '/'")
    if scheme >= 0 and any(c in destination[path_start:] for c in "?#"):
        raise ConfigError(_KEY, redacted, "a templated URI takes no query or fragment")
    template = Template(destination[cut + 1 :])
    sample = template.render(_SAMPLE_DATE, hostname="h", node_id="n", copy_name="c")
    if not sample or any(part in ("", ".", "..") for part in sample.rstrip("/").split("/")):
        raise ConfigError(_KEY, redacted, "the template must render to a relative folder path")
    return _unescape(destination[: cut + 1]), template


def _first_field(text: str) -> int | None:
    """Index of the first ``{`` that opens a field (``{{`` is a literal brace)."""
    i = 0
    while i < len(text):
        if text[i] == "{":
            if text.startswith("{{", i):
                i += 2
                continue
            return i
        i += 1
    return None


def _unescape(text: str) -> str:
    return text.replace("{{", "{").replace("}}", "}")


def _check_field(field: str, spec: str | None, conversion: str | None, redacted: str) -> None:
    if field not in FIELDS:
        known = ", ".join("{" + f + "}" for f in FIELDS)
        raise ConfigError(_KEY, redacted, f"unknown template field {{{field}}} (known: {known})")
    if conversion:
        raise ConfigError(_KEY, redacted, f"{{{field}!{conversion}}}: no conversions")
    if field != "date":
        if spec:
            raise ConfigError(_KEY, redacted, f"{{{field}:{spec}}}: only {{date}} takes a format")
        return
    fmt = spec or DEFAULT_DATE_FORMAT
    for directive in re.findall(r"%(.?)", fmt):
        if directive not in _DIRECTIVES:
            raise ConfigError(_KEY, redacted, f"{{date:{fmt}}}: unknown directive %{directive}")
    sample = _SAMPLE_DATE.strftime(fmt)
    if not sample or sample.startswith("/") or sample.endswith("/") or "//" in sample:
        # A partition must be folder names: the search after a lost manifest
        # matches the date as one or more whole path components.
        raise ConfigError(
            _KEY, redacted, f"{{date:{fmt}}}: must render to folder names (no empty one)"
        )


class Placer:
    """Puts each scanned source under its partition: the one its manifest entry
    holds (same path and inode, or the inode it had under a name now gone), else
    the one rendered now."""

    def __init__(
        self,
        template: Template,
        *,
        copy_name: str,
        node_id: str | None,
        timezone: tzinfo | None,
        hostname: str | None = None,
    ) -> None:
        self._template = template
        self._copy_name = copy_name
        self._node_id = node_id
        self._timezone = timezone
        self._hostname = hostname or socket.gethostname()
        self._pattern = template.pattern(
            hostname=self._hostname, node_id=node_id, copy_name=copy_name
        )

    def partition(self, now: float) -> str:
        when = datetime.fromtimestamp(now, self._timezone)
        return self._template.render(
            when, hostname=self._hostname, node_id=self._node_id, copy_name=self._copy_name
        )

    def earlier(self, f: SourceFile, listing: Mapping[str, int]) -> list[SourceFile]:
        """``f`` (placed) in each other partition of ``listing`` that holds its
        name, latest first (by name: the usual date formats sort by age)."""
        name = f.dest[len(f.part) :]
        found = []
        for rel in listing:
            part = rel[: len(rel) - len(name)]
            if rel.endswith("/" + name) and part != f.part and self._pattern.fullmatch(part):
                found.append(dataclasses.replace(f, dest=rel, part=part))
        return sorted(found, key=lambda g: g.part, reverse=True)

    def place(
        self, files: Sequence[SourceFile], entries: Mapping[str, Placed], now: float
    ) -> tuple[SourceFile, ...]:
        if not self._template:
            return tuple(files)
        live = {f.path: f for f in files}
        # Inodes of entries whose name no longer holds them: renamed files.
        moved: dict[tuple[int, int], str] = {}
        for path, old in entries.items():
            f = live.get(path)
            if f is None or (f.dev, f.ino) != (old.dev, old.ino):
                moved.setdefault((old.dev, old.ino), old.part)
        fresh: str | None = None
        out = []
        for f in files:
            entry = entries.get(f.path)
            if entry is not None and (entry.dev, entry.ino) == (f.dev, f.ino):
                part = entry.part
            elif (f.dev, f.ino) in moved:
                part = moved[f.dev, f.ino]
            else:
                part = fresh = fresh if fresh is not None else self.partition(now)
            out.append(dataclasses.replace(f, dest=part + f.dest, part=part))
        return tuple(out)
