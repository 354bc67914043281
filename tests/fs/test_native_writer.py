"""The native driver's writer is closed exactly once, on every path.

hdfs_native.FileWriter is an ``io.RawIOBase`` whose ``close()`` never marks it
closed, so its finalizer closes it again when it is collected. After a failed write
that second close raises inside the garbage collector (an unraisable exception,
which Python 3.13 reports and pytest turns into an error), and a writer nobody
closed keeps its HDFS lease until then.
"""

from __future__ import annotations

import gc
import sys
from typing import Any

import pyarrow
import pytest

hdfs_native = pytest.importorskip("hdfs_native")

from aiologship._fs._hdfs._native import _stream  # noqa: E402


class _BrokenRaw:
    """A raw hdfs-native writer whose pipeline broke: writes and closes fail."""

    def __init__(self) -> None:
        self.closes = 0

    def write(self, buf: Any) -> int:
        raise RuntimeError("DataNode pipeline broken")

    def close(self) -> None:
        self.closes += 1
        raise RuntimeError("cannot complete file: pipeline broken")


def _unraisable(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def test_failed_writer_closed_once_and_not_again_by_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _unraisable(monkeypatch)
    raw = _BrokenRaw()
    writer = hdfs_native.FileWriter(raw)
    out = _stream(writer, "/t/a.log")
    with pytest.raises(OSError, match=r"hdfs write /t/a\.log"):
        out.write(b"x" * 10)
    with pytest.raises(OSError, match=r"hdfs close /t/a\.log"):
        out.close()
    assert raw.closes == 1 and writer.closed
    del out, writer
    gc.collect()
    assert raw.closes == 1
    # Before 3.13 the finalizer's error was dropped silently; the count above is what
    # shows the second close on every Python.
    assert seen == []


def test_closed_writer_not_closed_again_by_gc(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _unraisable(monkeypatch)

    class Raw:
        closes = 0

        def write(self, buf: Any) -> int:
            return len(buf)

        def close(self) -> None:
            Raw.closes += 1

    writer = hdfs_native.FileWriter(Raw())
    out = _stream(writer, "/t/b.log")
    out.write(pyarrow.py_buffer(b"abc"))
    out.close()
    del out, writer
    gc.collect()
    assert Raw.closes == 1
    assert seen == []
