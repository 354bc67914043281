from __future__ import annotations

import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiologship._copy._manifest import (
    Entry,
    Manifest,
    ManifestCorrupt,
    ManifestOutdated,
    checksum,
    write_atomic,
)


def entry(size: int = 3) -> Entry:
    return Entry(
        dest="a.log",
        size=size,
        mtime_ns=1,
        ino=2,
        dev=3,
        head="a" * 32,
        tail="b" * 32,
        ctime_ns=4,
        crc=5,
    )


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    m = Manifest(path, copy_name="c", destination="hdfs://nn/x")
    m.entries["/src/a.log"] = entry()
    write_atomic(path, m.snapshot())
    loaded = Manifest.load(path, copy_name="c", destination="hdfs://nn/x")
    assert loaded is not None and loaded.entries == m.entries
    assert loaded.owners() == {"a.log": "/src/a.log"}


def test_missing_is_none_and_foreign_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    assert Manifest.load(path, copy_name="c", destination="d") is None
    write_atomic(path, Manifest(path, copy_name="c", destination="d").snapshot())
    with pytest.raises(ManifestCorrupt, match="another destination"):
        Manifest.load(path, copy_name="c", destination="other")


def test_a_failed_write_leaves_the_previous_manifest_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "manifest.json"
    old = Manifest(path, copy_name="c", destination="d")
    old.entries["/src/a.log"] = entry(3)
    write_atomic(path, old.snapshot())
    before = path.read_bytes()

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone at the worst moment")

    monkeypatch.setattr(os, "replace", crash)
    new = Manifest(path, copy_name="c", destination="d")
    new.entries["/src/a.log"] = entry(999)
    with pytest.raises(OSError, match="worst moment"):
        write_atomic(path, new.snapshot())
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def _stored(tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "manifest.json"
    m = Manifest(path, copy_name="c", destination="d")
    m.entries["/src/a.log"] = entry()
    data = json.loads(m.snapshot())
    data["files"]["/src/a.log"].update(changes)
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {"size": -1},
        {"dev": -2},
        {"ino": True},
        {"crc": 1 << 32},
        {"crc": -2},
        {"dest": "a/../../etc/passwd"},
        {"dest": "/etc/passwd"},
        {"dest": "a//b.log"},
        {"dest": "./a.log"},
        {"dest": "a\x00b"},
        {"head": "A" * 32},
        {"tail": ""},
        {"mtime_ns": 1.5},
    ],
    ids=repr,
)
def test_nonsense_values_make_the_manifest_corrupt(tmp_path: Path, changes: Any) -> None:
    path = _stored(tmp_path, **changes)
    with pytest.raises(ManifestCorrupt):
        Manifest.load(path, copy_name="c", destination="d")


def test_a_relative_source_makes_the_manifest_corrupt(tmp_path: Path) -> None:
    path = _stored(tmp_path)
    data = json.loads(path.read_bytes())
    data["files"] = {"src/a.log": data["files"]["/src/a.log"]}
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestCorrupt, match="absolute"):
        Manifest.load(path, copy_name="c", destination="d")


def test_absent_sources_round_trip_and_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    m = Manifest(path, copy_name="c", destination="d")
    m.entries["/src/a.log"] = entry()
    m.absent = {"/src/a.log"}
    write_atomic(path, m.snapshot())
    loaded = Manifest.load(path, copy_name="c", destination="d")
    assert loaded is not None and loaded.absent == {"/src/a.log"}
    data = json.loads(path.read_bytes())
    data["absent"] = "/src/a.log"
    path.write_text(json.dumps(data))
    with pytest.raises(ManifestCorrupt, match="absent"):
        Manifest.load(path, copy_name="c", destination="d")


def test_an_older_format_is_outdated_not_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"version": 1, "destination": "d", "files": {}}))
    with pytest.raises(ManifestOutdated, match="version 1"):
        Manifest.load(path, copy_name="c", destination="d")


@given(st.binary(max_size=3 * 4096), st.integers(0, 3 * 4096))
@settings(max_examples=50, deadline=None)
def test_checksum_continues_from_a_prefix(data: bytes, cut: int) -> None:
    cut = min(cut, len(data))
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        fd = f.fileno()
        whole = checksum(fd, 0, len(data))
        assert whole == zlib.crc32(data)
        assert checksum(fd, cut, len(data), checksum(fd, 0, cut) or 0) == whole
        assert checksum(fd, 0, len(data) + 1) is None  # the file ends first
