"""Roll-up of sealed files (``rollup=``) on real local destinations: sealed
sources concatenated into roll files per partition, rolled by size and by
interval, compressed rolls read by the standard tools, the manifest's ranges,
and recovery from an append the manifest never committed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from aiologship._copy import CopyEngine, CopySpec, _rollrun, _rollup
from aiologship._copy._manifest import MANIFEST_NAME
from aiologship._copy._rollstate import LEDGER_SUFFIX
from aiologship._copy._spec import RollUp
from aiologship._copy._transfer import TMP_MARK
from aiologship._exceptions import ConfigError
from tests.copy.test_engine import Env, LocalHandler

pytestmark = pytest.mark.anyio

START = 1_800_000_000.0  # the fake clock's start (2027-01-15, UTC)
SETTLE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class RollEnv(Env):
    """An ``Env`` whose engines run on a fake clock; sources are written with
    an mtime on that clock, so "sealed" is decided by the test."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.clock = Clock()

    async def roller(
        self, rollup: Any = True, resolver: Any = None, **overrides: Any
    ) -> CopyEngine:
        default = {"size": "1 MiB", "settle": SETTLE}
        params: dict[str, Any] = {"rollup": default if rollup is True else rollup}
        params.update(overrides)
        engine = CopyEngine(
            self.spec(**params),
            state_dir=self.state,
            sleep=self.sleep,
            clock=self.clock,
            workers=2,
            resolver=resolver,
        )
        await engine.open()
        self.engines.append(engine)
        return engine

    def put(self, rel: str, data: bytes, mode: str = "wb", age: float = 600.0) -> Path:
        path = self.write(rel, data, mode)
        t = self.clock.now - age
        os.utime(path, (t, t))
        return path

    def rolls(self) -> dict[str, bytes]:
        return {
            k: v
            for k, v in self.dest_files().items()
            if LEDGER_SUFFIX not in k and TMP_MARK not in k
        }

    def manifest(self) -> dict[str, Any]:
        (folder,) = [p for p in self.state.iterdir() if (p / MANIFEST_NAME).exists()]
        data: dict[str, Any] = json.loads((folder / MANIFEST_NAME).read_bytes())
        return data

    def ranges(self) -> dict[str, list[list[Any]]]:
        """Roll name -> its [source, ino, start, end] spans, from the manifest."""
        return {r["name"]: r["spans"] for r in self.manifest()["rollup"]["rolls"]}


def decompress(data: bytes, codec: str | None) -> bytes:
    if codec is None:
        return data
    out: bytes = pa.CompressedInputStream(pa.BufferReader(data), codec).read()
    return out


def assert_exactly_once(env: RollEnv, sources: dict[str, bytes], codec: str | None = None) -> None:
    """Every roll file decompresses to its recorded spans' source bytes, and
    the spans of each source tile ``[0, len)`` once."""
    rolls = env.rolls()
    ranges = env.ranges()
    got: dict[str, list[tuple[int, int]]] = {}
    for name, data in rolls.items():
        expected = b"".join(sources[Path(s).name][a:b] for s, _, a, b in ranges[name])
        assert decompress(data, codec) == expected, name
        for s, _, a, b in ranges[name]:
            got.setdefault(Path(s).name, []).append((a, b))
    for name, data in sources.items():
        spans = sorted(got.get(name, []))
        pos = 0
        for a, b in spans:
            assert a == pos, f"{name}: gap or overlap at {pos}: {spans}"
            pos = b
        assert pos == len(data), f"{name}: rolled up to {pos} of {len(data)}"


def text(tag: str, n: int) -> bytes:
    return b"".join(f"{tag} {i:06d} {'z' * 40}\n".encode() for i in range(n))


@pytest.fixture
async def renv(tmp_path: Path) -> Any:
    e = RollEnv(tmp_path)
    yield e
    for engine in e.engines:
        await engine.stop(final_cycle=False)


async def test_sealed_files_go_to_one_roll_and_live_ones_wait(renv: RollEnv) -> None:
    sources = {f"app.log.{i}": text(f"r{i}", 50) for i in range(5)}
    for name, data in sources.items():
        renv.put(name, data)
    renv.put("app.log", b"live\n", age=1.0)
    engine = await renv.roller()
    result = await engine.flush()
    assert result.files_shipped == 5 and result.pending_files == 1
    assert len(renv.rolls()) == 1
    assert_exactly_once(renv, sources)
    status = engine.status()
    assert status.roll_files == 1 and status.bytes_behind == 5
    # Nothing new: a second cycle writes nothing.
    again = await engine.flush()
    assert again.bytes_shipped == 0 and len(renv.rolls()) == 1
    # The live file seals: appended to the same roll.
    renv.clock.now += SETTLE
    third = await engine.flush()
    assert third.files_shipped == 1 and third.pending_files == 0
    assert_exactly_once(renv, {**sources, "app.log": b"live\n"})
    assert len(renv.rolls()) == 1


async def test_rolls_by_size_splitting_a_source(renv: RollEnv) -> None:
    sources = {f"app.log.{i}": text(f"s{i}", 400) for i in range(4)}  # 20,400 bytes each
    for name, data in sources.items():
        renv.put(name, data)
    engine = await renv.roller({"size": 30_000, "settle": SETTLE})
    await engine.flush()
    rolls = renv.rolls()
    # Cut at the last line end within the size (51-byte lines): 588 lines each,
    # and a roll with no room for a whole line is closed, not cut mid-line.
    assert sorted(len(v) for v in rolls.values()) == [21_624, 29_988, 29_988]
    assert all(v.endswith(b"\n") for v in rolls.values())
    assert_exactly_once(renv, sources)
    closed = [r["closed"] for r in renv.manifest()["rollup"]["rolls"]]
    assert closed.count(True) == 2


async def test_a_line_longer_than_a_roll_is_still_split(renv: RollEnv) -> None:
    sources = {"a.log": b"x" * 2500 + b"\n"}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller({"size": 1000, "settle": SETTLE})
    await engine.flush()
    assert sorted(len(v) for v in renv.rolls().values()) == [501, 1000, 1000]
    assert_exactly_once(renv, sources)


async def test_rolls_by_interval(renv: RollEnv) -> None:
    sources = {"a.log": text("a", 10)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller({"interval": "1 h", "settle": SETTLE})
    await engine.flush()
    renv.clock.now += 1800
    sources["b.log"] = text("b", 10)
    renv.put("b.log", sources["b.log"])
    await engine.flush()
    assert len(renv.rolls()) == 1  # still within the hour
    renv.clock.now += 1800
    sources["c.log"] = text("c", 10)
    renv.put("c.log", sources["c.log"])
    await engine.flush()
    assert len(renv.rolls()) == 2
    assert_exactly_once(renv, sources)


async def test_partitions_by_template(renv: RollEnv) -> None:
    dest = str(renv.dst) + "/{date:%Y/%m/%d}/{hostname}"
    renv.put("a.log", text("a", 10))
    engine = await renv.roller(hdfs_destination=dest, timezone=None)
    await engine.flush()
    renv.clock.now += 86400
    renv.put("b.log", text("b", 10))
    renv.put("a.log", text("a2", 5), mode="ab")  # keeps its first day
    await engine.flush()
    folders = sorted(str(Path(k).parent) for k in renv.rolls())
    assert len(folders) == 2 and folders[0] != folders[1]
    by_folder = {str(Path(k).parent): k for k in renv.rolls()}
    first = renv.ranges()[by_folder[folders[0]]]
    assert [Path(s).name for s, *_ in first] == ["a.log", "a.log"]


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
async def test_compressed_rolls_read_with_the_tools(renv: RollEnv, codec: str) -> None:
    sources = {f"app.log.{i}": text(f"c{i}", 200) for i in range(3)}
    for name, data in sources.items():
        renv.put(name, data)
    engine = await renv.roller(compression=codec)
    await engine.flush()
    sources["app.log.3"] = text("late", 100)
    renv.put("app.log.3", sources["app.log.3"])
    await engine.flush()
    (name,) = renv.rolls()
    assert name.endswith({"gzip": ".log.gz", "zstd": ".log.zst"}[codec])
    assert_exactly_once(renv, sources, codec)
    tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"]}[codec]
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed")
    out = subprocess.run([*tool, str(renv.dst / name)], check=True, capture_output=True).stdout
    assert out == b"".join(sources.values())


async def test_growth_rename_and_copytruncate(renv: RollEnv) -> None:
    """A quiet live file rolled, then grown: only the new bytes follow. Renamed:
    nothing again. Rewritten in place (copytruncate): a new version, whole."""
    first = text("g", 20)
    renv.put("app.log", first)
    engine = await renv.roller()
    await engine.flush()
    more = text("h", 10)
    renv.put("app.log", more, mode="ab")
    await engine.flush()
    spans = [tuple(s[2:]) for spans in renv.ranges().values() for s in spans]
    assert spans == [(0, len(first)), (len(first), len(first) + len(more))]
    os.rename(renv.src / "app.log", renv.src / "app.log.1")
    quiet = await engine.flush()
    assert quiet.bytes_shipped == 0
    renv.put("app.log.1", b"new version\n")  # same inode, truncated and rewritten
    await engine.flush()
    (roll,) = renv.ranges().values()
    assert roll[-1][1:] == [os.stat(renv.src / "app.log.1").st_ino, 0, 12]
    assert next(iter(renv.rolls().values())).endswith(b"new version\n")


class Crash(BaseException):
    """Stands for SIGKILL between the append and the manifest's commit."""


async def crash_after_append(renv: RollEnv, monkeypatch: pytest.MonkeyPatch, **kw: Any) -> None:
    engine = await renv.roller(**kw)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise Crash

    with monkeypatch.context() as m:
        m.setattr(_rollrun.Roller, "_committed", crash)
        with pytest.raises(Crash):
            await engine.flush()
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    assert renv.manifest()["rollup"]["pending"] is not None


async def rolled_then_crashed(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch, codec: str | None
) -> dict[str, bytes]:
    """a.log rolled and committed, then b.log appended to the same roll and
    the copier "killed" before the commit: the sources."""
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(compression=codec)
    await engine.flush()
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    sources["b.log"] = text("b", 30)
    renv.put("b.log", sources["b.log"])
    await crash_after_append(renv, monkeypatch, compression=codec)
    return sources


@pytest.mark.parametrize("codec", [None, "gzip"])
async def test_uncommitted_append_is_adopted(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch, codec: str | None
) -> None:
    sources = await rolled_then_crashed(renv, monkeypatch, codec)
    restarted = await renv.roller(compression=codec)
    result = await restarted.flush()
    assert result.bytes_shipped == 0  # adopted, not written again
    assert renv.manifest()["rollup"]["pending"] is None
    assert_exactly_once(renv, sources, codec)


@pytest.mark.parametrize("codec", [None, "zstd"])
async def test_uncommitted_append_of_a_source_gone_since_is_adopted(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch, codec: str | None
) -> None:
    """Its bytes cannot be compared any more: a suffix that decodes whole to
    as many bytes as the pending ranges is adopted (a cut one would not be)."""
    sources = await rolled_then_crashed(renv, monkeypatch, codec)
    (renv.src / "b.log").unlink()
    restarted = await renv.roller(compression=codec)
    await restarted.flush()
    (roll,) = renv.ranges().values()
    assert [Path(s).name for s, *_ in roll] == ["a.log", "b.log"]
    (data,) = renv.rolls().values()
    assert decompress(data, codec) == sources["a.log"] + sources["b.log"]


async def test_longer_roll_is_cut_back_to_its_commit(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    sources = await rolled_then_crashed(renv, monkeypatch, "gzip")
    (name,) = renv.rolls()
    with open(renv.dst / name, "ab") as f:
        f.write(b"\x1f\x8b half a member")  # not the pending append
    restarted = await renv.roller(compression="gzip")
    result = await restarted.flush()
    assert result.files_shipped == 1  # b.log rolled again, once
    assert_exactly_once(renv, sources, "gzip")
    assert not [p for p in renv.dst.rglob("*") if "aiologship-repair" in p.name]


async def test_repair_stopped_between_its_delete_and_move_is_finished(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HDFS cannot rename over a file: a repair deletes the roll file, then moves
    the committed copy in. Killed in between, the next run moves it in."""
    sources = await rolled_then_crashed(renv, monkeypatch, "gzip")
    (name,) = renv.rolls()
    (committed,) = renv.manifest()["rollup"]["rolls"]
    data = (renv.dst / name).read_bytes()
    (renv.dst / f".{name}.aiologship-repair").write_bytes(data[: committed["dest_size"]])
    (renv.dst / name).unlink()
    restarted = await renv.roller(compression="gzip")
    result = await restarted.flush()
    assert result.files_shipped == 1  # b.log, appended again once
    assert_exactly_once(renv, sources, "gzip")
    assert not [p for p in renv.dst.iterdir() if "aiologship-repair" in p.name]


async def test_other_file_at_a_new_roll_name_is_left_alone(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new roll file appears whole or not at all: a different file under its
    name after a crash is someone else's, kept, and the ranges go elsewhere."""
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    await crash_after_append(renv, monkeypatch)
    (name,) = renv.rolls()
    (renv.dst / name).write_bytes(b"someone else's\n")
    restarted = await renv.roller()
    await restarted.flush()
    assert (renv.dst / name).read_bytes() == b"someone else's\n"
    (renv.dst / name).unlink()
    assert_exactly_once(renv, sources)
    assert len(renv.rolls()) == 1


async def rolled_then_manifest_lost(renv: RollEnv, sources: dict[str, bytes]) -> None:
    """``sources`` written sealed and rolled, the engine stopped, its manifest lost."""
    for name, data in sources.items():
        renv.put(name, data)
    engine = await renv.roller()
    await engine.flush()
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    for p in renv.state.rglob(MANIFEST_NAME):
        p.unlink()


async def test_lost_manifest_reads_the_ledger(renv: RollEnv) -> None:
    sources = {f"app.log.{i}": text(f"l{i}", 30) for i in range(3)}
    await rolled_then_manifest_lost(renv, sources)
    restarted = await renv.roller()
    result = await restarted.flush()
    assert result.bytes_shipped == 0
    assert_exactly_once(renv, sources)


async def test_rollup_off_keeps_the_mirror(renv: RollEnv) -> None:
    renv.put("a.log", b"abc\n")
    engine = await renv.roller(rollup=False)
    await engine.flush()
    assert renv.dest_files() == {"a.log": b"abc\n"}
    assert "rollup" not in renv.manifest()


@pytest.mark.parametrize(
    ("value", "key", "words"),
    [
        ("yes", "rollup", "expected True, None or a mapping"),
        ({"size": "big"}, "rollup.size", "expected a size"),
        ({"size": 0}, "rollup.size", "greater than zero"),
        ({"interval": "soon"}, "rollup.interval", "duration"),
        ({"interval": 0}, "rollup.interval", "greater than zero"),
        ({"size": "1 MiB", "settle": -1}, "rollup.settle", "negative"),
        ({"size": "1 MiB", "sise": 1}, "rollup", "unknown key 'sise'"),
        ({"settle": 5}, "rollup", "needs a size or an interval"),
    ],
)
def test_bad_rollup_values(value: Any, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        CopySpec.from_params(
            copy_name="c", path_patterns=["/tmp/x/*.log"], hdfs_destination="/tmp/y", rollup=value
        )
    assert info.value.key == key and words in info.value.reason
    assert info.value.value == (value if key == "rollup" else value[key.split(".")[1]])


def test_rollup_values() -> None:
    def spec(value: Any) -> CopySpec:
        return CopySpec.from_params(
            copy_name="c", path_patterns=["/tmp/x/*.log"], hdfs_destination="/tmp/y", rollup=value
        )

    assert spec(None).rollup is None and spec(False).rollup is None
    assert spec(True).rollup == RollUp()
    got = spec({"size": "256MiB", "interval": "1h", "settle": "30 s"}).rollup
    assert got == RollUp(size=256 << 20, interval=3600.0, settle=30.0)
    assert spec({"interval": 60}).rollup == RollUp(size=None, interval=60.0)
    assert spec(got).rollup is got
    assert CopySpec.from_params(**spec(got).as_params()) == spec(got)


def test_manifest_format_3_reads_and_a_bad_rollup_section_is_corrupt(tmp_path: Path) -> None:
    from aiologship._copy._manifest import Manifest, ManifestCorrupt
    from aiologship._copy._rollstate import Roll, RollState, Span

    path = tmp_path / MANIFEST_NAME
    old = {"version": 3, "copy_name": "c", "destination": "/d", "files": {}, "absent": []}
    path.write_text(json.dumps(old))
    loaded = Manifest.load(path, copy_name="c", destination="/d")
    assert loaded is not None and not loaded.rollup
    state = RollState(rolls={"r.log": Roll(name="r.log", part="", opened=1.0)})
    state.rolls["r.log"] = Roll(
        name="r.log", part="", opened=1.0, dest_size=3, dest_tail="0" * 32,
        source_bytes=3, spans=(Span("/s/a.log", 7, 0, 3),),
    )  # fmt: skip
    loaded.rollup = state
    path.write_bytes(loaded.snapshot())
    again = Manifest.load(path, copy_name="c", destination="/d")
    assert again is not None and again.rollup.rolls == state.rolls
    for bad in ({"rolls": "x"}, {"rolls": [{"name": "../up.log"}]}):
        data = json.loads(path.read_bytes())
        data["rollup"].update(bad)
        path.write_text(json.dumps(data))
        with pytest.raises(ManifestCorrupt, match="rollup"):
            Manifest.load(path, copy_name="c", destination="/d")
    data["rollup"]["rolls"] = [dict(json.loads(loaded.snapshot())["rollup"]["rolls"][0])]
    data["rollup"]["rolls"][0]["name"] = "../up.log"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestCorrupt, match="not a relative path"):
        Manifest.load(path, copy_name="c", destination="/d")


async def test_source_failing_mid_append_is_cut_back_and_rolled_next_cycle(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiologship._copy import _rollup
    from aiologship._copy._transfer import SourceVanished

    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(compression="gzip")
    await engine.flush()
    sources.update({"b.log": text("b", 30), "c.log": text("c", 30)})
    renv.put("b.log", sources["b.log"])
    renv.put("c.log", sources["c.log"])
    real = _rollup.copy_range
    calls = []

    def flaky(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:  # b.log's member is written, then c.log "shrinks"
            raise SourceVanished("shrank while being read")
        return real(*args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(_rollup, "copy_range", flaky)
        failed = await engine.flush()
    assert failed.destination_error is None and failed.pending_files == 2
    assert_exactly_once(renv, {"a.log": sources["a.log"], "b.log": b"", "c.log": b""}, "gzip")
    done = await engine.flush()
    assert done.ok and done.files_shipped == 2
    assert_exactly_once(renv, sources, "gzip")


async def test_failed_append_is_retried_in_the_cycle(renv: RollEnv) -> None:
    failures = []

    def fail(name: str, path: str) -> bool:
        if name == "open_append_stream" and not failures:
            failures.append(path)
            return True
        return False

    handler = LocalHandler(renv.dst, fail=fail)
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(resolver=handler.resolver, compression="zstd")
    await engine.flush()
    sources["b.log"] = text("b", 30)
    renv.put("b.log", sources["b.log"])
    result = await engine.flush()
    assert result.ok and failures and len(renv.sleeps) == 1
    assert_exactly_once(renv, sources, "zstd")


async def test_destination_that_cannot_append_rewrites_the_roll(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiologship._fs import Destination

    def resolver(uri: str) -> Destination:
        fs = pafs.LocalFileSystem()
        return Destination(fs, str(renv.dst), str(renv.dst), False)

    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(resolver=resolver, compression="gzip")
    await engine.flush()
    sources["b.log"] = text("b", 30)
    renv.put("b.log", sources["b.log"])
    await engine.flush()
    assert len(renv.rolls()) == 1
    assert_exactly_once(renv, sources, "gzip")
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    sources["c.log"] = text("c", 30)
    renv.put("c.log", sources["c.log"])
    await crash_after_append(renv, monkeypatch, resolver=resolver, compression="gzip")
    restarted = await renv.roller(resolver=resolver, compression="gzip")
    assert (await restarted.flush()).bytes_shipped == 0  # adopted
    assert_exactly_once(renv, sources, "gzip")
    assert renv.temp_files() == []


async def test_closed_roll_stays_recorded_while_its_renamed_source_is_followed(
    renv: RollEnv,
) -> None:
    renv.put("app.log", text("a", 10))
    engine = await renv.roller({"interval": 60, "settle": SETTLE})
    await engine.flush()
    renv.clock.now += 120  # the roll closes
    os.rename(renv.src / "app.log", renv.src / "app.log.1")
    await engine.flush()
    await engine.flush()
    (roll,) = renv.manifest()["rollup"]["rolls"]
    assert roll["closed"] and roll["name"] in renv.rolls()
    (renv.src / "app.log.1").unlink()
    await engine.flush()
    await engine.flush()  # gone two cycles in a row: forgotten, and its closed roll too
    assert renv.manifest()["rollup"]["rolls"] == [] and len(renv.rolls()) == 1


async def test_numbered_rotation_whatever_the_order_files_are_seen_in(renv: RollEnv) -> None:
    """app.log.1 -> app.log.2 and app.log -> app.log.1 in one go, both with the
    same mtime (looked at by name: the new app.log.1 first, whose name still
    holds the other file's record): nothing is rolled twice."""
    sources = {"app.log.1": text("x", 20), "app.log": text("y", 20)}
    for name, data in sources.items():
        renv.put(name, data)
    engine = await renv.roller()
    await engine.flush()
    os.rename(renv.src / "app.log.1", renv.src / "app.log.2")
    os.rename(renv.src / "app.log", renv.src / "app.log.1")
    t = renv.clock.now - 600
    for name in ("app.log.1", "app.log.2"):
        os.utime(renv.src / name, (t, t))
    result = await engine.flush()
    assert result.bytes_shipped == 0
    renamed = {"app.log.2": sources["app.log.1"], "app.log.1": sources["app.log"]}
    got = {Path(p).name for p in renv.manifest()["rollup"]["sources"]}
    assert got == set(renamed)


class MoveThenFail(LocalHandler):
    """A destination whose move of a matching temporary file happens, but the
    call raises all the same (an RPC timeout, a failover that reports the
    source missing): once for each name ``when`` picks."""

    def __init__(self, root: Path, when: Any) -> None:
        super().__init__(root)
        self.when = when
        self.failed: list[str] = []

    def move(self, src: str, dest: str) -> None:
        super().move(src, dest)
        if self.when(src) and src not in self.failed:
            self.failed.append(src)
            raise OSError(f"timed out moving {src}")


async def test_repair_whose_move_happened_but_raised_keeps_the_roll(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The repaired copy was moved over the roll file, but the call failed:
    the roll file is the repair (never deleted), and the next cycle goes on."""
    sources = await rolled_then_crashed(renv, monkeypatch, "gzip")
    (name,) = renv.rolls()
    with open(renv.dst / name, "ab") as f:
        f.write(b"\x1f\x8b half a member")  # not the pending append: repaired
    handler = MoveThenFail(renv.dst, lambda src: "aiologship-repair" in src)
    restarted = await renv.roller(resolver=handler.resolver, compression="gzip")
    await restarted.flush()
    assert handler.failed
    await restarted.flush()
    assert_exactly_once(renv, sources, "gzip")
    assert not [p for p in renv.dst.rglob("*") if "aiologship-repair" in p.name]


async def test_ledger_whose_move_happened_but_raised_is_kept(renv: RollEnv) -> None:
    handler = MoveThenFail(renv.dst, lambda src: LEDGER_SUFFIX in src)
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(resolver=handler.resolver)
    result = await engine.flush()
    assert handler.failed and result.ok
    assert [k for k in renv.dest_files() if LEDGER_SUFFIX in k]
    assert_exactly_once(renv, sources)


async def test_inode_reused_since_the_crash_does_not_cut_a_whole_append(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """b.log's pending append is at the destination whole; b.log is deleted and
    a new file gets its inode (and name). Its bytes are not the append's: the
    source counts as gone, and the append is adopted by its decoded size."""
    sources = await rolled_then_crashed(renv, monkeypatch, "gzip")
    (renv.src / "b.log").unlink()
    new_b = text("B", 30)  # as long as the old one, other bytes
    path = renv.put("b.log", new_b)
    st = path.stat()
    # The inode reuse, made certain: the pending append records the new inode.
    (folder,) = [p for p in renv.state.iterdir() if (p / MANIFEST_NAME).exists()]
    manifest = renv.manifest()
    pending = manifest["rollup"]["pending"]
    for span in pending["spans"]:
        if span["source"].endswith("b.log"):
            span["ino"] = st.st_ino
    for rec in pending["sources"].values():
        rec["ino"], rec["dev"] = st.st_ino, st.st_dev
    (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    restarted = await renv.roller(compression="gzip")
    await restarted.flush()
    (roll,) = renv.ranges().values()
    assert [(Path(s).name, a, b) for s, _, a, b in roll] == [
        ("a.log", 0, len(sources["a.log"])),
        ("b.log", 0, len(sources["b.log"])),
        ("b.log", 0, len(new_b)),
    ]
    (data,) = renv.rolls().values()
    assert decompress(data, "gzip") == sources["a.log"] + sources["b.log"] + new_b


async def test_new_roll_that_cannot_be_checked_waits_instead_of_rolling_again(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new roll file written whole before the crash, its source unreadable
    at the restart: whether it is the pending append is not known, so the
    cycle fails and retries; its ranges are not planned again meanwhile."""
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    await crash_after_append(renv, monkeypatch)

    def unreadable(*args: Any, **kwargs: Any) -> Any:
        raise PermissionError(13, "Permission denied")

    restarted = await renv.roller()
    with monkeypatch.context() as m:
        m.setattr(_rollup, "open_source", unreadable)
        result = await restarted.flush()
    assert not result.ok
    assert renv.manifest()["rollup"]["pending"] is not None
    assert len(renv.rolls()) == 1
    result = await restarted.flush()
    assert result.ok and result.bytes_shipped == 0  # adopted
    assert len(renv.rolls()) == 1
    assert_exactly_once(renv, sources)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b'{"sources": {', "not JSON"),
        (b'{"version": 1, "sources": []}', "rollup"),
        (b'{"version": 99}', "version 99"),
    ],
)
async def test_unusable_ledger_fails_each_cycle_clearly(
    renv: RollEnv, payload: bytes, words: str
) -> None:
    """A lost manifest and a ledger that cannot be read: every cycle fails with
    an error naming the ledger (never "no ledger": that would roll it all again)."""
    await rolled_then_manifest_lost(renv, {"a.log": text("a", 30)})
    (ledger,) = [p for p in renv.dst.iterdir() if p.name.endswith(LEDGER_SUFFIX)]
    ledger.write_bytes(payload)
    before = renv.rolls()
    restarted = await renv.roller()
    for _ in range(2):
        result = await restarted.flush()
        assert result.destination_error is not None
        assert ledger.name in result.destination_error and words in result.destination_error
    status = restarted.status()
    assert status.last_error is not None and ledger.name in status.last_error
    assert renv.rolls() == before
    from aiologship._exceptions import CopyError
    from aiologship._fs import Destination

    dest = Destination(pafs.LocalFileSystem(), str(renv.dst), str(renv.dst), True)
    with pytest.raises(CopyError, match="cannot be used"):
        _rollup.read_ledger(dest, ledger.name[1 : -len(LEDGER_SUFFIX)])


async def test_manifest_format_is_3_without_rollup_and_4_with_it(renv: RollEnv) -> None:
    """A copy without roll-up keeps writing format 3, which older releases read."""
    from aiologship._copy._manifest import Manifest

    renv.put("a.log", b"abc\n")
    engine = await renv.roller(rollup=False)
    await engine.flush()
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    assert renv.manifest()["version"] == 3
    again = await renv.roller(rollup=False)
    assert (await again.flush()).bytes_shipped == 0  # format 3 read back
    await again.stop(final_cycle=False)
    renv.engines.remove(again)
    for p in renv.state.rglob(MANIFEST_NAME):
        assert Manifest.load(p, copy_name="app", destination=str(renv.dst)) is not None

    (renv.src.parent / "other").mkdir()
    rolled = RollEnv(renv.src.parent / "other")
    try:
        rolled.put("a.log", b"abc\n")
        engine = await rolled.roller()
        await engine.flush()
        assert rolled.manifest()["version"] == 4
        (p,) = rolled.state.rglob(MANIFEST_NAME)
        loaded = Manifest.load(p, copy_name="app", destination=str(rolled.dst))
        assert loaded is not None and loaded.rollup
    finally:
        for e in rolled.engines:
            await e.stop(final_cycle=False)


async def test_copytruncate_copy_of_rolled_bytes_is_not_rolled_again(renv: RollEnv) -> None:
    """A quiet app.log rolled whole; logrotate copytruncate copies it to
    app.log.1 (a new inode, the same bytes) and truncates app.log: app.log.1
    starts where app.log's rolled bytes ended, app.log's new bytes from 0."""
    first = text("q", 20)
    renv.put("app.log", first)
    engine = await renv.roller()
    await engine.flush()
    extra = text("late", 3)  # written to app.log between the copy and the truncate
    renv.put("app.log.1", first + extra, age=700.0)  # looked at before app.log
    with open(renv.src / "app.log", "r+b") as f:
        f.truncate(0)
    renv.put("app.log", b"after\n", mode="ab")
    await engine.flush()
    await engine.flush()
    spans = [(Path(s).name, a, b) for spans in renv.ranges().values() for s, _, a, b in spans]
    assert sorted(spans) == sorted(
        [
            ("app.log", 0, len(first)),
            ("app.log.1", len(first), len(first) + len(extra)),
            ("app.log", 0, 6),
        ]
    )
    (data,) = renv.rolls().values()
    assert data.count(first) == 1 and data.count(extra) == 1


async def test_a_file_that_only_starts_like_a_truncated_one_is_rolled_whole(
    renv: RollEnv,
) -> None:
    """a.log, a small file holding only a banner, is rolled and then rewritten in
    place (its record retired, as for copytruncate). b.log, an unrelated new file
    that starts with the same banner, is no copy of a.log (not ``a.log`` plus a
    suffix): all of it is rolled, banner included. (Second review: b.log's first
    bytes never reached a roll.)"""
    banner = b"# service log v1\n"
    renv.put("a.log", banner)
    engine = await renv.roller()
    await engine.flush()
    renv.put("a.log", b"#\n")  # rewritten in place, shorter: a new version
    b = banner + text("b", 3)
    renv.put("b.log", b)
    await engine.flush()
    await engine.flush()
    spans = sorted((Path(s).name, a, z) for sp in renv.ranges().values() for s, _, a, z in sp)
    assert ("b.log", 0, len(b)) in spans, spans


async def test_a_possible_copy_that_cannot_be_read_waits_a_cycle(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """copytruncate, but app.log.1 cannot be read when it is first seen: it is not
    started at 0 (that would roll app.log's rolled bytes again), it waits a
    cycle, and then starts after them."""
    first = text("q", 20)
    renv.put("app.log", first)
    engine = await renv.roller()
    await engine.flush()
    renv.put("app.log.1", first, age=700.0)
    with open(renv.src / "app.log", "r+b") as f:
        f.truncate(0)
    monkeypatch.setattr(_rollup, "_holds_prefix", lambda f, rec: None)
    await engine.flush()
    monkeypatch.undo()
    await engine.flush()
    await engine.flush()
    (data,) = renv.rolls().values()
    assert data.count(first) == 1


async def test_file_back_after_being_forgotten_is_not_rolled_again(renv: RollEnv) -> None:
    """Out of the pattern for more than two scans (forgotten), then back: its
    rolled bytes are not rolled again; what it gained meanwhile is."""
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller()
    await engine.flush()
    away = renv.src.parent / "away.txt"
    os.rename(renv.src / "a.log", away)
    for _ in range(3):
        await engine.flush()
    assert renv.manifest()["rollup"]["sources"] == {}
    os.rename(away, renv.src / "a.log")
    assert (await engine.flush()).bytes_shipped == 0
    more = text("b", 5)
    renv.put("a.log", more, mode="ab")
    sources["a.log"] += more
    await engine.flush()
    assert_exactly_once(renv, sources)


async def test_date_partition_is_the_day_a_file_was_first_seen(renv: RollEnv) -> None:
    """A log written all day D (live, waiting) that seals after midnight goes
    to D's partition, and keeps it across a restart and a rename."""
    dest = str(renv.dst) + "/{date:%Y-%m-%d}"
    renv.put("app.log", text("d", 10), age=1.0)  # live on day D
    engine = await renv.roller(hdfs_destination=dest, timezone=None)
    day = "2027-01-15"
    assert (await engine.flush()).pending_files == 1
    await engine.stop(final_cycle=False)
    renv.engines.remove(engine)
    renv.clock.now += 86400  # D+1: sealed now
    os.rename(renv.src / "app.log", renv.src / "app.log.1")
    restarted = await renv.roller(hdfs_destination=dest, timezone=None)
    await restarted.flush()
    assert [str(Path(k).parent) for k in renv.rolls()] == [day]
    assert renv.manifest()["rollup"].get("seen", {}) == {}  # pruned once rolled


class MoveAndDeleteFail(LocalHandler):
    """The first move of a temporary file ``when`` picks fails (not moved), and
    so does the first delete of it: the failed write's temporary file stays."""

    def __init__(self, root: Path, when: Any) -> None:
        super().__init__(root)
        self.when = when
        self.moves: list[str] = []
        self.deletes: list[str] = []

    def move(self, src: str, dest: str) -> None:
        if TMP_MARK in src and self.when(src) and not self.moves:
            self.moves.append(src)
            raise OSError(f"cannot move {src}")
        super().move(src, dest)

    def delete_file(self, path: str) -> None:
        if path in self.moves and not self.deletes:
            self.deletes.append(path)
            raise OSError(f"cannot delete {path}")
        super().delete_file(path)


@pytest.mark.parametrize("which", ["roll", "ledger"])
async def test_temporary_file_of_a_failed_roll_or_ledger_write_is_swept(
    renv: RollEnv, which: str
) -> None:
    def when(src: str) -> bool:
        return (LEDGER_SUFFIX in src) == (which == "ledger")

    handler = MoveAndDeleteFail(renv.dst, when)
    sources = {"a.log": text("a", 30)}
    renv.put("a.log", sources["a.log"])
    engine = await renv.roller(resolver=handler.resolver)
    await engine.flush()
    await engine.flush()
    assert handler.moves and handler.deletes
    assert renv.temp_files() == []
    assert_exactly_once(renv, sources)


async def test_file_moved_away_while_a_new_one_takes_its_path_is_not_rolled_again(
    renv: RollEnv,
) -> None:
    """a.log rolled, moved out of the pattern while a new a.log is written at its
    path, then back under a matching name (a.log.1): its rolled bytes are not
    rolled again (the record of the old file at that path is kept retired, as
    for a file gone from the scans); what it gained meanwhile is."""
    old, new = text("o", 30), text("n", 20)
    renv.put("a.log", old)
    engine = await renv.roller()
    await engine.flush()
    away = renv.src.parent / "away.txt"
    os.rename(renv.src / "a.log", away)
    renv.put("a.log", new)
    await engine.flush()
    renv.clock.now += 10
    await engine.flush()
    os.rename(away, renv.src / "a.log.1")
    assert (await engine.flush()).bytes_shipped == 0
    gained = text("g", 5)
    with open(renv.src / "a.log.1", "ab") as f:
        f.write(gained)
    t = renv.clock.now - 600
    os.utime(renv.src / "a.log.1", (t, t))
    await engine.flush()
    rolled = b"".join(renv.rolls()[name] for name in sorted(renv.rolls()))
    assert sorted(rolled.splitlines()) == sorted((old + new + gained).splitlines())


async def test_more_files_than_the_cap_vanishing_at_once_are_not_rolled_again(
    renv: RollEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A mount outage: every followed file gone from the scans for more than two
    cycles, more of them than the cap on remembered gone files (shrunk to 4
    here; 1024 in use), then back. None is rolled again: gone records retired
    within the last day are all kept, whatever the cap."""
    from aiologship._copy import _rollstate

    monkeypatch.setattr(_rollstate, "RETIRED_GONE", (4, 30 * 86400.0))
    sources = {f"s{i}.log": text(f"s{i}", 10 + i) for i in range(7)}
    for name, data in sources.items():
        renv.put(name, data)
    engine = await renv.roller()
    await engine.flush()
    away = renv.src.parent / "mount-away"
    os.rename(renv.src, away)
    renv.src.mkdir()
    for _ in range(3):
        renv.clock.now += 60
        await engine.flush()
    renv.src.rmdir()
    os.rename(away, renv.src)
    assert (await engine.flush()).bytes_shipped == 0
    assert_exactly_once(renv, sources)
