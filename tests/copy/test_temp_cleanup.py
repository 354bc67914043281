"""The engine removes temporary files of its own failed transfers that appear after
the transfer gave up on them: on HDFS a DataNode may retry a create after our
request failed, so the file comes back after our delete (a local destination
wrapped in a handler plays that DataNode here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiologship._copy import CopyEngine
from aiologship._copy._transfer import TMP_MARK
from tests.copy.test_engine import Env, LocalHandler

pytestmark = pytest.mark.anyio


class LateCreates(LocalHandler):
    """Moves onto a final name fail while ``broken``; a temporary file deleted
    while ``revive`` is set is created again once, as a DataNode retrying the
    cut create would. Records (call, path) of every call."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, fail=self._fail)
        self.broken = True
        self.revive = False
        self.delete_breaks = False
        self.paths: list[tuple[str, str]] = []
        self.revived: set[str] = set()

    def _fail(self, name: str, path: str) -> bool:
        self.paths.append((name, path))
        if name == "delete_file" and TMP_MARK in path:
            return self.delete_breaks
        return self.broken and name == "move"

    def delete_file(self, path: str) -> None:
        super().delete_file(path)
        if self.revive and TMP_MARK in path and path not in self.revived:
            self.revived.add(path)
            Path(path).write_bytes(b"late bytes of a retried create")

    def temps_created(self) -> list[str]:
        return [path for name, path in self.paths if name == "open_output_stream"]


async def engine_at(env: Env, handler: LateCreates, now: list[float], **spec: Any) -> CopyEngine:
    engine = CopyEngine(
        env.spec(max_retries=0, **spec),
        state_dir=env.state,
        sleep=env.sleep,
        resolver=handler.resolver,
        clock=lambda: now[0],
    )
    await engine.open()
    env.engines.append(engine)
    return engine


@pytest.fixture
def handler(env: Env) -> LateCreates:
    env.dst.mkdir()
    return LateCreates(env.dst)


async def test_a_temporary_file_that_reappears_is_removed_by_a_later_cycle(
    env: Env, handler: LateCreates
) -> None:
    env.write("a.log", b"a\n")
    engine = await engine_at(env, handler, [1_000.0])
    assert not (await engine.flush()).ok
    assert env.temp_files() == []  # removed when the transfer failed
    (tmp,) = handler.temps_created()
    Path(tmp).write_bytes(b"late bytes of a retried create")
    handler.broken = False
    assert (await engine.flush()).ok
    assert env.dest_files() == {"a.log": b"a\n"}


async def test_the_last_cycle_looks_again_after_its_own_failed_transfers(
    env: Env, handler: LateCreates
) -> None:
    env.write("a.log", b"a\n")
    engine = await engine_at(env, handler, [1_000.0])
    handler.revive = True  # the temporary file comes back right after our delete
    await engine.stop()  # the final cycle's transfer fails
    assert handler.revived
    assert env.temp_files() == []


async def test_a_failed_delete_is_retried_and_nothing_else_is_touched(
    env: Env, handler: LateCreates
) -> None:
    env.write("a.log", b"a\n")
    env.write("b.log", b"b\n")
    handler.broken = False
    engine = await engine_at(env, handler, [1_000.0])
    assert (await engine.flush()).ok
    tag = engine._temps.tag
    # Another run's and another copy's temporary files, appearing after the first
    # cycle (the stale ones of this copy are the first cycle's business).
    others = [
        env.dst / f".a.log{TMP_MARK}{tag}-0badc0de-3",
        env.dst / f".b.log{TMP_MARK}ffffffff-0badc0de-3",
    ]
    for path in others:
        path.write_bytes(b"not ours")
    env.write("a.log", b"rewritten\n")  # replaced, through a temporary file
    handler.broken = handler.delete_breaks = True
    for _ in range(3):
        assert not (await engine.flush()).ok
    ours = [Path(tmp).name for tmp in handler.temps_created()[2:]]  # one a cycle
    assert len(ours) == 3
    assert sorted(env.temp_files()) == sorted(ours + [p.name for p in others])
    handler.broken = handler.delete_breaks = False
    assert (await engine.flush()).ok
    assert sorted(env.temp_files()) == sorted(p.name for p in others)
    assert env.dest_files()["b.log"] == b"b\n"
    assert env.dest_files()["a.log"] == b"rewritten\n"


async def test_a_name_absent_for_the_grace_period_is_no_longer_asked_about(
    env: Env, handler: LateCreates
) -> None:
    from aiologship._copy._tempwatch import GRACE

    now = [1_000.0]
    env.write("a.log", b"a\n")
    engine = await engine_at(env, handler, now)
    assert not (await engine.flush()).ok
    (tmp,) = handler.temps_created()
    handler.broken = False
    assert (await engine.flush()).ok  # absent: the grace period starts
    now[0] += GRACE - 1
    await engine.flush()
    assert ("get_file_info", tmp) in handler.paths[-3:]
    now[0] += 1
    await engine.flush()  # absent for the grace period: forgotten
    handler.paths.clear()
    await engine.flush()
    assert ("get_file_info", tmp) not in handler.paths
