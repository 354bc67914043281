"""Rotation and retention of file sinks: names unique and ordered by age at any
rate, retention removes only the oldest, and what is kept is the newest records."""

from __future__ import annotations

import itertools
import re
import tempfile
from datetime import UTC, timedelta
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiologship import LogManager
from aiologship._config import Rotation
from aiologship._logging._writers import FileWriter
from tests.conftest import read_lines


def rotated_key(name: str, base: str) -> tuple[str, int] | None:
    """(stamp, N) of ``BASE.YYYYmmdd-HHMMSS[-N]``; None for any other name."""
    match = re.fullmatch(re.escape(base) + r"\.(\d{8}-\d{6})(?:-(\d+))?", name)
    if match is None:
        return None
    return match.group(1), int(match.group(2) or 0)


def files_by_age(path: Path) -> list[Path]:
    """The rotated files of ``path``, oldest first, then ``path`` itself if it exists."""
    rotated = []
    for p in path.parent.iterdir():
        key = rotated_key(p.name, path.name)
        if key is not None:
            rotated.append((key, p))
    files = [p for _, p in sorted(rotated)]
    return files + ([path] if path.exists() else [])


def unexpected_files(path: Path) -> list[str]:
    """Files in the folder that are neither the sink, its rotated files, nor its lock."""
    allowed = {path.name, f".{path.name}.lock"}
    return [
        p.name
        for p in path.parent.iterdir()
        if p.name not in allowed and rotated_key(p.name, path.name) is None
    ]


def test_many_rotations_in_one_second_keep_the_newest_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every rotation below happens in the same clock second: from the fourth one on,
    # a reused name used to sort first and retention deleted the newest file.
    import aiologship._logging._writers as sinks

    frozen = 1_700_000_000.25
    monkeypatch.setattr(sinks.time, "time", lambda: frozen)
    path = tmp_path / "burst" / "app.log"
    with LogManager() as lm:
        log = lm.get_logger("burst")
        log.add(path, fmt="%(message)s", rotation="1 KB", retention=2)
        for i in range(2000):
            log.info("line %05d", i)  # 11 bytes per line: ~22 rotations
    assert unexpected_files(path) == []
    files = files_by_age(path)
    assert len(files) == 3  # two rotated files kept, plus the live one
    kept = [line for p in files for line in read_lines(p)]
    assert kept == [f"line {i:05d}" for i in range(2000 - len(kept), 2000)]
    # The two rotated files are full: nothing newer than them was thrown away.
    assert len(kept) > 2 * (1000 // 11) - 1
    # 90 lines per full file, 22 rotations, all stamped with the same second.
    assert [p.name for p in files[:2]] == [
        "app.log.20231114-221320-020",
        "app.log.20231114-221320-021",
    ]


def test_rotated_names_stay_ordered_when_the_clock_goes_back(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "back.log"
    writer = FileWriter(path, rotation=Rotation(max_bytes=10), tz=UTC, clock=clock)
    steps = [0.0, 0.0, 0.0, 5.0, -3600.0, -1.0, 0.0, 7200.0, 0.0]
    names: list[list[str]] = []
    for i, step in enumerate(steps):
        clock.now += step
        writer.write_sync([f"{i:09d}\n"])  # 10 bytes: each line after the first rotates
        names.append([p.name for p in files_by_age(path)[:-1]])
    final = names[-1]
    assert len(final) == len(set(final)) == len(steps) - 1
    # Each rotation adds a name that sorts after all earlier ones (files_by_age
    # sorts by the parsed key), and the files hold the lines in order.
    for earlier, later in itertools.pairwise(names):
        assert later[: len(earlier)] == earlier
    assert [read_lines(tmp_path / n) for n in final] == [[f"{i:09d}"] for i in range(8)]
    assert final == [
        "back.log.20231114-221320",
        "back.log.20231114-221320-001",
        "back.log.20231114-221325",
        "back.log.20231114-221325-001",  # the clock went back an hour
        "back.log.20231114-221325-002",
        "back.log.20231114-221325-003",
        "back.log.20231114-231324",  # and forward again
        "back.log.20231114-231324-001",
    ]


def test_time_rotation_by_one_writer_is_followed_by_the_other(tmp_path: Path) -> None:
    # Two writers of one file (two managers, or two processes): when the hour
    # turns, the first to write rotates; the other follows it to the new file and
    # does not rotate that one again.
    clock = FakeClock()
    path = tmp_path / "hourly.log"
    hourly = Rotation(interval=timedelta(hours=1))
    a, b = (FileWriter(path, rotation=hourly, tz=UTC, clock=clock) for _ in range(2))

    async def scenario() -> None:
        await a.awrite(["a1\n"])
        await b.awrite(["b1\n"])
        clock.now += 3600
        await a.awrite(["a2\n"])
        await b.awrite(["b2\n"])
        await a.aclose()
        await b.aclose()

    anyio.run(scenario)
    assert [read_lines(p) for p in files_by_age(path)] == [["a1", "b1"], ["a2", "b2"]]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.5

    def __call__(self) -> float:
        return self.now


def _line(n: int, width: int) -> str:
    return f"{n:06d}" + "x" * ((n * 7) % (width + 1)) + "\n"


def _model_rotations(sizes: list[int], max_bytes: int) -> int:
    """How many rotations a size limit implies: a line that would push a non-empty
    file past ``max_bytes`` starts a new file."""
    rotations = size = 0
    for n in sizes:
        if size and size + n > max_bytes:
            rotations += 1
            size = 0
        size += n
    return rotations


batch = st.tuples(
    st.integers(0, 1),  # which writer (a second writer stands for a second process)
    st.integers(1, 40),  # lines in the batch
    st.sampled_from([0.0, 0.0, 0.0, 0.3, 1.0, 61.0, -2.0]),  # clock step before it
    st.booleans(),  # the synchronous path (after close) instead of the pump's
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    max_bytes=st.integers(8, 300),
    interval=st.none() | st.sampled_from([1, 60]),
    retention=st.none() | st.integers(0, 4),
    writers=st.integers(1, 2),
    width=st.integers(0, 60),
    batches=st.lists(batch, min_size=1, max_size=25),
)
def test_rotation_keeps_a_contiguous_newest_suffix(
    max_bytes: int,
    interval: int | None,
    retention: int | None,
    writers: int,
    width: int,
    batches: list[tuple[int, int, float, bool]],
) -> None:
    """Any rate, size limit, interval and retention: the live file plus the kept
    rotated files, read oldest first, hold exactly the newest records, contiguous
    and in order; retention keeps as many rotated files as it may; names never
    repeat and each new one sorts after all earlier ones."""
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "app.log"

        async def scenario() -> None:
            ws = [
                FileWriter(
                    path,
                    rotation=Rotation(
                        max_bytes=max_bytes,
                        interval=None if interval is None else timedelta(seconds=interval),
                    ),
                    retention=retention,
                    tz=UTC,
                    clock=clock,
                )
                for _ in range(writers)
            ]
            written: list[int] = []  # line sizes, in order
            seen = Names()
            for who, count, step, sync in batches:
                clock.now += step
                first = len(written)
                lines = [_line(n, width) for n in range(first, first + count)]
                writer = ws[who % writers]
                if sync:
                    writer.write_sync(lines)
                else:
                    await writer.awrite(lines)
                written += [len(line) for line in lines]
                _check(path, written, max_bytes, retention, seen, timed=interval is not None)
            for w in ws:
                await w.aclose()

        anyio.run(scenario)


def _check(
    path: Path,
    written: list[int],
    max_bytes: int,
    retention: int | None,
    seen: Names,
    *,
    timed: bool,
) -> None:
    assert unexpected_files(path) == []
    files = files_by_age(path)
    numbers = []
    for p in files:
        lines = read_lines(p)
        assert lines, f"{p.name} is empty"
        if len(lines) > 1:
            assert p.stat().st_size <= max_bytes, f"{p.name} grew past the limit"
        numbers += [int(line[:6]) for line in lines]
    total = len(written)
    assert numbers == list(range(total - len(numbers), total)), "not the newest suffix"
    kept = len(files) - 1
    if timed:  # more rotations than the size model says, as the clock decides
        assert retention is None or kept <= retention
    else:
        rotations = _model_rotations(written, max_bytes)
        assert kept == (rotations if retention is None else min(retention, rotations))
    if retention is None:
        assert len(numbers) == total
    # A name alive at the last check may stay; any other name is new, and a new
    # name must sort after every name seen before (so none is ever reused).
    newest = seen.newest
    alive = set()
    for p in files[:-1]:
        key = rotated_key(p.name, path.name)
        assert key is not None
        if p.name not in seen.alive:
            assert key > newest, f"{p.name} is new but does not sort after {newest}"
            seen.newest = max(seen.newest, key)
        alive.add(p.name)
    seen.alive = alive


class Names:
    """The rotated names alive at the last check, and the greatest key ever seen."""

    def __init__(self) -> None:
        self.alive: set[str] = set()
        self.newest: tuple[str, int] = ("", -1)
