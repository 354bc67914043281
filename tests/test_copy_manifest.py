from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiologship._copy._manifest import Entry, Manifest, ManifestCorrupt, write_atomic


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
