"""``FileSinks``: one manager's sinks, the handlers on stdlib loggers and the
writers behind them: one writer per real path, one per stream (``_streams``).

``LogManager`` answers the ``SinkRegistry`` protocol ``Logger`` uses by
delegating here, after its own closed check.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import IO, Any

from .._config import ManagerConfig, Rotation, SinkConfig
from .._exceptions import ConfigError
from ._console import ColorFormatter, wants_color
from ._formatting import make_formatter
from ._pipeline import Pipeline
from ._queue import SinkHandler
from ._streams import StreamWriter, check_stream, resolve_stream, stream_key
from ._writers import FileWriter, Writer

_DROP_NOTE = (
    "aiologship dropped %d records for this sink: the stream was not read "
    "(buffer=%d lines, overflow=%s)"
)


class FileSinks:
    """Sinks by id, writers by real path (shared, reference-counted)."""

    def __init__(self, config: ManagerConfig, pipeline: Pipeline) -> None:
        self._config = config
        self.pipeline = pipeline
        self._lock = threading.RLock()
        self._writers: dict[Hashable, tuple[Writer, int]] = {}
        self._sinks: dict[int, tuple[logging.Logger, SinkHandler]] = {}
        self._ids = itertools.count(1)

    def __len__(self) -> int:
        return len(self._sinks)

    def attach(self, sink: SinkConfig) -> int:
        """Add a handler for ``sink`` to its stdlib logger; returns the sink's id."""
        config = self._config
        fmt_kind = sink.format if sink.format is not None else config.format
        json = str(fmt_kind) == "json"
        formatter = make_formatter(json=json, fmt=sink.fmt or config.fmt, tz=config.timezone)
        std = logging.getLogger(sink.logger or None)
        if sink.stream is not None:
            if sink.rotation is not None or sink.retention is not None:
                key = "rotation" if sink.rotation is not None else "retention"
                raise ConfigError(key, getattr(sink, key), "a stream sink does not rotate")
            target = resolve_stream(sink.stream)
            check_stream(target)
            color = sink.color if sink.color is not None else wants_color(target)
            if color and not json:
                formatter = ColorFormatter(formatter)
            return self.attach_stream(std, target, formatter, sink.level)[0]
        assert sink.path is not None
        with self._lock:
            writer = self.writer_for(sink.path, sink.rotation, sink.retention)
            return self._add_handler(std, writer, formatter, sink.level)[0]

    def attach_stream(
        self,
        std: logging.Logger,
        target: IO[str] | int,
        formatter: logging.Formatter,
        level: int,
        *,
        position: int | None = None,
        filters: Sequence[Any] = (),
    ) -> tuple[int, SinkHandler]:
        """A stream sink on ``std`` (at ``position`` in its handler list, else last)
        with ``filters``, which it has before any record can reach it."""
        with self._lock:
            writer = self.stream_writer_for(target, formatter)
            return self._add_handler(std, writer, formatter, level, position, filters)

    def _add_handler(
        self,
        std: logging.Logger,
        writer: Writer,
        formatter: logging.Formatter,
        level: int,
        position: int | None = None,
        filters: Sequence[Any] = (),
    ) -> tuple[int, SinkHandler]:
        handler = self.pipeline.make_handler(writer, formatter, level)
        for flt in filters:
            handler.addFilter(flt)
        if position is None:
            std.addHandler(handler)
        else:
            # logging.Logger has no insert: the same lock addHandler takes.
            with logging._lock:  # type: ignore[attr-defined]
                std.handlers.insert(position, handler)
        sink_id = next(self._ids)
        self._sinks[sink_id] = (std, handler)
        return sink_id, handler

    def stream_writer_for(self, target: IO[str] | int, formatter: logging.Formatter) -> Writer:
        """The writer of ``target`` (one per stream object or descriptor), counted."""
        key = stream_key(target)
        with self._lock:
            entry = self._writers.get(key)
            if entry is not None:
                self._writers[key] = (entry[0], entry[1] + 1)
                return entry[0]
            config = self._config

            def note(count: int) -> str:
                record = logging.LogRecord(
                    "aiologship", logging.WARNING, __file__, 0, _DROP_NOTE,
                    (count, config.queue_size, config.overflow.value), None,
                )  # fmt: skip
                return formatter.format(record) + "\n"

            writer = StreamWriter(
                target, capacity=config.queue_size, overflow=config.overflow, drop_note=note
            )
            self._writers[key] = (writer, 1)
            self.pipeline.track_stream(writer)
            return writer

    def handler_of(self, sink_id: int) -> SinkHandler | None:
        with self._lock:
            entry = self._sinks.get(sink_id)
        return None if entry is None else entry[1]

    def writer_for(self, path: Path, rotation: Rotation | None, retention: int | None) -> Writer:
        """The writer of ``path``'s real file, made on first use and counted."""
        # The real path: a file reached through a symlinked folder (or a symlink)
        # is one file with one writer, or two writers would rotate it under each
        # other. Writers in other managers and processes share it through
        # FileWriter's lock.
        key = Path(os.path.realpath(path))
        with self._lock:
            try:
                return self._shared_writer(key, rotation, retention)
            except ConfigError as exc:
                if exc.key != "path" or exc.value == str(path):
                    raise
                # Name the path the user gave, and where it leads.
                raise ConfigError("path", str(path), f"{exc.reason} (real path {key})") from exc

    def _shared_writer(self, key: Path, rotation: Rotation | None, retention: int | None) -> Writer:
        entry = self._writers.get(key)
        if entry is not None:
            writer, refs = entry
            if isinstance(writer, FileWriter) and (
                writer.rotation != rotation or writer.retention != retention
            ):
                raise ConfigError(
                    "rotation",
                    rotation,
                    f"{key} is already a sink with rotation={writer.rotation}"
                    f" and retention={writer.retention}; one file has one rotation policy",
                )
            self._writers[key] = (writer, refs + 1)
            return writer
        writer = FileWriter(key, rotation=rotation, retention=retention, tz=self._config.timezone)
        self._writers[key] = (writer, 1)
        return writer

    def remove(self, sink_id: int, *, drain: bool) -> None:
        """Detach a sink; with ``drain`` its queued records are written first."""
        with self._lock:
            entry = self._sinks.pop(sink_id, None)
        if entry is None:
            raise ConfigError("sink_id", sink_id, "no such sink (already removed?)")
        std, handler = entry
        std.removeHandler(handler)
        pipeline = self.pipeline
        if drain and not pipeline.in_runtime_thread():
            pipeline.flush()
            # Queued records name their sink by number until the pump writes them.
            pipeline.queue.unregister(handler)
        with self._lock:
            key = next((k for k, (w, _) in self._writers.items() if w is handler.writer), None)
            if key is None:
                return
            writer, refs = self._writers[key]
            if refs > 1:
                self._writers[key] = (writer, refs - 1)
                return
            del self._writers[key]
        runtime = pipeline.runtime
        if runtime.running and not runtime.in_runtime_thread():
            runtime.call(writer.aclose)
        if isinstance(writer, StreamWriter):
            pipeline.untrack_stream(writer)

    async def aclose_writers(self) -> None:
        """On the runtime loop, after the pump exited: close every writer."""
        for writer, _ in list(self._writers.values()):
            await writer.aclose()

    def reset_after_fork(self) -> None:
        """In a forked child: the parent's descriptors are the parent's."""
        self._lock = threading.RLock()
        for writer, _ in self._writers.values():
            writer.forget()
