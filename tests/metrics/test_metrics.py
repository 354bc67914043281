"""The metrics, scraped over real HTTP from ``aiologship.metrics.serve()`` and
parsed with prometheus_client's own parser: they move as records are logged, a
sink stalls, a copy falls behind and catches up; counters never go back."""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from aiologship import LogManager
from tests.conftest import only_aiologship_sinks

metrics = pytest.importorskip("aiologship.metrics", reason="prometheus-client (extra: metrics)")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

Scrape = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Scrape:
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures: Scrape, name: str, **labels: str) -> float:
    return figures[(name, frozenset(labels.items()))]


@pytest.fixture(scope="module")
def server() -> Iterator[metrics.MetricsServer]:
    served = metrics.serve(0)
    try:
        yield served
    finally:
        served.close()


def test_the_table_and_the_exposition_agree(server: metrics.MetricsServer) -> None:
    figures = scrape(server.url)
    pipeline = {name for name, _ in figures}
    for spec in metrics.METRICS:
        if not spec.name.startswith("aiologship_copy_"):
            suffix = "_total" if spec.kind == "counter" else ""
            assert spec.name + suffix in pipeline
    assert server.url.startswith("http://127.0.0.1:")


def test_records_move_the_pipeline_figures(server: metrics.MetricsServer, tmp_path: Path) -> None:
    before = scrape(server.url)
    with LogManager(queue_size=5000) as lm:
        log = lm.get_logger("metrics.move")
        only_aiologship_sinks(logging.getLogger("metrics.move"))
        log.add(tmp_path / "a.log", fmt="%(message)s")
        for i in range(1234):
            log.info("line %d", i)
        assert lm.flush(30)
        during = scrape(server.url)
        assert value(during, "aiologship_queue_capacity") >= 5000
    after = scrape(server.url)
    for figures in (during, after):
        for name in ("aiologship_records_accepted_total", "aiologship_records_written_total"):
            assert value(figures, name) - value(before, name) == 1234
    # Closed: its counts stay, its queue does not.
    assert value(after, "aiologship_queue_capacity") == value(before, "aiologship_queue_capacity")
    assert len((tmp_path / "a.log").read_text().splitlines()) == 1234


class Stall(logging.Formatter):
    """Holds the pump on the first record until released."""

    def __init__(self) -> None:
        super().__init__("%(message)s")
        self.holding = threading.Event()
        self.release = threading.Event()

    def format(self, record: logging.LogRecord) -> str:
        self.holding.set()
        assert self.release.wait(60), "never released"
        return super().format(record)


@pytest.mark.parametrize(("overflow", "reason"), [("drop_newest", "queue_full"),
                                                  ("drop_oldest", "evicted")])  # fmt: skip
def test_a_stalled_sink_shows_as_dropped_records(
    server: metrics.MetricsServer, tmp_path: Path, overflow: str, reason: str
) -> None:
    before = scrape(server.url)
    stall = Stall()
    with LogManager(queue_size=100, overflow=overflow) as lm:
        log = lm.get_logger(f"metrics.stall.{reason}")
        log.add(tmp_path / "a.log")
        std = logging.getLogger(f"metrics.stall.{reason}")
        only_aiologship_sinks(std)
        (handler,) = std.handlers
        handler.setFormatter(stall)
        log.info("first")
        assert stall.holding.wait(30)  # the pump holds "first"; the queue is empty
        for i in range(130):
            log.info("%d", i)
        stalled = scrape(server.url)
        stall.release.set()
    after = scrape(server.url)
    dropped = "aiologship_records_dropped_total"
    assert value(stalled, dropped, reason=reason) - value(before, dropped, reason=reason) == 30
    assert value(stalled, "aiologship_queue_depth") - value(before, "aiologship_queue_depth") == 100
    written = value(after, "aiologship_records_written_total") - value(
        before, "aiologship_records_written_total"
    )
    assert written == 101
    lines = (tmp_path / "a.log").read_text().splitlines()
    # The sink's file notes the loss after the records it kept.
    assert lines[-1].startswith("aiologship dropped 30 records for this sink")
    kept = [str(i) for i in (range(100) if reason == "queue_full" else range(30, 130))]
    assert lines[:-1] == ["first", *kept]


def test_a_stalled_stream_shows_as_dropped_records(
    server: metrics.MetricsServer, tmp_path: Path
) -> None:
    """A pipe nobody reads: the stream sink's buffer fills and refuses lines."""
    before = scrape(server.url)
    read_fd, write_fd = os.pipe()
    drained = bytearray()

    def drain() -> None:
        while chunk := os.read(read_fd, 1 << 16):
            drained.extend(chunk)

    reader = threading.Thread(target=drain)
    dropped_key = ("aiologship_records_dropped_total", frozenset({("reason", "stream_full")}))
    try:
        with LogManager(queue_size=50) as lm:  # the stream's buffer holds 50 lines
            log = lm.get_logger("metrics.stream")
            only_aiologship_sinks(logging.getLogger("metrics.stream"))
            log.add(write_fd, fmt="%(message)s")
            line = "x" * 200
            for _ in range(2000):  # 400 KB: far more than the pipe and the buffer hold
                log.info(line)
            deadline = time.monotonic() + 30
            while (stalled := scrape(server.url))[dropped_key] == before[dropped_key]:
                assert time.monotonic() < deadline, "no drop counted"
                time.sleep(0.05)
            reader.start()  # the reader comes back before close
    finally:
        os.close(write_fd)
        if reader.is_alive():
            reader.join(30)
        os.close(read_fd)
    dropped = value(stalled, "aiologship_records_dropped_total", reason="stream_full") - value(
        before, "aiologship_records_dropped_total", reason="stream_full"
    )
    assert dropped > 0
    after = scrape(server.url)
    written = value(after, "aiologship_records_written_total") - value(
        before, "aiologship_records_written_total"
    )
    # Every line is written or counted as dropped (the sink notes the drops in the stream).
    assert drained.count(line.encode() + b"\n") == written
    total_dropped = value(after, "aiologship_records_dropped_total", reason="stream_full") - value(
        before, "aiologship_records_dropped_total", reason="stream_full"
    )
    assert written + total_dropped == 2000


def copy_figures(figures: Scrape, copy: str) -> dict[str, float]:
    label = ("copy", copy)
    return {
        name.removeprefix("aiologship_copy_"): v
        for (name, labels), v in figures.items()
        if label in labels
    }


def test_a_copy_falls_behind_and_catches_up(server: metrics.MetricsServer, tmp_path: Path) -> None:
    src, blocker = tmp_path / "src", tmp_path / "blocker"
    src.mkdir()
    blocker.write_text("a file where the destination's parent folder should be")
    log_file = src / "app.log"
    log_file.write_bytes(b"0123456789" * 100)
    written_at = time.time() - 300
    os.utime(log_file, (written_at, written_at))
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "metrics_lag",
            [str(src / "*.log")],
            str(blocker / "dest"),
            copy_interval=3600,
            max_retries=2,
            retry_delay=0.01,
        )
        op.flush()
        down = copy_figures(scrape(server.url), "metrics_lag")
        assert down["bytes_behind"] == 1000
        assert down["files_pending"] == 1
        assert down["consecutive_failures"] >= 1
        assert down["oldest_unshipped_age_seconds"] >= 300
        assert down["last_success_timestamp_seconds"] == 0
        with open(log_file, "ab") as f:
            f.write(b"more\n")
        op.flush()
        later = copy_figures(scrape(server.url), "metrics_lag")
        assert later["bytes_behind"] == 1005
        assert later["consecutive_failures"] == down["consecutive_failures"] + 1
        # Still the time the file was first seen behind, not its new mtime.
        assert later["oldest_unshipped_age_seconds"] >= down["oldest_unshipped_age_seconds"]
        assert later["cycles_total"] == down["cycles_total"] + 1
        # The status carries the same figures.
        (status,) = lm.list_hdfs_copy_operations()
        assert status.bytes_behind == 1005 and status.behind_since is not None

        blocker.unlink()  # the destination works again
        op.flush()
        up = copy_figures(scrape(server.url), "metrics_lag")
        assert up["bytes_behind"] == 0 and up["files_pending"] == 0
        assert up["oldest_unshipped_age_seconds"] == 0
        assert up["consecutive_failures"] == 0
        assert up["files_shipped_total"] == 1 and up["bytes_shipped_total"] == 1005
        assert time.time() - up["last_success_timestamp_seconds"] < 600
        assert up["cycle_duration_seconds"] > 0
    assert (blocker / "dest" / "app.log").read_bytes() == log_file.read_bytes()
    # A stopped copy's engine is gone from this process: no figures left behind.
    assert copy_figures(scrape(server.url), "metrics_lag") == {}


def test_retries_are_counted(server: metrics.MetricsServer, tmp_path: Path) -> None:
    """A transfer that fails (a folder where the file should go) is retried
    ``max_retries`` times in each cycle."""
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    (src / "a.log").write_text("a\n")
    (dest / "a.log").mkdir(parents=True)
    with LogManager() as lm:
        op = lm.start_hdfs_copy(
            "metrics_retries", [str(src / "*.log")], str(dest),
            copy_interval=3600, max_retries=3, retry_delay=0.01,
        )  # fmt: skip
        op.flush()
        op.flush()
        figures = copy_figures(scrape(server.url), "metrics_retries")
        (status,) = lm.list_hdfs_copy_operations()
        assert status.cycles >= 2 and status.retries == 3 * status.cycles
        assert figures["retries_total"] == status.retries
        assert figures["cycles_total"] == status.cycles
        assert figures["consecutive_failures"] == status.cycles
        (dest / "a.log").rmdir()
        op.flush()
        (status,) = lm.list_hdfs_copy_operations()
        assert status.consecutive_failures == 0 and status.bytes_behind == 0


class ManyManagers(RuleBasedStateMachine):
    """Managers opened, logging and closed in any order: between any two scrapes
    every counter only grows, and records accepted grow by exactly what was logged."""

    def __init__(self) -> None:
        super().__init__()
        self.root = Path(TMP_ROOT) / f"m{id(self):x}"
        self.open: list[tuple[LogManager, str]] = []
        self.logged = 0
        self.made = 0
        self.base = scrape(SERVER_URL)
        self.last = self.base

    @rule()
    def open_manager(self) -> None:
        lm, name = LogManager(), f"many.{self.made}"
        lm.get_logger(name).add(self.root / f"{self.made}.log", fmt="%(message)s")
        only_aiologship_sinks(logging.getLogger(name))
        self.open.append((lm, name))
        self.made += 1

    @precondition(lambda self: self.open)
    @rule(which=st.integers(0, 7), n=st.integers(0, 50))
    def log(self, which: int, n: int) -> None:
        lm, name = self.open[which % len(self.open)]
        for i in range(n):
            lm.get_logger(name).info("%d", i)
        self.logged += n

    @precondition(lambda self: self.open)
    @rule(which=st.integers(0, 7))
    def close(self, which: int) -> None:
        self.open.pop(which % len(self.open))[0].close()

    @invariant()
    def counters_only_grow(self) -> None:
        now = scrape(SERVER_URL)
        for key, v in now.items():
            name = key[0]
            if name.endswith("_total") and key in self.last:
                assert v >= self.last[key], key
        self.last = now

    def teardown(self) -> None:
        for lm, _ in self.open:
            lm.close()
        final = scrape(SERVER_URL)
        accepted = "aiologship_records_accepted_total"
        assert value(final, accepted) - value(self.base, accepted) == self.logged


TMP_ROOT = ""
SERVER_URL = ""


def test_counters_never_go_back_as_managers_close(
    server: metrics.MetricsServer, tmp_path: Path
) -> None:
    global TMP_ROOT, SERVER_URL
    TMP_ROOT, SERVER_URL = str(tmp_path), server.url
    ManyManagers.TestCase.settings = settings(
        max_examples=15,
        stateful_step_count=12,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    ManyManagers.TestCase().runTest()


@pytest.mark.parametrize(
    ("env", "seconds"),
    [(None, 5.0), ("2", 2.0), ("0", 0.1), ("-3", 0.1), ("1e9", 3600.0), ("nan", 5.0),
     ("soon", 5.0)],
)  # fmt: skip
def test_ray_push_interval_setting(
    monkeypatch: pytest.MonkeyPatch, env: str | None, seconds: float
) -> None:
    from aiologship._metrics import push_interval

    if env is None:
        monkeypatch.delenv("AIOLOGSHIP_RAY_METRICS_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("AIOLOGSHIP_RAY_METRICS_INTERVAL", env)
    assert push_interval() == seconds


class _FakeMetric:
    """Stands in for ray.util.metrics.Counter/Gauge: the unit test of the reporter's
    arithmetic (the real Ray agent is in tests/ray/test_ray_metrics.py)."""

    def __init__(self, name: str, description: str = "", tag_keys: tuple[str, ...] = ()) -> None:
        self.name, self.tag_keys = name, tag_keys
        self.values: dict[tuple[tuple[str, str], ...], float] = {}

    def inc(self, value: float, tags: dict[str, str] | None = None) -> None:
        assert value > 0  # Ray refuses anything else
        key = tuple(sorted((tags or {}).items()))
        self.values[key] = self.values.get(key, 0.0) + value

    def set(self, value: float, tags: dict[str, str] | None = None) -> None:
        self.values[tuple(sorted((tags or {}).items()))] = value


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 1000), st.integers(0, 50)),
        max_size=30,
    )
)
def test_ray_reporter_counts_each_increase_once(pushes: list[tuple[str, int, int]]) -> None:
    """Pushes of cumulative counters, any number of times, in any order of copies:
    Ray's counter ends at the sum of the increases (a drop, a restarted engine,
    counts again from zero), and the gauge at the last value."""
    import sys
    import types

    from aiologship._metrics import RayReporter

    made: dict[str, _FakeMetric] = {}

    def factory(name: str, description: str = "", tag_keys: tuple[str, ...] = ()) -> _FakeMetric:
        made[name] = _FakeMetric(name, description, tag_keys)
        return made[name]

    util = types.SimpleNamespace(metrics=types.SimpleNamespace(Counter=factory, Gauge=factory))
    fake_ray = types.SimpleNamespace(is_initialized=lambda: True, util=util)
    saved = {k: sys.modules.get(k) for k in ("ray", "ray.util", "ray.util.metrics")}
    sys.modules.update({"ray": fake_ray, "ray.util": util, "ray.util.metrics": util.metrics})  # type: ignore[dict-item]
    try:
        reporter = RayReporter()
        expected: dict[str, float] = {}
        last: dict[str, float] = {}
        for copy, shipped, behind in pushes:
            previous = last.get(copy, 0)
            expected[copy] = expected.get(copy, 0) + (
                shipped - previous if shipped >= previous else shipped
            )
            last[copy] = shipped
            label = (("copy", copy),)
            assert reporter.push(
                [
                    ("aiologship_copy_files_shipped", label, shipped),
                    ("aiologship_copy_bytes_behind", label, behind),
                ]
            )
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    counter = made.get("aiologship_copy_files_shipped")
    for copy, total in expected.items():
        got = counter.values.get((("copy", copy),), 0.0) if counter else 0.0
        assert got == total
    gauge = made.get("aiologship_copy_bytes_behind")
    final = {copy: behind for copy, _, behind in pushes}
    for copy, behind in final.items():
        assert gauge is not None and gauge.values[(("copy", copy),)] == behind


@pytest.mark.timeout(120)
def test_managers_closed_at_once_with_ray_imported_close_promptly() -> None:
    """With Ray imported a manager starts its push task on the runtime loop. A
    manager made on an event loop hands that task over from a thread while the
    runtime starts, so a close right after can begin first: the task must then
    not start its endless loop (the runtime's stop waited for it until its 60 s
    bound; before the fix one close in about 50 did)."""
    pytest.importorskip("ray", reason="ray is not installed (extra: ray)")
    import ray  # noqa: F401  - imported: managers now push to Ray (when initialized)

    async def open_and_close() -> None:
        for _ in range(100):
            with anyio.fail_after(30):  # a hang, not a speed: a close takes ~30 ms
                async with LogManager():
                    pass

    anyio.run(open_and_close)


def test_a_scrape_never_shows_a_destination_s_credentials(
    server: metrics.MetricsServer, tmp_path: Path
) -> None:
    """Labels carry the copy's name only: a password in the URI, even while the
    destination fails, never reaches a scrape."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.log").write_text("a\n")
    with LogManager(hdfs_driver="webhdfs") as lm:  # port 9 refuses at once
        op = lm.start_hdfs_copy(
            "metrics_secret", [str(src / "*.log")], "hdfs://alice:s3cr3t-pw@127.0.0.1:9/x",
            copy_interval=3600, max_retries=0, retry_delay=0,
        )  # fmt: skip
        op.flush()
        with urllib.request.urlopen(server.url, timeout=10) as response:
            text = response.read().decode()
        (status,) = lm.list_hdfs_copy_operations()
    assert 'copy="metrics_secret"' in text and status.consecutive_failures >= 1
    assert "s3cr3t" not in text and "alice" not in text
