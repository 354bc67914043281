"""A batch the disk took only part of (it filled up, a file size limit): the pump's
fallback writes only the rest, so no line is written twice; when the rest cannot
be written either, the torn line is ended before the next record."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from aiologship import Rotation
from aiologship._logging import _writers
from aiologship._logging._writers import FileWriter

ROOT = Path(__file__).resolve().parents[2]


class Disk:
    """``os.write`` for the writer's module: takes ``budget`` more bytes (a short
    write when a call crosses it), then fails with ENOSPC until given more."""

    def __init__(self) -> None:
        self.budget: int | None = None
        self._real = os.write

    def write(self, fd: int, data: bytes | memoryview) -> int:
        if self.budget is None:
            return self._real(fd, data)
        if self.budget <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self._real(fd, bytes(data[: self.budget]))
        self.budget -= n
        return n


@contextmanager
def disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[Disk]:
    d = Disk()
    with monkeypatch.context() as m:
        m.setattr(_writers.os, "write", d.write)
        yield d


def read_all(path: Path) -> bytes:
    """The rotated files in age order (their names sort by age), then the live one."""
    rotated = sorted(p for p in path.parent.glob(path.name + ".*") if p.is_file())
    return b"".join(p.read_bytes() for p in rotated) + (path.read_bytes() if path.exists() else b"")


def pump_write(writer: FileWriter, lines: list[str]) -> bool:
    """What the pump does with a batch: ``awrite``, then ``write_sync`` if it raised.
    True when the batch got through."""

    async def go() -> None:
        await writer.awrite(lines)

    try:
        anyio.run(go)
        return True
    except OSError:
        try:
            writer.write_sync(lines)
            return True
        except OSError:
            return False


line_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"), max_size=30
)
batches = st.lists(line_text.map(lambda t: t + "\n"), min_size=1, max_size=12)


# Small budgets often: a disk that is full stays full for a while.
taken = st.one_of(st.just(0), st.integers(0, 40), st.integers(0, 300))
budget = st.one_of(st.none(), taken)


@settings(max_examples=200, deadline=None)
@example(  # a torn line, then a batch the disk takes nothing of: the newline stays owed
    steps=[(["abcdef\n"], 3, 0), (["xyz\n"], 0, 0)], last=["last\n"], rotate=None
)
@given(
    steps=st.lists(st.tuples(batches, taken, budget), min_size=1, max_size=4),
    last=batches,
    rotate=st.sampled_from([None, 40, 200]),
)
def test_batches_the_disk_took_part_of_are_finished_not_repeated(
    tmp_path_factory: pytest.TempPathFactory,
    steps: list[tuple[list[str], int, int | None]],
    last: list[str],
    rotate: int | None,
) -> None:
    """Batches the pump writes while the disk fills up and frees space again: for
    each, the disk takes ``first`` bytes of ``awrite`` and ``second`` (None: all)
    of the fallback. Then a batch with room to spare. The files hold exactly what
    a disk that refuses no byte twice would: each batch's bytes once, in order,
    resumed where the last try stopped; a torn line ended by a newline before the
    next batch; the last batch whole. A failed fallback names the whole lines of
    its batch that are on disk."""
    path = tmp_path_factory.mktemp("partial") / "app.log"
    rotation = Rotation(max_bytes=rotate) if rotate else None
    writer = FileWriter(path, rotation=rotation, tz=UTC)
    expected = b""
    with pytest.MonkeyPatch.context() as mp, disk(mp) as d:
        for lines, first, second in [*steps, (last, None, None)]:
            data = "".join(lines).encode("utf-8", "backslashreplace")
            owed = b"\n" if expected and not expected.endswith(b"\n") else b""
            todo = owed + data
            d.budget = first
            try:
                anyio.run(writer.awrite, lines)
                took = len(todo)
            except OSError:
                took = min(first or 0, len(todo))
                d.budget = second
                try:
                    writer.write_sync(lines)
                    took = len(todo)
                except OSError as exc:
                    took = min(len(todo), took + (second or 0))
                    batch_part = todo[len(owed) :][: max(0, took - len(owed))]
                    assert exc.lines_written == batch_part.count(b"\n")  # type: ignore[attr-defined]
            expected += todo[:took]
    anyio.run(writer.aclose)
    assert read_all(path) == expected
    assert expected.endswith("".join(last).encode("utf-8", "backslashreplace"))


def test_a_file_size_limit_hit_mid_batch_in_a_real_process(tmp_path: Path) -> None:
    """RLIMIT_FSIZE: the kernel writes what fits (a short write), then EFBIG. The
    records that did not fit are counted as write errors, the torn line is ended,
    and once the limit is lifted the next records are written whole."""
    path = tmp_path / "app.log"
    script = textwrap.dedent(
        f"""
        import logging, resource, signal
        from aiologship import LogManager

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, hard))
        with LogManager() as lm:
            log = lm.get_logger("fsize")
            logging.getLogger("fsize").propagate = False
            log.add({str(path)!r}, fmt="%(message)s")
            for i in range(1000):
                log.info("first %04d " + "x" * 90, i)
            assert lm.flush(30)
            errors = lm.stats().write_errors
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            for i in range(1000):
                log.info("second %04d", i)
        print("errors", errors)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    errors = int(done.stdout.split()[-1])
    assert errors > 0
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""
    lines = lines[:-1]
    firsts = [line for line in lines if line.startswith(b"first")]
    seconds = [line for line in lines if line.startswith(b"second")]
    assert seconds == [f"second {i:04d}".encode() for i in range(1000)]
    whole = [line for line in firsts if len(line) == len(b"first 0000 ") + 90]
    assert whole == [f"first {i:04d} ".encode() + b"x" * 90 for i in range(len(whole))]
    # At most one torn line, the last of the first ones, a prefix of the next record.
    torn = firsts[len(whole) :]
    assert len(torn) <= 1
    if torn:
        assert (f"first {len(whole):04d} ".encode() + b"x" * 90).startswith(torn[0])
    assert len(lines) == len(firsts) + len(seconds)
    assert errors == 1000 - len(whole)
