"""Unit tests of the coordination layer without a Ray cluster: the
RAY_DISABLE_HDFS_COPY parsing, role detection and its cache, the start gate and
its log lines, the host file lock, and the lock-holding copier. The real-cluster
behaviour is tested in tests/ray/."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import anyio
import pytest

from aiologship._copiers import _coordination as coord
from aiologship._copiers._coordination import (
    HostLock,
    Role,
    copy_disabled_by_env,
    copy_gate,
    detect_role,
    lock_path,
    should_skip_copy,
)
from aiologship._copiers._host_copier import HostCopier, HostState, poll_interval_for
from aiologship._copiers._ray_copier import (
    actor_name,
    node_destination,
    portable_error,
    split_actor_name,
)
from aiologship._exceptions import (
    ConfigError,
    CopyConflictError,
    CopyError,
    DestinationError,
)

ROOT = Path(__file__).resolve().parents[2]
NODE = "ab" * 28  # a Ray node id is 56 hex digits


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [f"{r.levelname} {r.getMessage()}" for r in caplog.records if r.name == "aiologship"]


# ------------------------------------------------------------------ env override


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "1", "yes", "YES", " yes "])
def test_env_true_values_disable(value: str) -> None:
    assert copy_disabled_by_env({"RAY_DISABLE_HDFS_COPY": value}) is True


@pytest.mark.parametrize("value", [None, "", "false", "FALSE", "0", "no", "No"])
def test_env_false_values_do_not_disable(value: str | None, caplog: Any) -> None:
    env = {} if value is None else {"RAY_DISABLE_HDFS_COPY": value}
    with caplog.at_level(logging.DEBUG, "aiologship"):
        assert copy_disabled_by_env(env) is False
    assert lines(caplog) == []


@pytest.mark.parametrize("value", ["maybe", "on", "2", "disable"])
def test_env_other_values_warn_and_do_not_disable(value: str, caplog: Any) -> None:
    with caplog.at_level(logging.WARNING, "aiologship"):
        assert copy_disabled_by_env({"RAY_DISABLE_HDFS_COPY": value}) is False
    (line,) = lines(caplog)
    assert line.startswith("WARNING") and repr(value) in line and "RAY_DISABLE_HDFS_COPY" in line


def test_env_defaults_to_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_DISABLE_HDFS_COPY", "1")
    assert copy_disabled_by_env() is True
    monkeypatch.delenv("RAY_DISABLE_HDFS_COPY")
    assert copy_disabled_by_env() is False


# ------------------------------------------------------------------ role detection


def test_standalone_without_ray_initialized() -> None:
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized()
    coord._reset_role_cache()
    assert detect_role() is Role.STANDALONE
    assert anyio.run(coord.adetect_role) is Role.STANDALONE
    assert coord.current_node_id() is None


def test_importing_aiologship_ray_does_not_import_ray() -> None:
    code = (
        "import sys, aiologship.ray as r; assert 'ray' not in sys.modules; print(r.detect_role())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "standalone"


class FakeRay(types.ModuleType):
    """Stands in for the ``ray`` module: a process on node ``node_id`` of a cluster
    whose head is ``head_id``. Counts node lookups."""

    def __init__(self, node_id: str, head_id: str) -> None:
        super().__init__("ray")
        self.node_id = node_id
        self.head_id = head_id
        self.lookups = 0

    def is_initialized(self) -> bool:
        return True

    def get_runtime_context(self) -> Any:
        return types.SimpleNamespace(get_node_id=lambda: self.node_id)

    def nodes(self) -> list[dict[str, Any]]:
        self.lookups += 1
        return [
            {"NodeID": self.head_id, "Resources": {"CPU": 1.0, coord.HEAD_RESOURCE: 1.0}},
            {"NodeID": "f" * 56, "Resources": {"CPU": 1.0}},
        ]


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(node_id: str, head_id: str) -> FakeRay:
        fake = FakeRay(node_id, head_id)
        monkeypatch.setitem(sys.modules, "ray", fake)
        # The private GCS path needs a real Ray; the fake exercises the fallback.
        monkeypatch.setattr(coord, "_node_resources_from_gcs", _no_gcs)
        coord._reset_role_cache()
        return fake

    yield install
    coord._reset_role_cache()


def _no_gcs(node_id: str) -> None:
    raise ImportError("no GCS client in this test")


def test_head_detected_once_per_process(fake_ray: Any) -> None:
    fake = fake_ray(NODE, NODE)
    assert detect_role() is Role.HEAD
    assert detect_role() is Role.HEAD
    assert anyio.run(coord.adetect_role) is Role.HEAD
    assert fake.lookups == 1  # cached: one lookup per (process, node)


def test_worker_detected(fake_ray: Any) -> None:
    fake = fake_ray("f" * 56, NODE)
    assert anyio.run(coord.adetect_role) is Role.WORKER  # first lookup in a thread
    assert detect_role() is Role.WORKER
    assert fake.lookups == 1


def test_cache_is_per_node(fake_ray: Any) -> None:
    fake = fake_ray(NODE, NODE)
    assert detect_role() is Role.HEAD
    fake.node_id = "f" * 56  # ray.shutdown(); ray.init() on another node
    assert detect_role() is Role.WORKER
    assert fake.lookups == 2


def test_failed_lookup_means_worker_and_is_not_cached(fake_ray: Any, caplog: Any) -> None:
    fake = fake_ray(NODE, NODE)

    def broken() -> list[dict[str, Any]]:
        fake.lookups += 1
        raise ConnectionError("GCS unreachable")

    fake.nodes = broken
    with caplog.at_level(logging.WARNING, "aiologship"):
        assert detect_role() is Role.WORKER
    assert "GCS unreachable" in lines(caplog)[0] and NODE in lines(caplog)[0]
    del fake.nodes  # the GCS is back
    assert detect_role() is Role.HEAD
    assert fake.lookups == 2


# ------------------------------------------------------------------ gate and log lines


def test_gate_head_logs_enabled(caplog: Any) -> None:
    with caplog.at_level(logging.INFO, "aiologship"):
        gate = copy_gate({}, role=Role.HEAD)
        assert not should_skip_copy(gate, "app_logs")
    assert gate.enabled and gate.reason is None
    assert lines(caplog) == ["INFO Ray head node detected: HDFS copy enabled"]


def test_gate_worker_skips_with_the_guide_lines(caplog: Any) -> None:
    with caplog.at_level(logging.INFO, "aiologship"):
        gate = copy_gate({}, role=Role.WORKER)
        assert should_skip_copy(gate, "app_logs")
        assert not should_skip_copy(gate, "per_node", scope="node")
    assert not gate.enabled
    assert lines(caplog) == [
        "INFO Ray worker node detected: HDFS copy disabled",
        "INFO HDFS copy operation 'app_logs' skipped: disabled in Ray cluster worker node",
    ]


@pytest.mark.parametrize("role", list(Role))
def test_gate_env_disables_everywhere(role: Role, caplog: Any) -> None:
    with caplog.at_level(logging.INFO, "aiologship"):
        gate = copy_gate({"RAY_DISABLE_HDFS_COPY": "true"}, role=role)
        assert should_skip_copy(gate, "x", scope="node")
    assert not gate.enabled and gate.env_disabled
    assert lines(caplog)[-1] == (
        "INFO HDFS copy operation 'x' skipped: disabled by RAY_DISABLE_HDFS_COPY"
    )


def test_gate_standalone_is_quiet_and_enabled(caplog: Any) -> None:
    with caplog.at_level(logging.INFO, "aiologship"):
        gate = copy_gate({})
    assert gate.role is Role.STANDALONE and gate.enabled
    assert lines(caplog) == []


# ------------------------------------------------------------------ names and wire format


def test_actor_names_round_trip() -> None:
    assert split_actor_name(actor_name("app_logs")) == ("app_logs", None)
    assert split_actor_name(actor_name("a@b", NODE)) == ("a@b", NODE)
    assert split_actor_name(actor_name("a@b")) == ("a@b", None)
    assert split_actor_name("someone-else") is None


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("hdfs://nn:9000/logs/", f"hdfs://nn:9000/logs/{NODE}"),
        ("hdfs://nn:9000/logs", f"hdfs://nn:9000/logs/{NODE}"),
        ("s3://bucket/logs?region=eu-west-1", f"s3://bucket/logs/{NODE}?region=eu-west-1"),
        ("file:///tmp/out", f"file:///tmp/out/{NODE}"),
        ("/tmp/out/", f"/tmp/out/{NODE}"),
        ("relative/out", f"relative/out/{NODE}"),
    ],
)
def test_node_destination(uri: str, expected: str) -> None:
    assert node_destination(uri, NODE) == expected


def test_errors_survive_the_wire() -> None:
    for exc in [
        ConfigError("copy_interval", -1, "must not be negative"),
        DestinationError("hdfs://nn/x", "connection refused"),
        CopyConflictError("app", {"copy_interval": (60.0, 30.0)}),
        RuntimeError("boom"),
    ]:
        back = pickle.loads(pickle.dumps(portable_error(exc)))
        expected_type = CopyError if isinstance(exc, RuntimeError) else type(exc)
        assert type(back) is expected_type
    back = pickle.loads(pickle.dumps(portable_error(ConfigError("k", "v", "why"))))
    assert isinstance(back, ConfigError) and back.key == "k" and back.reason == "why"
    assert str(back) == str(ConfigError("k", "v", "why"))  # the message the caller sees


def test_poll_interval_is_bounded_by_the_copy_interval() -> None:
    assert poll_interval_for(0.5) == 0.5
    assert poll_interval_for(3600) == coord.MAX_LOCK_POLL
    assert poll_interval_for(None) == coord.MAX_LOCK_POLL


# ------------------------------------------------------------------ host lock


def test_lock_path_cannot_escape(tmp_path: Path) -> None:
    for name in ["a/b", "..", "../../etc/passwd", ".", "app logs"]:
        path = lock_path(tmp_path, name)
        assert path.parent == tmp_path / "locks", name
        assert path.name not in ("..lock", "...lock", ".lock")
    assert lock_path(tmp_path, "a/b") != lock_path(tmp_path, "a_b")


def test_lock_path_of_a_long_name_is_short_and_its_own(tmp_path: Path) -> None:
    a, b = "x" * 300 + "1", "x" * 300 + "2"
    assert lock_path(tmp_path, a) != lock_path(tmp_path, b)
    for name in (a, "日志" * 100, "log\udcff"):  # os.fsdecode() makes lone surrogates
        lock = HostLock(tmp_path, name)
        assert len(lock.path.name.encode()) < 255
        assert lock.try_acquire()  # NAME_MAX: the file can be created
        lock.release()


def test_one_holder_at_a_time(tmp_path: Path) -> None:
    a, b = HostLock(tmp_path, "app"), HostLock(tmp_path, "app")
    other = HostLock(tmp_path, "other")
    assert a.try_acquire()
    assert not b.try_acquire()  # flock conflicts between open files, even in one process
    assert other.try_acquire()
    assert str(os.getpid()) in b.holder()
    a.release()
    assert b.try_acquire()
    b.release()
    other.release()
    a.release()  # idempotent


_HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from aiologship._copiers._coordination import HostLock
    lock = HostLock(Path(sys.argv[1]), "app")
    assert lock.try_acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def _hold_in_child(state_dir: Path) -> subprocess.Popen[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(state_dir)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "held"
    return child


def _reap(child: subprocess.Popen[str]) -> None:
    child.kill()
    child.wait(timeout=30)
    if child.stdout is not None:
        child.stdout.close()


@pytest.mark.timeout(60)
def test_waiter_takes_over_when_the_holder_dies(tmp_path: Path) -> None:
    child = _hold_in_child(tmp_path)
    try:
        lock = HostLock(tmp_path, "app")

        async def main() -> tuple[bool, bool]:
            missed = await lock.acquire(poll_interval=0.05, timeout=0.3)
            os.kill(child.pid, signal.SIGKILL)  # no cleanup runs: the kernel frees the lock
            got = await lock.acquire(poll_interval=0.05, timeout=30)
            return missed, got

        missed, got = anyio.run(main)
        assert (missed, got) == (False, True)
        lock.release()
    finally:
        _reap(child)


# ------------------------------------------------------------------ host copier


class FakeEngine:
    """Records the calls the copier makes; ``open_error`` makes open() fail."""

    def __init__(self, open_error: Exception | None = None) -> None:
        self.calls: list[str] = []
        self.open_error = open_error
        self._stop = anyio.Event()

    async def open(self) -> None:
        self.calls.append("open")
        if self.open_error is not None:
            raise self.open_error

    async def run(self) -> None:
        self.calls.append("run")
        await self._stop.wait()

    async def flush(self) -> str:
        self.calls.append("flush")
        return "cycle"

    async def stop(self) -> None:
        self.calls.append("stop")
        self._stop.set()

    def status(self) -> str:
        return "status"


@pytest.mark.timeout(60)
def test_second_copier_stands_by_then_takes_over(tmp_path: Path) -> None:
    async def main() -> None:
        e1, e2 = FakeEngine(), FakeEngine()
        c1 = HostCopier("app", e1, HostLock(tmp_path, "app"), poll_interval=0.05)
        c2 = HostCopier("app", e2, HostLock(tmp_path, "app"), poll_interval=0.05)
        async with anyio.create_task_group() as tg:
            tg.start_soon(c1.run)
            assert await c1.wait_started(10) is HostState.LEADER
            tg.start_soon(c2.run)
            assert await c2.wait_started(10) is HostState.STANDBY
            assert await c1.flush() == "cycle"
            with pytest.raises(CopyError, match="not running in this process"):
                await c2.flush()
            assert e2.calls == []  # the standby never opened its engine
            await c1.stop(timeout=10)  # final cycle, lock released
            assert e1.calls == ["open", "run", "flush", "stop"]
            with anyio.fail_after(10):
                while not c2.is_leader:
                    await anyio.sleep(0.01)
            assert e2.calls[:1] == ["open"]
            await c2.stop(timeout=10)
        assert c1.state is HostState.DONE and c2.state is HostState.DONE

    anyio.run(main)


@pytest.mark.timeout(60)
def test_open_error_reaches_the_starter_and_frees_the_lock(tmp_path: Path) -> None:
    async def main() -> None:
        error = DestinationError("hdfs://nn/x", "connection refused")
        copier = HostCopier("app", FakeEngine(error), HostLock(tmp_path, "app"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(copier.run)  # run() itself never raises into the group
            with pytest.raises(DestinationError):
                await copier.wait_started(10)
        assert copier.state is HostState.FAILED and copier.error is error
        assert HostLock(tmp_path, "app").try_acquire()

    anyio.run(main)


def test_unusable_state_dir_fails_the_start(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")

    async def main() -> None:
        engine = FakeEngine()
        copier = HostCopier("app", engine, HostLock(not_a_dir, "app"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(copier.run)
            with pytest.raises(ConfigError) as info:
                await copier.wait_started(10)
        assert info.value.key == "state_dir" and copier.state is HostState.FAILED
        assert engine.calls == []

    anyio.run(main)


@pytest.mark.timeout(60)
def test_standby_copier_takes_over_from_a_dead_process(tmp_path: Path) -> None:
    child = _hold_in_child(tmp_path)
    try:

        async def main() -> list[str]:
            engine = FakeEngine()
            copier = HostCopier("app", engine, HostLock(tmp_path, "app"), poll_interval=0.05)
            async with anyio.create_task_group() as tg:
                tg.start_soon(copier.run)
                assert await copier.wait_started(10) is HostState.STANDBY
                os.kill(child.pid, signal.SIGKILL)
                with anyio.fail_after(30):
                    while not copier.is_leader:
                        await anyio.sleep(0.01)
                await copier.stop(timeout=10)
            return engine.calls

        assert anyio.run(main) == ["open", "run", "stop"]
    finally:
        _reap(child)


# ------------------------------------------------------------------ host lock, real engine

_BACKEND_CHILD = textwrap.dedent(
    """
    import sys, types
    from pathlib import Path
    import anyio
    from aiologship._copy import CopySpec
    from aiologship._copiers._host_copier import HostLockBackend

    src, dest, state = sys.argv[1:4]

    async def main():
        spec = CopySpec.from_params(
            copy_name="shared", path_patterns=[src + "/*.log"], hdfs_destination=dest,
            copy_interval=0.2,
        )
        async with anyio.create_task_group() as tg:
            backend = HostLockBackend(
                spec, runtime=types.SimpleNamespace(spawn=tg.start_soon), state_dir=Path(state)
            )
            await backend.start()
            print(backend.copier.state, flush=True)
            await anyio.sleep(120)

    anyio.run(main)
    """
)


def _write_logs(folder: Path, start: int, stop: int) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(start, stop):
        data = f"line {i}\n".encode() * (100 + i)
        (folder / f"f{i:03d}.log").write_bytes(data)
        out[f"f{i:03d}.log"] = data
    return out


def _shipped(dest: Path) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    for path in dest.rglob("*.log"):
        out.setdefault(path.name, []).append(path.read_bytes())
    return out


@pytest.mark.timeout(120)
def test_processes_share_one_copier_and_take_over(tmp_path: Path) -> None:
    """Two processes start the same copy_name on one host: one copies, the other
    stands by; the copier is SIGKILLed; the standby takes over and ships the rest,
    each file once (real CopyEngine, local destination)."""
    from aiologship._copiers._host_copier import HostLockBackend
    from aiologship._copy import CopySpec

    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    expected = _write_logs(src, 0, 5)
    child = subprocess.Popen(
        [sys.executable, "-c", _BACKEND_CHILD, str(src), str(dest), str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "leader"

        async def main() -> None:
            spec = CopySpec.from_params(
                copy_name="shared",
                path_patterns=[str(src / "*.log")],
                hdfs_destination=str(dest),
                copy_interval=0.2,
            )
            async with anyio.create_task_group() as tg:
                backend = HostLockBackend(
                    spec, runtime=types.SimpleNamespace(spawn=tg.start_soon), state_dir=state
                )
                await backend.start()
                assert backend.copier is not None
                assert backend.copier.state is HostState.STANDBY
                assert str(backend.status().state) == "new"
                with anyio.fail_after(30):  # the child ships the first files
                    while sorted(_shipped(dest)) != sorted(expected):
                        await anyio.sleep(0.05)
                os.kill(child.pid, signal.SIGKILL)
                expected.update(_write_logs(src, 5, 9))
                with anyio.fail_after(30):
                    while not backend.copier.is_leader:
                        await anyio.sleep(0.02)
                await backend.flush()
                await backend.stop()

        anyio.run(main)
    finally:
        _reap(child)
    out = _shipped(dest)
    assert sorted(out) == sorted(expected)
    for name, data in expected.items():
        assert out[name] == [data], name


@pytest.mark.timeout(60)
def test_copier_stops_when_its_removed_state_dir_is_locked_by_another(tmp_path: Path) -> None:
    """The state dir is removed under a running copier and another copier locks
    the new lock files: the first one stops at its next cycle with a clear error
    instead of shipping beside it, and its final status says so."""
    from aiologship._copiers._host_copier import HostLockBackend
    from aiologship._copy import CopySpec
    from aiologship._copy._statedir import StateLock, engine_lock_path

    src, dest, state = tmp_path / "src", tmp_path / "dest", tmp_path / "state"
    expected = _write_logs(src, 0, 3)
    spec = CopySpec.from_params(
        copy_name="app", path_patterns=[str(src / "*.log")], hdfs_destination=str(dest),
        copy_interval=0.05,
    )  # fmt: skip
    other = StateLock(engine_lock_path(state, spec.state_key), "app")

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            backend = HostLockBackend(
                spec, runtime=types.SimpleNamespace(spawn=tg.start_soon), state_dir=state
            )
            await backend.start()
            assert backend.copier is not None
            with anyio.fail_after(30):
                while sorted(_shipped(dest)) != sorted(expected):
                    await anyio.sleep(0.02)
            # What a second process does, with no await in between: the copier's
            # next cycle finds the new lock file taken.
            state.rename(tmp_path / "removed")  # rm -rf, at once
            other.acquire()
            with anyio.fail_after(30):
                while backend.copier.state is not HostState.FAILED:
                    await anyio.sleep(0.02)
            error = backend.copier.error
            assert isinstance(error, CopyError) and "another process" in str(error)
            status = backend.status()
            assert str(status.state) == "failed" and "another process" in status.last_error
            await backend.stop()

    try:
        anyio.run(main)
    finally:
        other.release()


def test_public_ray_namespace() -> None:
    from aiologship import ray as aray

    assert aray.__all__ == [
        "ENV_DISABLE",
        "NAMESPACE",
        "ClusterDescription",
        "CopierPlacement",
        "NodeDescription",
        "Role",
        "copy_disabled_by_env",
        "describe_cluster",
        "detect_role",
        "list_copies",
        "stop_copy",
    ]
    assert aray.describe_cluster().role is Role.STANDALONE  # no Ray initialized here
    with pytest.raises(CopyError, match="not initialized"):
        aray.list_copies()


def test_short_gil_slices_lower_then_restore_the_switch_interval() -> None:
    from aiologship._copiers._backends import short_gil_slices

    before = sys.getswitchinterval()
    with short_gil_slices():
        assert sys.getswitchinterval() == pytest.approx(0.0005)
        with short_gil_slices():  # a second start meanwhile shares the lowering
            assert sys.getswitchinterval() == pytest.approx(0.0005)
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == before


def test_short_gil_slices_leave_a_value_set_meanwhile_alone() -> None:
    from aiologship._copiers._backends import short_gil_slices

    before = sys.getswitchinterval()
    try:
        with short_gil_slices():
            sys.setswitchinterval(0.002)  # the application's own choice
        assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        sys.setswitchinterval(before)


def test_standalone_start_never_lowers_the_switch_interval(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiologship import LogManager

    calls: list[float] = []
    monkeypatch.setattr(sys, "setswitchinterval", calls.append)
    (tmp_path / "a.log").write_text("x\n")
    with LogManager(state_dir=tmp_path / "state") as lm:
        op = lm.start_hdfs_copy(
            "standalone", [str(tmp_path / "*.log")], str(tmp_path / "dest"), copy_interval=None
        )
        op.flush()
    assert calls == []  # only a start in Ray lowers it (see the Ray cluster tests)
    assert (tmp_path / "dest" / "a.log").read_text() == "x\n"
