"""A roll-up copier killed with SIGKILL mid-roll, then restarted: every
source range is in the roll files exactly once, and no temporary or repair
file is left. The child is ``test_kill``'s, with ``rollup=`` on."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

from aiologship._copy._manifest import MANIFEST_NAME
from aiologship._copy._rollstate import LEDGER_SUFFIX
from tests.copy.test_kill import CHILD, finish, kill_when, noisy_lines, start, temp_files

ROLL_CHILD = CHILD.replace(
    "compression=compression)",
    'compression=compression, rollup={"size": "64 MiB", "settle": 0})',
)
assert ROLL_CHILD != CHILD, "test_kill's child changed: update the replacement"


def rolls(dst: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in dst.iterdir() if p.is_file() and not p.name.startswith(".")
    }


def spans(state: Path) -> dict[str, list[list[Any]]]:
    (manifest,) = state.rglob(MANIFEST_NAME)
    data = json.loads(manifest.read_bytes())["rollup"]
    assert data["pending"] is None
    return {r["name"]: r["spans"] for r in data["rolls"]}


def assert_exactly_once(src: Path, dst: Path, state: Path) -> None:
    recorded = spans(state)
    got = rolls(dst)
    assert sorted(got) == sorted(recorded)
    tiles: dict[str, list[tuple[int, int]]] = {}
    for name, data in got.items():
        want = b"".join(Path(s).read_bytes()[a:b] for s, _, a, b in recorded[name])
        assert gzip.decompress(data) == want
        for s, _, a, b in recorded[name]:
            tiles.setdefault(s, []).append((a, b))
    for path in src.iterdir():
        pos = 0
        for a, b in sorted(tiles[str(path)]):
            assert a == pos, f"{path.name}: a gap or an overlap at {pos}"
            pos = b
        assert pos == path.stat().st_size
    leftovers = [p.name for p in dst.iterdir() if p.name.startswith(".")]
    assert [n for n in leftovers if not n.endswith(LEDGER_SUFFIX)] == []
    assert temp_files(dst) == []


@pytest.mark.timeout(240)
def test_sigkill_mid_roll_then_restart(tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(ROLL_CHILD)
    src = tmp_path / "src"
    dst = tmp_path / "dst"
    state = tmp_path / "state"
    src.mkdir()
    (src / "a.log").write_bytes(noisy_lines(0, 8_000))  # ~800 KB, ~400 KB compressed
    (src / "b.log").write_bytes(noisy_lines(8_000, 8_000))

    # 1. Killed while the new roll file is written under its temporary name.
    proc = start(script, tmp_path, "slow", "gzip")
    kill_when(
        proc,
        lambda: any(p.stat().st_size > 0 for p in temp_files(dst) if p.exists()),
        "a temporary roll file with data",
    )
    assert rolls(dst) == {}
    assert finish(start(script, tmp_path, "fast", "gzip"))["ok"]
    assert_exactly_once(src, dst, state)

    # 2. Killed while appending to the open roll: a member cut short past the commit.
    (name,) = rolls(dst)
    committed = (dst / name).stat().st_size
    (src / "c.log").write_bytes(noisy_lines(16_000, 8_000))
    with open(src / "a.log", "ab") as f:
        f.write(noisy_lines(24_000, 8_000))
    proc = start(script, tmp_path, "slow", "gzip")
    kill_when(proc, lambda: (dst / name).stat().st_size > committed, "a partial append")
    result = finish(start(script, tmp_path, "fast", "gzip"))
    assert result["ok"]
    assert_exactly_once(src, dst, state)
    assert list(rolls(dst)) == [name]  # repaired in place, appended once
    os.utime(src / "a.log")  # touched: nothing new to roll
    again = finish(start(script, tmp_path, "fast", "gzip"))
    assert again["ok"] and again["bytes"] == 0
    assert_exactly_once(src, dst, state)
