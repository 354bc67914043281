"""What a roll-up copy has shipped: which source ranges are in which roll file.

Kept in the manifest (``"rollup"``, format 4) and, as a write-ahead copy, in a
ledger beside the roll files at the destination (so a lost manifest does not
ship rolled bytes again). Plain data and JSON, no I/O.

* :class:`Rolled`: a source whose bytes ``[0, size)`` are in roll files; its
  fingerprints tell a file that grew from one rewritten (copytruncate).
* :class:`Roll`: a roll file, its committed size and the tail hash of those
  bytes, and the source spans it holds, in order.
* :class:`Pending`: the one append in progress, saved before its first byte is
  written: after a crash, a roll file longer than its committed size is either
  exactly this append (adopted) or is cut back to the committed size.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

LEDGER_SUFFIX = ".aiologship-rollup.json"
_HASH_RE = re.compile(r"[0-9a-f]{32}")


class RollStateCorrupt(Exception):
    """The ``rollup`` section cannot be used (reason in the message)."""


@dataclass(frozen=True, slots=True)
class Rolled:
    """Bytes ``[0, size)`` of this source (as the scan saw it) are in roll files."""

    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    head: str  # hash of the first min(size, FINGERPRINT_BYTES) bytes
    tail: str  # hash of the FINGERPRINT_BYTES bytes ending at size
    part: str  # the partition its spans go to, kept for the file's life


@dataclass(frozen=True, slots=True)
class Retired:
    """A record no file is followed by any more, kept a while so a file that
    turns up holding its bytes starts after them: a source truncated in place
    (copytruncate: its copy, a new inode, holds the rolled bytes; any file whose
    fingerprints match takes it up) or one gone from the scans (``same_file``:
    only the same device and inode, back again, takes it up)."""

    path: str
    rec: Rolled
    at: float  # clock seconds when it was retired
    same_file: bool


@dataclass(frozen=True, slots=True)
class Seen:
    """A file of a templated copy that no record follows yet (still being
    written): the partition it was first seen in, which its spans go to."""

    dev: int
    ino: int
    part: str


# Retired records kept: (how many, for how long), truncated ones and gone ones.
RETIRED_TRUNCATED = (64, 86400.0)
RETIRED_GONE = (1024, 30 * 86400.0)
# Gone records retired this recently are all kept, past the count: a mount outage
# takes every followed file away at once, and each must resume when it is back.
# (They were all in ``sources`` a cycle before: the manifest is no bigger.)
RETIRED_GONE_GRACE = 86400.0


@dataclass(frozen=True, slots=True)
class Span:
    """Source bytes ``[start, end)`` of ``source`` (inode ``ino``)."""

    source: str
    ino: int
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class Roll:
    """A roll file: ``name`` below the destination base, committed up to
    ``dest_size`` bytes whose last ones hash to ``dest_tail``."""

    name: str
    part: str
    opened: float  # clock seconds
    dest_size: int = 0
    dest_tail: str = ""
    source_bytes: int = 0
    spans: tuple[Span, ...] = ()
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Pending:
    """An append of ``spans`` to ``roll`` (as committed before it: a new roll
    has ``dest_size`` 0 and is not at the destination yet); ``sources`` are the
    records the commit sets."""

    roll: Roll
    spans: tuple[Span, ...]
    sources: tuple[tuple[str, Rolled], ...]

    @property
    def source_bytes(self) -> int:
        return sum(s.end - s.start for s in self.spans)


@dataclass(slots=True)
class RollState:
    """The ``rollup`` section of a manifest. Mutated on the engine's loop only;
    :meth:`copy` is what a save writes (the values are immutable)."""

    sources: dict[str, Rolled] = field(default_factory=dict)
    rolls: dict[str, Roll] = field(default_factory=dict)
    pending: Pending | None = None
    seq: int = 0  # roll files opened by this copy: a name never repeats
    absent: set[str] = field(default_factory=set)  # sources absent from the last scan
    retired: list[Retired] = field(default_factory=list)  # oldest first
    seen: dict[str, Seen] = field(default_factory=dict)  # partitions of files not rolled yet

    def __bool__(self) -> bool:
        return bool(
            self.sources or self.rolls or self.pending or self.seq or self.retired or self.seen
        )

    def copy(self) -> RollState:
        return RollState(
            dict(self.sources),
            dict(self.rolls),
            self.pending,
            self.seq,
            set(self.absent),
            list(self.retired),
            dict(self.seen),
        )

    def retire(self, item: Retired) -> bool:
        """Keep ``item`` (once); False when it is kept already."""
        return bool(self.retire_all([item]))

    def retire_all(self, items: list[Retired]) -> int:
        """``retire`` for many (a mount outage retires every followed file at
        once: one pass, not one per item); how many were new."""
        known = {(r.rec, r.same_file) for r in self.retired}
        added = 0
        for item in items:
            key = (item.rec, item.same_file)
            if key not in known:
                known.add(key)
                self.retired.append(item)
                added += 1
        return added

    def prune_retired(self, now: float) -> bool:
        """Drop retired records past their time, and the oldest past the count
        (gone ones retired within RETIRED_GONE_GRACE are all kept)."""
        kept: list[Retired] = []
        for same_file, (count, ttl) in ((False, RETIRED_TRUNCATED), (True, RETIRED_GONE)):
            group = [r for r in self.retired if r.same_file == same_file and now - r.at < ttl]
            if same_file:
                recent = sum(1 for r in group if now - r.at < RETIRED_GONE_GRACE)
                count = max(count, recent)
            kept += group[max(len(group) - count, 0) :]
        kept.sort(key=lambda r: r.at)
        if len(kept) == len(self.retired):
            return False
        self.retired = kept
        return True

    def open_roll(self, part: str) -> Roll | None:
        for roll in self.rolls.values():
            if roll.part == part and not roll.closed:
                return roll
        return None

    def commit(self, pending: Pending, dest_size: int, dest_tail: str) -> Roll:
        """The append of ``pending`` is at the destination: the roll file is
        ``dest_size`` bytes, ending in bytes hashing to ``dest_tail``."""
        before = pending.roll
        roll = dataclasses.replace(
            before,
            dest_size=dest_size,
            dest_tail=dest_tail,
            source_bytes=before.source_bytes + pending.source_bytes,
            spans=before.spans + pending.spans,
        )
        self.rolls[roll.name] = roll
        self.sources.update(pending.sources)
        for path, _ in pending.sources:
            self.seen.pop(path, None)  # its record keeps the partition now
        self.pending = None
        return roll

    def close(self, name: str) -> None:
        roll = self.rolls.get(name)
        if roll is not None and not roll.closed:
            self.rolls[name] = dataclasses.replace(roll, closed=True)

    def prune(self) -> bool:
        """Closed rolls none of whose sources is still followed are forgotten
        (their files stay): the section does not grow with every rotation."""
        # By inode: a followed source may have been renamed since it was rolled.
        followed = {rec.ino for rec in self.sources.values()}
        gone = [
            name
            for name, roll in self.rolls.items()
            if roll.closed and not any(s.ino in followed for s in roll.spans)
        ]
        for name in gone:
            del self.rolls[name]
        return bool(gone)

    # ------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": {k: _plain(v) for k, v in sorted(self.sources.items())},
            "rolls": [_roll_json(r) for r in self.rolls.values()],
            "pending": None if self.pending is None else _pending_json(self.pending),
            "seq": self.seq,
            "absent": sorted(self.absent),
            "retired": [
                {"path": r.path, "rec": _plain(r.rec), "at": r.at, "same_file": r.same_file}
                for r in self.retired
            ],
            "seen": {k: _plain(v) for k, v in sorted(self.seen.items())},
        }

    @classmethod
    def from_json(cls, data: Any) -> RollState:
        """Raises ``RollStateCorrupt``."""
        try:
            if not isinstance(data, Mapping):
                raise RollStateCorrupt("not a mapping")
            sources = {_path(k): _record(Rolled, v) for k, v in _mapping(data["sources"]).items()}
            rolls = {}
            for item in _list(data["rolls"]):
                roll = _roll(item)
                rolls[roll.name] = roll
            raw = data["pending"]
            pending = None
            if raw is not None:
                item = _mapping(raw)
                pending = Pending(
                    roll=_roll(item["roll"]),
                    spans=tuple(_record(Span, s) for s in _list(item["spans"])),
                    sources=tuple(
                        (_path(p), _record(Rolled, r)) for p, r in _mapping(item["sources"]).items()
                    ),
                )
            seq = data["seq"]
            absent = _list(data["absent"])
            if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
                raise RollStateCorrupt(f"seq {seq!r} is not a count")
            retired = [_retired(item) for item in _list(data.get("retired", []))]
            absent_known = {_path(p) for p in absent} & sources.keys()
            seen = {_path(k): _record(Seen, v) for k, v in _mapping(data.get("seen", {})).items()}
            return cls(sources, rolls, pending, seq, absent_known, retired, seen)
        except RollStateCorrupt:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise RollStateCorrupt(f"{type(exc).__name__}: {exc}") from exc


def _plain(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}


def _roll_json(roll: Roll) -> dict[str, Any]:
    out = _plain(roll)
    out["spans"] = [[s.source, s.ino, s.start, s.end] for s in roll.spans]
    return out


def _pending_json(p: Pending) -> dict[str, Any]:
    return {
        "roll": _roll_json(p.roll),
        "spans": [_plain(s) for s in p.spans],
        "sources": {k: _plain(v) for k, v in p.sources},
    }


def _retired(item: Any) -> Retired:
    item = _mapping(item)
    at, same_file = item["at"], item["same_file"]
    if not isinstance(at, int | float) or isinstance(at, bool):
        raise RollStateCorrupt(f"retired: at {at!r} is not a time")
    if not isinstance(same_file, bool):
        raise RollStateCorrupt(f"retired: same_file {same_file!r} is not a bool")
    return Retired(_path(item["path"]), _record(Rolled, item["rec"]), float(at), same_file)


def _roll(item: Any) -> Roll:
    item = dict(_mapping(item))
    item["spans"] = tuple(
        _record(Span, dict(zip(("source", "ino", "start", "end"), s, strict=True)))
        for s in _list(item["spans"])
    )
    roll: Roll = _record(Roll, item)
    if roll.part and not roll.name.startswith(roll.part):
        raise RollStateCorrupt(f"roll name {roll.name!r} is not in its partition {roll.part!r}")
    if roll.dest_tail and not _HASH_RE.fullmatch(roll.dest_tail):
        raise RollStateCorrupt(f"roll {roll.name!r}: dest_tail is not a fingerprint")
    return roll


_KINDS: dict[str, type | tuple[type, ...]] = {
    "int": int,
    "str": str,
    "float": (int, float),
    "bool": bool,
}


def _record(cls: Any, item: Any) -> Any:
    """A dataclass ``cls`` from a mapping, each field's type checked."""
    item = _mapping(item)
    values: dict[str, Any] = {}
    for f in fields(cls):
        value = item[f.name]
        kind = _KINDS.get(str(f.type).split(" ")[0])
        if kind is not None:
            if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
                raise RollStateCorrupt(f"{cls.__name__}.{f.name}: {value!r} has the wrong type")
            negative = isinstance(value, int) and not isinstance(value, bool) and value < 0
            if negative and f.name not in ("mtime_ns", "ctime_ns"):
                raise RollStateCorrupt(f"{cls.__name__}.{f.name}: {value} is negative")
        values[f.name] = value
    return cls(**values)


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise RollStateCorrupt(f"expected a mapping, got {type(value).__name__}")
    return value


def _list(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise RollStateCorrupt(f"expected a list, got {type(value).__name__}")
    return value


def _path(value: Any) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise RollStateCorrupt(f"source {value!r} is not an absolute path")
    return value
