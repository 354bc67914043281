"""Fields that follow the code that logs: a ``contextvars`` context, and sources.

Two kinds of fields are merged into every record, lowest precedence first:

1. **Sources** (``add_source``): process-wide providers of automatic fields (Ray
   ids, trace ids). A source is called on every log call, so it must be cheap (no
   I/O: cache what does not change), never raise, and return ``()`` when nothing
   applies.
2. **The bound context** (``context()``, ``bind_context``): a ``ContextVar``, so it
   follows ``asyncio.create_task``, anyio task groups, ``anyio.to_thread.run_sync``
   and ``loop.run_in_executor`` exactly as Python copies contexts, and a binding
   made in one task never reaches its siblings.

Then the logger's own ``Logger.bind()`` fields, then the call's ``extra=``: the
later one wins a clash. No field may be named like a ``LogRecord`` attribute
(``_records.RESERVED``): binding one raises ``ConfigError`` at once.

Why pairs: the context is kept as a tuple of ``(key, value)`` pairs built at bind
time, so a log call with context bound pays one ``ContextVar.get`` and a tuple
concatenation, and the queued item stays a flat tuple of immutable values (the
fast path of ``_records.capture``). A bound value of another type (a dict, a
list...) is kept in a ``_Live`` tuple instead and copied at each log call
(``snapshot``): a later mutation never changes what was logged.
"""

from __future__ import annotations

import threading
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Protocol

from .._exceptions import ConfigError
from ._records import IMMUTABLE, RESERVED, safe_repr, snapshot

__all__ = [
    "Pairs",
    "Source",
    "add_source",
    "add_to_record",
    "bind_context",
    "context",
    "fields_now",
    "get_context",
    "remove_source",
    "snapshot",
    "snapshot_pairs",
    "source_pairs",
    "unbind_context",
]

Pairs = tuple[tuple[str, Any], ...]


class Source(Protocol):
    """An automatic-field provider (see ``add_source``)."""

    def __call__(self) -> Pairs:
        """The fields to add to a record made now: cheap (no I/O), never raises,
        ``()`` when nothing applies. Values should be str/int/float/bool/None;
        anything else is logged as its ``repr``."""
        ...


class _Live(tuple):  # type: ignore[type-arg]
    """Bound pairs of which at least one value is mutable: ``snapshot_pairs`` copies
    them at each log call. A tuple subclass so ``type(x) is tuple`` tells the
    immutable kind apart in one test."""

    __slots__ = ()


_EMPTY: Pairs = ()
_current: ContextVar[Pairs] = ContextVar("aiologship_context", default=_EMPTY)
current = _current.get  # the bound pairs; a _Live when a value needs a snapshot

# Replaced whole (never mutated) so a log call reads it without a lock.
_sources: tuple[Source, ...] = ()
_sources_lock = threading.Lock()
# The one source, when exactly one is added and it was added ``checked`` (it never
# raises and its pairs need no check: aiologship's own Ray/trace source). A log
# call then calls it directly instead of ``source_pairs``: 0.1 against 0.5 µs in a
# process that imported neither Ray nor OpenTelemetry (measured, 3.11). Set to
# None before ``_sources`` changes and recomputed after, so a call in between
# takes the general path.
_sole: Source | None = None
_trusted: set[int] = set()
# The last pairs each source returned, once checked: a source that caches its
# tuple (Ray ids) is checked once, not per call.
_checked: dict[int, Pairs] = {}


# ----------------------------------------------------------------- values


def snapshot_pairs(pairs: Pairs) -> Pairs:
    return tuple([(key, snapshot(value)) for key, value in pairs])


def check_fields(fields: dict[str, Any]) -> Pairs:
    """Bound fields as pairs, a ``_Live`` tuple when a value needs a snapshot.
    Raises ``ConfigError`` naming the first key that is no ``str`` or shadows a
    ``LogRecord`` attribute."""
    for key in fields:
        if type(key) is not str:
            raise ConfigError(
                "context field", key, "a field name must be a str (it becomes a record attribute)"
            )
        if key in RESERVED:
            raise ConfigError(
                "context field",
                key,
                "shadows a logging.LogRecord attribute; choose another name",
            )
    pairs = tuple(fields.items())
    for _, value in pairs:
        if type(value) not in IMMUTABLE:
            return _Live(pairs)
    return pairs


def merge_pairs(base: Pairs, fields: dict[str, Any]) -> Pairs:
    """``base`` with ``fields`` added (a key already in ``base`` keeps its place and
    takes the new value), checked by ``check_fields``."""
    if not base:
        return check_fields(fields)
    merged = dict(base)
    check_fields(fields)
    merged.update(fields)
    return check_fields(merged)


# ----------------------------------------------------------------- sources


def add_source(source: Source, *, checked: bool = False) -> None:
    """Add an automatic-field provider for the whole process; adding the same
    object twice adds it once. Its fields have the lowest precedence.
    ``checked``: the source never raises and returns only valid pairs (str keys
    that are no record attribute, immutable values), so calls skip the checks."""
    global _sources, _sole
    with _sources_lock:
        if source not in _sources:
            _sole = None
            if checked:
                _trusted.add(id(source))
            _sources = (*_sources, source)
            _sole = _sole_now()


def remove_source(source: Source) -> None:
    """Remove a provider added by ``add_source``; one never added: no error."""
    global _sources, _sole
    with _sources_lock:
        _sole = None
        for gone in [s for s in _sources if s == source]:
            _checked.pop(id(gone), None)
            _trusted.discard(id(gone))
        _sources = tuple(s for s in _sources if s != source)
        _sole = _sole_now()


def _sole_now() -> Source | None:
    if len(_sources) == 1 and id(_sources[0]) in _trusted:
        return _sources[0]
    return None


def source_pairs() -> Pairs:
    """Every source's pairs, in the order the sources were added."""
    sources = _sources
    if not sources:
        return _EMPTY
    out: Pairs = _EMPTY
    for source in sources:
        try:
            pairs = source()
        except Exception:
            continue  # a source must not raise; if it does, the record still goes out
        if not pairs:
            continue
        if _checked.get(id(source)) is not pairs:
            pairs = _check_source_pairs(source, pairs)
        out += pairs
    return out


def _check_source_pairs(source: Source, pairs: Pairs) -> Pairs:
    # A reserved or non-str key would overwrite or break the record: dropped. A
    # mutable value would put a tracked reference in the queue: its repr instead.
    checked = tuple(
        [
            (key, value if type(value) in IMMUTABLE else safe_repr(value))
            for key, value in pairs
            if type(key) is str and key not in RESERVED
        ]
    )
    if checked == pairs:
        checked = pairs
        _checked[id(source)] = pairs
    return checked


# ----------------------------------------------------------------- context


def fields_now() -> Pairs:
    """Sources then bound context, as a log call would merge them now (snapshots
    taken): what the stdlib-path handlers add to a record they receive."""
    bound = _current.get()
    if type(bound) is not tuple:
        bound = snapshot_pairs(bound)
    if _sources:
        return source_pairs() + bound
    return bound


def add_to_record(d: dict[str, Any]) -> None:
    """Merge ``fields_now()`` into a record's ``__dict__`` made by a plain stdlib
    logger: a field the record already has (its ``extra=``, or a field merged by
    ``aiologship.Logger``) is kept, as ``extra=`` wins a clash."""
    fields = fields_now()
    if fields:
        for key, value in dict(fields).items():  # dict(): the last pair of a key wins
            if key not in d:
                d[key] = value


def get_context() -> dict[str, Any]:
    """The fields bound in the current context (not the sources', not a logger's)."""
    return dict(_current.get())


def bind_context(**fields: Any) -> None:
    """Bind fields in the current context until unbound (or the context ends: a
    task's bindings die with it). For middleware that cannot use ``with``; inside
    a ``with context(...)`` block, leaving the block restores what was bound
    before it."""
    _current.set(merge_pairs(_current.get(), fields))


def unbind_context(*keys: str) -> None:
    """Remove these fields from the current context; an absent key is no error."""
    bound = _current.get()
    if not any(key in keys for key, _ in bound):
        return
    kept = tuple([(key, value) for key, value in bound if key not in keys])
    live = any(type(value) not in IMMUTABLE for _, value in kept)
    _current.set(_Live(kept) if live else kept)


class context:  # lower case: used like a function, ``with aiologship.context(...)``
    """Bind fields for the duration of a ``with`` (or ``async with``) block.

    Nesting adds and overrides; leaving a block restores the fields bound when it
    was entered. Bad field names raise ``ConfigError`` when the object is made.
    """

    __slots__ = ("_fields", "_tokens")

    def __init__(self, **fields: Any) -> None:
        check_fields(fields)
        self._fields = fields
        self._tokens: list[tuple[Token[Pairs], Pairs]] = []

    def __enter__(self) -> dict[str, Any]:
        before = _current.get()
        token = _current.set(merge_pairs(before, self._fields))
        self._tokens.append((token, before))
        return get_context()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, before = self._tokens.pop()
        try:
            _current.reset(token)
        except ValueError:
            # Left in another context than the one it was entered in (an async
            # generator finalised elsewhere): restore the value, not the token.
            _current.set(before)

    async def __aenter__(self) -> dict[str, Any]:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"aiologship.context({inner})"
