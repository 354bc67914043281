"""Compressed copies (``compression="gzip" | "zstd"``) on real local destinations:
each cycle appends its new bytes as gzip members / zstd frames, and the shipped
file decompresses to exactly the source with the standard tools."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from aiologship._copy import Compression, CopySpec
from aiologship._copy._manifest import MANIFEST_NAME
from aiologship._copy._transfer import TMP_MARK
from aiologship._exceptions import ConfigError
from tests.copy.test_engine import Env, LocalHandler

pytestmark = pytest.mark.anyio

CODECS = ["gzip", "zstd"]


def decompress(data: bytes, codec: str) -> bytes:
    """What pyarrow's compressed input stream reads (it follows concatenated
    members and frames, as zcat and zstd -d do)."""
    out: bytes = pa.CompressedInputStream(pa.BufferReader(data), codec).read()
    return out


def with_tool(path: Path, codec: str) -> bytes:
    """The file decompressed by the command-line tool users have."""
    tool = {"gzip": ["gzip", "-dc"], "zstd": ["zstd", "-dcq"]}[codec]
    if shutil.which(tool[0]) is None:
        pytest.skip(f"{tool[0]} is not installed")
    return subprocess.run([*tool, str(path)], check=True, capture_output=True).stdout


def gzip_members(data: bytes) -> int:
    """How many gzip members ``data`` holds (each one ends before the next starts)."""
    count = 0
    while data:
        d = zlib.decompressobj(wbits=31)
        d.decompress(data)
        assert d.eof, "a truncated gzip member"
        data = d.unused_data
        count += 1
    return count


def log_lines(start: int, n: int) -> bytes:
    return b"".join(
        json.dumps({"i": i, "level": "INFO", "msg": f"request {i} done", "ms": i % 97}).encode()
        + b"\n"
        for i in range(start, start + n)
    )


# ---------------------------------------------------------------- spec


@pytest.mark.parametrize(
    ("value", "expected", "suffix"),
    [
        (None, None, ""),
        ("none", None, ""),
        ("gzip", Compression.GZIP, ".gz"),
        (" ZSTD ", Compression.ZSTD, ".zst"),
        (Compression.ZSTD, Compression.ZSTD, ".zst"),
    ],
)
def test_compression_values(tmp_path: Path, value: object, expected: object, suffix: str) -> None:
    spec = CopySpec.from_params(
        copy_name="c", path_patterns=["/x/*.log"], hdfs_destination=str(tmp_path), compression=value
    )
    assert (spec.compression, spec.dest_suffix) == (expected, suffix)


@pytest.mark.parametrize("value", ["lz4", "gz", 1, True, ["gzip"]])
def test_unknown_compression_is_refused_naming_it(tmp_path: Path, value: object) -> None:
    with pytest.raises(ConfigError, match="compression") as caught:
        CopySpec.from_params(
            copy_name="c",
            path_patterns=["/x/*.log"],
            hdfs_destination=str(tmp_path),
            compression=value,
        )
    assert repr(value) in str(caught.value)


# ---------------------------------------------------------------- growth


@pytest.mark.parametrize("codec", CODECS)
async def test_growth_over_ten_cycles_appends_only_new_members(env: Env, codec: str) -> None:
    suffix = Compression(codec).suffix
    engine = await env.engine(compression=codec)
    source = b""
    dest = env.dst / f"app.log{suffix}"
    for cycle in range(10):
        new = log_lines(cycle * 100, 50 + cycle * 7)
        env.write("app.log", new, mode="ab")
        source += new
        before = dest.stat().st_size if dest.exists() else 0
        result = await engine.flush()
        assert result.ok
        assert (result.files_shipped, result.bytes_read) == (1, len(new))
        # The destination grew by what this cycle sent, no more: the older
        # members were neither read back nor written again.
        assert dest.stat().st_size - before == result.bytes_shipped
        if cycle:
            assert (result.files_appended, result.files_replaced) == (1, 0)
        assert decompress(dest.read_bytes(), codec) == source
    assert result.bytes_shipped < result.bytes_read  # JSON lines compress
    assert with_tool(dest, codec) == source
    if codec == "gzip":
        assert gzip_members(dest.read_bytes()) == 10
    status = engine.status()
    assert status.bytes_read == len(source)
    assert status.bytes_shipped == dest.stat().st_size
    assert sorted(env.dest_files()) == [f"app.log{suffix}"]
    # Nothing changed: nothing is sent.
    assert (await engine.flush()).files_shipped == 0


async def test_an_empty_file_ships_as_one_empty_member(env: Env) -> None:
    env.write("empty.log", b"")
    engine = await env.engine(compression="gzip")
    assert (await engine.flush()).ok
    data = (env.dst / "empty.log.gz").read_bytes()
    assert data and gzip_members(data) == 1
    assert with_tool(env.dst / "empty.log.gz", "gzip") == b""


# ---------------------------------------------------------------- rotation, loss, strangers


@pytest.mark.parametrize("codec", CODECS)
async def test_rotation_moves_the_compressed_file_and_copytruncate_replaces(
    env: Env, codec: str
) -> None:
    s = Compression(codec).suffix
    first = log_lines(0, 300)
    env.write("app.log", first)
    engine = await env.engine(compression=codec)
    await engine.flush()
    # Renamed: the destination file moves, nothing is uploaded again.
    os.rename(env.src / "app.log", env.src / "app.log.1")
    second = log_lines(300, 20)
    env.write("app.log", second)
    result = await engine.flush()
    assert result.ok and result.bytes_read == len(second)
    files = env.dest_files()
    assert sorted(files) == [f"app.log.1{s}", f"app.log{s}"]
    assert decompress(files[f"app.log.1{s}"], codec) == first
    assert decompress(files[f"app.log{s}"], codec) == second
    # copytruncate: the same inode starts again with other bytes.
    shutil.copyfile(env.src / "app.log", env.src / "app.log.2")
    third = log_lines(900, 5)
    env.write("app.log", third)
    result = await engine.flush()
    # The copy is a new file; app.log is shipped again whole.
    assert result.ok and result.files_replaced == 2
    assert result.bytes_read == len(second) + len(third)
    files = env.dest_files()
    assert decompress(files[f"app.log{s}"], codec) == third
    assert decompress(files[f"app.log.2{s}"], codec) == second
    assert not [name for name in files if TMP_MARK in name]


@pytest.mark.parametrize("codec", CODECS)
async def test_manifest_loss_resends_whole_never_appends_to_a_stranger(
    env: Env, codec: str
) -> None:
    """Without a manifest entry a compressed destination file is replaced:
    its size says nothing about how much of the source it holds."""
    s = Compression(codec).suffix
    data = log_lines(0, 400)
    env.write("app.log", data)
    engine = await env.engine(compression=codec)
    await engine.flush()
    await engine.stop()
    os.unlink(engine.state_path / MANIFEST_NAME)
    more = log_lines(400, 10)
    env.write("app.log", more, mode="ab")
    again = await env.engine(compression=codec)
    result = await again.flush()
    assert result.ok and (result.files_replaced, result.bytes_read) == (1, len(data + more))
    assert decompress((env.dst / f"app.log{s}").read_bytes(), codec) == data + more
    # From then on, appends again.
    env.write("app.log", log_lines(410, 3), mode="ab")
    assert (await again.flush()).files_appended == 1
    assert decompress((env.dst / f"app.log{s}").read_bytes(), codec) == data + more + log_lines(
        410, 3
    )


async def test_a_destination_file_changed_by_someone_else_is_replaced(env: Env) -> None:
    env.write("app.log", log_lines(0, 200))
    engine = await env.engine(compression="zstd")
    await engine.flush()
    dest = env.dst / "app.log.zst"
    # Same size, other last bytes: not what was shipped.
    blob = bytearray(dest.read_bytes())
    blob[-1] ^= 0xFF
    dest.write_bytes(bytes(blob))
    env.write("app.log", log_lines(200, 5), mode="ab")
    result = await engine.flush()
    assert result.ok and result.files_replaced == 1
    assert decompress(dest.read_bytes(), "zstd") == (env.src / "app.log").read_bytes()


async def test_switching_compression_on_ships_the_compressed_name(env: Env) -> None:
    env.write("app.log", log_lines(0, 50))
    plain = await env.engine()
    await plain.flush()
    await plain.stop()
    packed = await env.engine(compression="gzip")
    result = await packed.flush()
    assert result.ok and result.files_replaced == 1
    assert with_tool(env.dst / "app.log.gz", "gzip") == (env.src / "app.log").read_bytes()
    assert (env.dst / "app.log").read_bytes() == (env.src / "app.log").read_bytes()


async def test_a_plain_copy_of_a_file_named_gz_is_shipped_byte_for_byte(env: Env) -> None:
    """pyarrow's open_append_stream compresses on the fly by default for a name
    ending in .gz: a plain copy must append the source's bytes unchanged. (A
    local destination takes the kernel-copy path: the handler forces pyarrow's.)"""
    env.dst.mkdir()
    env.write("old.log.gz", b"not really gzip\n")
    engine = await env.engine(resolver=LocalHandler(env.dst).resolver)
    await engine.flush()
    env.write("old.log.gz", b"more bytes\n", mode="ab")
    result = await engine.flush()
    assert result.ok and result.files_appended == 1
    assert (env.dst / "old.log.gz").read_bytes() == b"not really gzip\nmore bytes\n"


@pytest.mark.parametrize("codec", CODECS)
def test_many_chunks_one_member_each_and_the_crc_of_what_was_shipped(
    tmp_path: Path, codec: str
) -> None:
    """Members come out in order, one per chunk, and the entry's CRC-32 (summed
    by the copy as it reads) is the source's, continued across an append."""
    import pyarrow.fs as pafs

    from aiologship._copy._scan import SourceFile
    from aiologship._copy._tempwatch import TempWatch
    from aiologship._copy._transfer import DirCache, TempNames, ship_file
    from aiologship._fs import Destination

    suffix = Compression(codec).suffix
    path, out = tmp_path / "big.log", tmp_path / "out"
    out.mkdir()
    dest = Destination(pafs.LocalFileSystem(), str(out), str(out), True)

    def source() -> SourceFile:
        st = os.stat(path)
        return SourceFile(
            str(path), f"big.log{suffix}", st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev
        )

    tools: dict[str, Any] = {
        "temps": TempNames("00000000"),
        "dirs": DirCache(),
        "watch": TempWatch(),
        "chunk_size": 4096,
        "compression": Compression(codec),
    }
    data = log_lines(0, 1000)  # ~19 chunks
    path.write_bytes(data)
    first = ship_file(dest, source(), None, **tools)
    assert first.mode == "replace" and first.entry.crc == zlib.crc32(data)
    more = log_lines(1000, 300)
    with open(path, "ab") as f:
        f.write(more)
    second = ship_file(dest, source(), first.entry, **tools)
    assert second.mode == "append" and second.bytes_read == len(more)
    assert second.entry.crc == zlib.crc32(data + more)
    blob = (out / f"big.log{suffix}").read_bytes()
    assert second.entry.dest_size == len(blob)
    assert decompress(blob, codec) == data + more
    if codec == "gzip":
        assert gzip_members(blob) == -(-len(data) // 4096) + -(-len(more) // 4096)
