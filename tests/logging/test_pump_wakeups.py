"""The pump sleeps and lingers; no record may wait for a wake-up that never comes.

The pump sleeps when the queue is empty (the first record after that wakes it) and,
after a small drain, lingers ``LINGER_SECONDS`` while a trickle gathers (records
queued then do not wake it). These tests make both waits long (60 s) so a missed
wake-up shows as a record that is not written within the test's bound, instead of
being hidden by the pump's 1 s safety wake or the 5 ms linger.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from aiologship import LogManager
from aiologship._logging import _pump
from tests.conftest import only_aiologship_sinks, read_lines

BOUND = 10.0  # s: far above any wake-up, far below the 60 s waits set here


def written_within(lm: LogManager, count: int, bound: float = BOUND) -> bool:
    """Poll (without flush, which would wake the pump itself) until ``count``
    records are written."""
    deadline = time.monotonic() + bound
    while time.monotonic() < deadline:
        if lm.stats().written >= count:
            return True
        time.sleep(0.002)
    return False


@pytest.fixture
def long_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_pump, "IDLE_WAKE_SECONDS", 60.0)
    monkeypatch.setattr(_pump, "LINGER_SECONDS", 60.0)


def _manager(tmp_path: Path, **kw: Any) -> tuple[LogManager, Any, Path]:
    lm = LogManager(**kw)
    log = lm.get_logger("wakeups")
    path = tmp_path / "w.log"
    log.add(path, fmt="%(message)s")
    only_aiologship_sinks(log.logger)
    return lm, log, path


def _start_lingering(lm: LogManager, log: Any) -> None:
    """One record, drained alone: the pump now lingers (60 s here)."""
    log.info("first")
    assert written_within(lm, 1)


def test_a_queue_past_half_full_ends_the_linger(tmp_path: Path, long_waits: None) -> None:
    lm, log, path = _manager(tmp_path, queue_size=64, overflow="drop_newest")
    try:
        _start_lingering(lm, log)
        for i in range(33):  # past 32, half of 64: no drop, no 60 s wait
            log.info("r%d", i)
        assert written_within(lm, 34), f"the lingering pump was not woken: {lm.stats()}"
        assert lm.stats().dropped == 0
    finally:
        lm.close()
    assert read_lines(path) == ["first"] + [f"r{i}" for i in range(33)]


def test_a_waiting_thread_on_a_full_queue_ends_the_linger(tmp_path: Path, long_waits: None) -> None:
    """queue_size 2: half full is one record, full is two; a thread on the ``wait``
    policy must get room long before its 30 s bound."""
    lm, log, path = _manager(tmp_path, queue_size=2, overflow="wait", overflow_timeout=30)
    try:
        _start_lingering(lm, log)
        done = threading.Event()

        def produce() -> None:
            for i in range(50):
                log.info("t%d", i)
            done.set()

        threading.Thread(target=produce, daemon=True).start()
        assert done.wait(BOUND), f"the producer waited for room: {lm.stats()}"
        assert written_within(lm, 51)
        assert lm.stats().dropped == 0
    finally:
        lm.close()
    assert read_lines(path) == ["first"] + [f"t{i}" for i in range(50)]


@pytest.mark.parametrize("end", ["flush", "close"])
def test_flush_and_close_end_the_linger(tmp_path: Path, long_waits: None, end: str) -> None:
    lm, log, path = _manager(tmp_path)
    _start_lingering(lm, log)
    log.info("second")  # queued while the pump lingers: it does not wake it
    t0 = time.monotonic()
    if end == "flush":
        assert lm.flush(timeout=BOUND)
    else:
        finished = threading.Event()

        def close() -> None:
            lm.close()
            finished.set()

        threading.Thread(target=close, daemon=True).start()
        assert finished.wait(BOUND), "close waited out the linger"
    assert time.monotonic() - t0 < BOUND
    assert read_lines(path) == ["first", "second"]
    lm.close()


def test_a_trickle_is_written_within_the_linger_without_a_flush(tmp_path: Path) -> None:
    """The default linger: a record logged while the pump lingers is written by the
    next drain (the 5 ms linger), with no flush and no other record."""
    lm, log, path = _manager(tmp_path)
    try:
        for i in range(20):
            log.info("k%d", i)
            assert written_within(lm, i + 1), f"record {i} not written: {lm.stats()}"
    finally:
        lm.close()
    assert read_lines(path) == [f"k{i}" for i in range(20)]


class WakeUps(RuleBasedStateMachine):
    """Records from the test thread and a second thread, with pauses around the
    pump's linger and sleep, and each record written with no flush, within the
    bound, although the pump's own waits (idle and linger) are 60 s and 20 ms."""

    folder: Path = Path()
    examples = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.lm: LogManager | None = None
        self.log: Any = None
        self.sent = 0
        n = next(self.examples)
        self.path = self.folder / f"model-{n}.log"
        self.name = f"wakeups.model.{n}"  # a fresh logger: no sink of an earlier example

    @initialize()
    def start(self) -> None:
        self.lm = LogManager(queue_size=512, overflow="wait", overflow_timeout=30)
        self.log = self.lm.get_logger(self.name)
        self.log.add(self.path, fmt="%(message)s")
        only_aiologship_sinks(self.log.logger)

    @rule(n=st.integers(1, 300))
    def log_here(self, n: int) -> None:
        for _ in range(n):
            self.log.info("%d", self.sent)
            self.sent += 1

    @rule(n=st.integers(1, 300))
    def log_from_a_thread(self, n: int) -> None:
        start = self.sent

        def produce() -> None:
            for i in range(start, start + n):
                self.log.info("%d", i)

        t = threading.Thread(target=produce)
        t.start()
        t.join(BOUND)
        assert not t.is_alive()
        self.sent += n

    @rule(pause=st.sampled_from([0.0, 0.001, 0.019, 0.021, 0.05]))
    def pause(self, pause: float) -> None:
        time.sleep(pause)

    @invariant()
    def everything_is_written_without_a_flush(self) -> None:
        if self.lm is not None:
            assert written_within(self.lm, self.sent), f"{self.sent} sent: {self.lm.stats()}"

    def teardown(self) -> None:
        if self.lm is not None:
            self.lm.close()
            lines = read_lines(self.path) if self.path.exists() else []
            assert lines == [str(i) for i in range(self.sent)]


def test_no_record_waits_for_a_lost_wake_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pump, "IDLE_WAKE_SECONDS", 60.0)
    monkeypatch.setattr(_pump, "LINGER_SECONDS", 0.02)
    monkeypatch.setattr(WakeUps, "folder", tmp_path)
    run = settings(
        max_examples=15,
        stateful_step_count=15,
        suppress_health_check=[HealthCheck.too_slow],
    )(WakeUps).TestCase
    run("runTest").runTest()
