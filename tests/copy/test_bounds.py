"""How long the copy engine may take: every retry wait is capped, and stop() /
close() end within a documented bound whatever the destination does."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_engine import Env, LocalHandler

from aiologship import LogManager
from aiologship._copy import CopyEngine, CopyState
from aiologship._copy._transfer import RETRY_CAP, DestinationFailure, ship_with_retry

pytestmark = pytest.mark.anyio


# ---------------------------------------------------------------- retry waits


@settings(max_examples=60, deadline=None)
@given(
    retry_delay=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    max_retries=st.integers(min_value=0, max_value=12),
)
def test_every_retry_wait_is_capped(retry_delay: float, max_retries: int) -> None:
    waits: list[float] = []
    attempts = 0

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    def ship() -> Any:
        nonlocal attempts
        attempts += 1
        raise DestinationFailure("down")

    async def main() -> None:
        with pytest.raises(DestinationFailure):
            await ship_with_retry(
                ship,
                max_retries=max_retries,
                retry_delay=retry_delay,
                sleep=sleep,
                limiter=anyio.CapacityLimiter(1),
            )

    anyio.run(main)
    assert attempts == max_retries + 1
    assert len(waits) == max_retries
    assert all(0 <= w <= RETRY_CAP for w in waits), waits


@settings(max_examples=100, deadline=None)
@given(
    retry_delay=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    attempt=st.integers(min_value=1, max_value=200),
)
def test_the_wait_policy_is_capped_and_grows_from_retry_delay(
    retry_delay: float, attempt: int
) -> None:
    from tenacity import RetryCallState

    from aiologship._copy._transfer import retry_wait

    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    wait = retry_wait(retry_delay)(state)
    assert 0 <= wait <= RETRY_CAP
    if attempt == 1:
        assert wait >= min(retry_delay, RETRY_CAP)


# ---------------------------------------------------------------- stop and close


class HangingHandler(LocalHandler):
    """A destination whose writes hang until ``release`` is set (a DataNode
    that accepts the connection and never answers)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.entered = threading.Event()
        self.release = threading.Event()

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        self.entered.set()
        self.release.wait(60)
        return super().open_output_stream(path, metadata)


async def wait_for(check: Callable[[], bool]) -> None:
    with anyio.fail_after(10):
        while not check():
            await anyio.sleep(0.01)


@pytest.mark.parametrize("running", [True, False])
async def test_stop_ends_within_its_bound_when_the_destination_hangs(
    env: Env, caplog: pytest.LogCaptureFixture, running: bool
) -> None:
    env.write("a.log", b"a\n")
    handler = HangingHandler(env.dst)
    engine = await env.engine(resolver=handler.resolver, copy_interval=3600)
    try:
        async with anyio.create_task_group() as tg:
            if running:
                tg.start_soon(engine.run)  # its first cycle hangs
            else:
                tg.start_soon(engine.flush)  # stop()'s own final cycle will hang too
            await wait_for(handler.entered.is_set)
            if not running:
                handler.release.set()
                await wait_for(lambda: engine.status().files_shipped == 1)
                handler.release.clear()
                handler.entered.clear()
                env.write("a.log", b"more\n", mode="ab")
                env.write("b.log", b"b\n")
            started = time.monotonic()
            with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
                with anyio.fail_after(20):
                    await engine.stop(timeout=1)
            elapsed = time.monotonic() - started
    finally:
        handler.release.set()
    assert elapsed < 10  # the bound is 1 s here; generous slack for a loaded machine
    status = engine.status()
    assert status.state is CopyState.STOPPED
    assert status.pending_files >= 1
    assert "pending" in (status.last_error or "")
    assert any("pending" in r.getMessage() for r in caplog.records)


def test_close_with_a_failing_destination_ends_quickly_at_default_settings(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Default max_retries=3 and retry_delay=5: close() used to take about 85 s
    # (the retries of the cycle in progress, then those of the final cycle).
    src = tmp_path / "src"
    for name in ("one", "two"):
        (src / name).mkdir(parents=True)
        (src / name / "app.log").write_text("x\n")
    dest = tmp_path / "dest"
    dest.mkdir()
    for name in ("one", "two"):
        (dest / name).write_text("a file where a destination folder should be")
    lm = LogManager()
    lm.start_hdfs_copy(
        "doomed",
        ["*/app.log"],
        str(dest),
        root_dir=src,
        preserve_structure=True,
        copy_interval=3600,
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="aiologship.copy"):
        lm.close()
    assert time.monotonic() - started < 30  # the bound is 20 s; 85 s before it existed
    messages = [r.getMessage() for r in caplog.records]
    assert any("destination failing" in m for m in messages)  # the failure did happen


async def test_stop_ends_a_long_retry_wait_at_once(env: Env) -> None:
    # retry_delay=3600 with real sleeps: before, stop() waited out the backoff.
    env.write("a.log", b"a\n")
    handler = LocalHandler(env.dst, fail=lambda name, path: name == "open_output_stream")
    engine = CopyEngine(
        env.spec(retry_delay=3600, max_retries=5, copy_interval=3600),
        state_dir=env.state,
        resolver=handler.resolver,
        sleep=anyio.sleep,
    )
    await engine.open()
    env.engines.append(engine)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await wait_for(lambda: "open_output_stream" in handler.calls)  # now in its retry wait
        with anyio.fail_after(10):
            await engine.stop()
    attempts = handler.calls.count("open_output_stream")
    # The first attempt, at most one on waking, one in the final cycle.
    assert 2 <= attempts <= 3
    status = engine.status()
    assert status.state is CopyState.STOPPED and status.pending_files == 1


async def test_a_destination_that_never_answers_at_open_is_bounded_too(env: Env) -> None:
    # An hdfs:// NameNode that accepts the connection and never answers hung
    # resolve_destination (measured: still blocked after 30 s), and open() with it.
    env.write("a.log", b"a\n")
    release = threading.Event()
    handler = LocalHandler(env.dst)
    calls: list[str] = []

    def silent(uri: str) -> Any:
        calls.append(uri)
        release.wait(60)
        return handler.resolver(uri)

    engine = CopyEngine(
        env.spec(copy_interval=3600),
        state_dir=env.state,
        resolver=silent,
        sleep=env.sleep,
        resolve_timeout=0.5,
    )
    try:
        with anyio.fail_after(10):
            await engine.open()
        env.engines.append(engine)
        assert "no answer within 0.5 s" in (engine.status().last_error or "")
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            await wait_for(lambda: len(calls) == 2)  # its first cycle waits for the destination
            with anyio.fail_after(10):
                await engine.stop(timeout=1)
    finally:
        release.set()
    status = engine.status()
    assert status.state is CopyState.STOPPED and status.pending_files == 1


def test_the_cli_exits_past_a_thread_blocked_in_the_destination() -> None:
    # A transfer abandoned at the stop bound stays blocked in its worker thread;
    # the interpreter would join it at exit forever.
    script = (
        "import threading\n"
        "from aiologship.cli.copy import exit_if_threads_hang\n"
        "threading.Thread(target=threading.Event().wait).start()\n"
        "exit_if_threads_hang(7, grace=0.2)\n"
        "raise SystemExit(0)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 7
    assert "1 transfer(s) still blocked" in done.stderr
