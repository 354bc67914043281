"""The copy engine over hdfs:// on the real mini-cluster, with the native and the webhdfs
drivers: what it promises (incremental append, structure, rotation, final cycle, resume
without re-upload, no partial file under a final name) and the HDFS faults the README
promises to survive."""

from __future__ import annotations

import functools
import logging
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pyarrow.fs as pafs
import pytest

from aiologship._config import HdfsDriver
from aiologship._copy import CopyEngine, CopySpec, CopyState, CopyStatus
from aiologship._copy._transfer import TMP_MARK
from aiologship._fs import Destination, resolve_destination
from aiologship._metrics import copy_samples

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=[HdfsDriver.NATIVE, HdfsDriver.WEBHDFS], ids=lambda d: d.value)
def driver(request: pytest.FixtureRequest) -> HdfsDriver:
    return HdfsDriver(request.param)


def lines(start: int, count: int, width: int = 100) -> bytes:
    return b"".join(f"{i:08d} {'x' * (width - 10)}\n".encode() for i in range(start, start + count))


class Recorder(pafs.FileSystemHandler):  # type: ignore[misc]
    """Delegates to a real filesystem and records each call (name, first path).
    Streams open with compression=None, as the real handlers do (pyarrow's
    default would compress or decompress a *.gz name on the fly)."""

    def __init__(self, inner: pafs.FileSystem) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str]] = []

    def _rec(self, name: str, path: Any) -> None:
        self.calls.append((name, str(path)))

    def get_type_name(self) -> str:
        return "recorder"

    def normalize_path(self, path: str) -> str:
        return path

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return list(self.inner.get_file_info(paths))

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return list(self.inner.get_file_info(selector))

    def create_dir(self, path: str, recursive: bool) -> None:
        self.inner.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self.inner.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("not here")

    def delete_file(self, path: str) -> None:
        self._rec("delete_file", path)
        self.inner.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._rec("move", dest)
        self.inner.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        self.inner.copy_file(src, dest)

    def open_input_stream(self, path: str) -> Any:
        return self.inner.open_input_stream(path, compression=None)

    def open_input_file(self, path: str) -> Any:
        return self.inner.open_input_file(path)

    def open_output_stream(self, path: str, metadata: Any) -> Any:
        self._rec("open_output_stream", path)
        return self.inner.open_output_stream(path, compression=None)

    def open_append_stream(self, path: str, metadata: Any) -> Any:
        self._rec("open_append_stream", path)
        return self.inner.open_append_stream(path, compression=None)


class Env:
    def __init__(self, tmp: Path, cluster: Any, root: str, driver: HdfsDriver) -> None:
        self.src = tmp / "src"
        self.state = tmp / "state"
        self.src.mkdir()
        self.cluster = cluster
        self.root = root
        self.driver = driver
        self.uri = f"{cluster.uri}{root}"
        self.engines: list[CopyEngine] = []
        self.recorder: Recorder | None = None
        # An independent reader of the destination: always the native driver, as root.
        self.check = resolve_destination(cluster.uri + "/", hdfs_driver=HdfsDriver.NATIVE)

    def resolver(self, uri: str) -> Destination:
        dest = resolve_destination(uri, hdfs_driver=self.driver)
        self.recorder = Recorder(dest.filesystem)
        return Destination(
            pafs.PyFileSystem(self.recorder), dest.base_path, dest.uri, dest.can_append
        )

    def spec(self, **overrides: Any) -> CopySpec:
        params: dict[str, Any] = {
            "copy_name": "app",
            "path_patterns": [str(self.src / "*.log*")],
            "hdfs_destination": self.uri,
            "copy_interval": None,
            "retry_delay": 0.2,
        }
        params.update(overrides)
        return CopySpec.from_params(**params)

    async def engine(
        self, *, record: bool = True, user: str | None = None, **overrides: Any
    ) -> CopyEngine:
        resolver: Callable[[str], Destination] | None = self.resolver if record else None
        if user is not None and resolver is None:
            resolver = functools.partial(resolve_destination, hdfs_driver=self.driver, user=user)
        engine = CopyEngine(
            self.spec(**overrides),
            state_dir=self.state,
            hdfs_driver=self.driver,
            user=user,
            resolver=resolver,
        )
        await engine.open()
        self.engines.append(engine)
        return engine

    def write(self, rel: str, data: bytes, mode: str = "wb") -> Path:
        path = self.src / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, mode) as f:
            f.write(data)
        return path

    def dest_files(self, under: str | None = None) -> dict[str, bytes]:
        """Relative path -> the bytes stored (never decompressed)."""
        fs = self.check.filesystem
        base = under or self.root
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        out = {}
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                try:
                    with fs.open_input_stream(info.path, compression=None) as f:
                        out[info.path[len(base) + 1 :]] = bytes(f.read())
                except FileNotFoundError:
                    continue  # a temporary file renamed between listing and reading

        return out

    def temp_files(self) -> list[str]:
        return [name for name in self.dest_files() if TMP_MARK in name]

    def open_for_write(self) -> list[str]:
        paths = self.cluster.command("open-files")["paths"]
        return [p for p in paths if p.startswith(self.root + "/")]


@pytest.fixture
async def env(
    tmp_path: Path, hdfs: Any, hadoop_conf: Any, hdfs_dir: str, driver: HdfsDriver
) -> AsyncIterator[Env]:
    e = Env(tmp_path, hdfs, hdfs_dir, driver)
    yield e
    for engine in e.engines:
        with anyio.fail_after(60):
            await engine.stop(final_cycle=False)


async def wait_for(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    interval: float = 0.1,
    detail: Callable[[], Any] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not await anyio.to_thread.run_sync(predicate):
        if time.monotonic() > deadline:
            extra = f": {detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{extra}")
        await anyio.sleep(interval)


# ------------------------------------------------------------------------ promises


async def test_incremental_append(env: Env) -> None:
    path = env.write("app.log", lines(0, 5_000))
    engine = await env.engine()
    first = await engine.flush()
    assert first.ok, first
    assert first.bytes_shipped == path.stat().st_size
    for step in range(3):
        added = lines(10_000 + step * 7, 7)
        env.write("app.log", added, mode="ab")
        result = await engine.flush()
        assert result.ok, result
        assert (result.files_appended, result.files_replaced) == (1, 0)
        assert result.bytes_shipped == len(added)
    assert env.dest_files() == {"app.log": path.read_bytes()}
    assert env.recorder is not None
    appends = [c for c in env.recorder.calls if c[0] == "open_append_stream"]
    assert len(appends) == 3


async def test_preserve_structure(env: Env) -> None:
    env.write("a/app.log", b"a\n")
    env.write("b/deep/app.log", b"b\n")
    engine = await env.engine(
        path_patterns=["**/*.log"], root_dir=str(env.src), preserve_structure=True
    )
    assert (await engine.flush()).ok
    assert env.dest_files() == {"a/app.log": b"a\n", "b/deep/app.log": b"b\n"}


async def test_rotation(env: Env) -> None:
    live = env.write("app.log", lines(0, 50))
    engine = await env.engine()
    await engine.flush()
    env.write("app.log", lines(50, 10), mode="ab")
    await engine.flush()
    old = live.read_bytes()
    live.rename(env.src / "app.log.1")
    env.write("app.log", lines(1000, 3))
    result = await engine.flush()
    assert result.ok, result
    assert env.dest_files() == {"app.log": lines(1000, 3), "app.log.1": old}
    assert env.temp_files() == []


async def test_numbered_rotation_moves_at_the_destination(env: Env) -> None:
    # HDFS refuses to rename onto an existing file: renamed generations are
    # still moved (never sent again), and an append checks what is there.
    engine = await env.engine()
    written = shipped = 0
    for rotation in range(3):
        data = lines(rotation * 1000, 30)
        env.write("app.log", data)
        written += len(data)
        result = await engine.flush()
        assert result.ok, result
        shipped += result.bytes_shipped
        if (env.src / "app.log.1").exists():
            (env.src / "app.log.1").rename(env.src / "app.log.2")
        (env.src / "app.log").rename(env.src / "app.log.1")
    env.write("app.log", b"")
    result = await engine.flush()
    assert result.ok, result
    shipped += result.bytes_shipped
    assert shipped == written
    expected = {p.name: p.read_bytes() for p in env.src.iterdir()}
    assert env.dest_files() == expected
    # Someone else replaces a destination file with one of the same size.
    fs = env.check.filesystem
    with fs.open_output_stream(env.root + "/app.log.1") as f:
        f.write(b"?" * len(expected["app.log.1"]))
    env.write("app.log.1", b"late line\n", mode="ab")
    result = await engine.flush()
    assert result.ok and result.files_replaced == 1, result
    assert env.dest_files()["app.log.1"] == (env.src / "app.log.1").read_bytes()


async def test_final_cycle_on_stop(env: Env) -> None:
    env.write("app.log", lines(0, 5))
    engine = await env.engine(copy_interval=3600, record=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await wait_for(lambda: "app.log" in env.dest_files(), 60, "the first cycle")
        env.write("app.log", lines(5, 500), mode="ab")  # the next cycle is an hour away
        with anyio.fail_after(60):
            await engine.stop()
    assert engine.status().state is CopyState.STOPPED
    assert env.dest_files() == {"app.log": lines(0, 505)}


async def test_resume_after_lost_manifest_without_reupload(env: Env) -> None:
    for i in range(4):
        env.write(f"f{i}.log", lines(i * 100, 20))
    engine = await env.engine()
    assert (await engine.flush()).ok
    await engine.stop()
    (env.state / engine.spec.state_key / "manifest.json").unlink()
    env.write("f0.log", lines(7000, 3), mode="ab")
    again = await env.engine()
    result = await again.flush()
    assert result.ok, result
    assert (result.files_shipped, result.files_appended) == (1, 1)
    assert result.bytes_shipped == len(lines(7000, 3))
    assert env.recorder is not None
    assert [c for c in env.recorder.calls if c[0] == "open_output_stream"] == []
    assert env.dest_files() == {f"f{i}.log": (env.src / f"f{i}.log").read_bytes() for i in range(4)}


async def test_no_partial_file_under_a_final_name(env: Env) -> None:
    env.write("a.log", lines(0, 3000))
    env.write("b.log", lines(0, 10))
    engine = await env.engine()
    assert (await engine.flush()).ok
    # b.log is rewritten shorter (not a growth): it must be replaced, through a temp name.
    env.write("b.log", lines(50, 3))
    assert (await engine.flush()).ok
    assert env.recorder is not None
    created = [p for name, p in env.recorder.calls if name == "open_output_stream"]
    assert created and all(TMP_MARK in Path(p).name for p in created), created
    assert env.dest_files() == {"a.log": lines(0, 3000), "b.log": lines(50, 3)}
    assert env.temp_files() == [] and env.open_for_write() == []


# ------------------------------------------------------------------------ faults


async def test_namenode_restart_mid_copy(env: Env) -> None:
    # Big enough that the restart lands while bytes are moving (1 MiB blocks).
    sources = {f"big{i}.log": lines(i * 100_000, 40_000) for i in range(3)}  # 4 MB each
    for name, data in sources.items():
        env.write(name, data)
    engine = await env.engine(copy_interval=0.5, record=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await wait_for(lambda: engine.progress().bytes_done > 0, 60, "bytes to move")
        await anyio.to_thread.run_sync(env.cluster.command, "restart-namenode")
        env.write("big0.log", lines(999_000, 100), mode="ab")
        expected = {name: (env.src / name).read_bytes() for name in sources}
        # While the NameNode comes back a read can fail ("All DataNodes failed"):
        # not yet converged; the check after the stop below reads strictly.
        await wait_for(
            lambda: _readable(env, expected) and engine.status().pending_files == 0,
            120,
            "every byte after the restart",
            interval=0.5,
            detail=lambda: (
                engine.status(),
                {k: len(v) for k, v in env.dest_files().items()},
                {k: len(v) for k, v in expected.items()},
                env.open_for_write(),
            ),
        )
        with anyio.fail_after(60):
            await engine.stop()
    assert env.dest_files() == expected
    total = sum(len(d) for d in expected.values())
    # Each byte once: what the engine counts as shipped and confirmed equals the sources
    # (a transfer cut by the restart is redone and counted once it is confirmed).
    assert engine.status().bytes_shipped >= total
    assert env.temp_files() == []
    assert env.open_for_write() == []


async def test_datanode_stopped_during_write(env: Env) -> None:
    sources = {f"d{i}.log": lines(i * 100_000, 30_000) for i in range(4)}  # 3 MB each
    for name, data in sources.items():
        env.write(name, data)
    engine = await env.engine(copy_interval=0.3, record=False)
    async with anyio.create_task_group() as tg:
        tg.start_soon(engine.run)
        await wait_for(lambda: engine.progress().bytes_done > 0, 60, "bytes to move")
        await anyio.to_thread.run_sync(env.cluster.command, "stop-datanode 0")
        # The copy completes on the remaining DataNode (retrying as needed).
        await wait_for(
            lambda: (
                engine.status().pending_files == 0
                and engine.status().files_shipped >= len(sources)
                and engine.status().consecutive_failures == 0
            ),
            120,
            "the copy to complete on the other DataNode",
            interval=0.5,
            detail=engine.status,
        )
        with anyio.fail_after(60):
            await engine.stop()
    # Blocks written before the stop may live on the stopped node: bring it back to read.
    await anyio.to_thread.run_sync(env.cluster.command, "start-datanode 0")
    expected = {name: (env.src / name).read_bytes() for name in sources}
    await wait_for(lambda: _readable(env, expected), 60, "all blocks readable")
    assert env.temp_files() == []
    assert env.open_for_write() == []


def _readable(env: Env, expected: dict[str, bytes]) -> bool:
    try:
        return env.dest_files() == expected
    except OSError:
        return False


def figures(status: CopyStatus) -> dict[str, float]:
    """The status as the metrics show it (what Prometheus and Ray read)."""
    return {name: v for name, _, v in copy_samples([status])}


async def test_namenode_down_at_start(env: Env) -> None:
    env.write("app.log", lines(0, 200))
    await anyio.to_thread.run_sync(env.cluster.command, "stop-namenode")
    engine = await env.engine(copy_interval=0.5, record=False)
    lags: list[float] = []
    measuring = True
    app_log: list[str] = []
    log = logging.getLogger("test.app")

    async def ticker() -> None:
        while True:
            t = time.monotonic()
            await anyio.sleep(0.001)
            if measuring:
                lags.append(time.monotonic() - t - 0.001)
            log.info("tick")
            app_log.append("tick")

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        tg.start_soon(engine.run)
        await wait_for(lambda: engine.status().consecutive_failures > 0, 30, "an error in status")
        status = engine.status()
        assert status.state is CopyState.RUNNING
        assert "127.0.0.1" in (status.last_error or "") or "NameNode" in (status.last_error or "")
        ticks_before = len(app_log)
        # (The failure above may be the open's; the lag is measured by a cycle's scan.)
        await wait_for(lambda: engine.status().cycles > 0, 30, "a cycle")
        down = figures(engine.status())
        assert down["aiologship_copy_bytes_behind"] == len(lines(0, 200))
        assert down["aiologship_copy_last_success_timestamp_seconds"] == 0
        await anyio.sleep(2.0)  # more failing cycles (interval 0.5 s) while we measure
        assert len(app_log) > ticks_before  # the app keeps running and logging
        assert engine.status().consecutive_failures > 1
        # The metrics of the outage grow: failures in a row, the age of the oldest byte.
        later = figures(engine.status())
        for name in ("consecutive_failures", "oldest_unshipped_age_seconds"):
            name = f"aiologship_copy_{name}"
            assert later[name] > down[name], name
        # The loop's lag is measured over the outage only: restarting the NameNode below
        # starts JVM work that competes for this machine's 2 cores.
        measuring = False
        await anyio.to_thread.run_sync(env.cluster.command, "start-namenode")
        await wait_for(
            lambda: env.dest_files().get("app.log") == lines(0, 200),
            120,
            "catching up",
            interval=0.5,
            detail=engine.status,
        )
        await wait_for(
            lambda: engine.status().bytes_behind == 0, 30, "no byte behind", detail=engine.status
        )
        with anyio.fail_after(60):
            await engine.stop()
        tg.cancel_scope.cancel()
    # last_error keeps the outage's message (the last error seen); the streak is over.
    assert engine.status().consecutive_failures == 0
    up = figures(engine.status())
    for name in ("consecutive_failures", "oldest_unshipped_age_seconds", "bytes_behind"):
        assert up[f"aiologship_copy_{name}"] == 0, name
    assert up["aiologship_copy_last_success_timestamp_seconds"] > 0
    lags.sort()
    worst, p99 = lags[-1], lags[int(len(lags) * 0.99)]
    print(
        f"event-loop lag while the NameNode was down: worst {worst * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms over {len(lags)} ticks"
    )
    # Blocking work runs in threads; a lag this large would mean a blocking call on the
    # loop (the 5 ms loop-lag target is reported above, not asserted: a shared 2-core
    # machine preempts any process for longer than that now and then).
    assert worst < 0.25, worst


async def test_permission_denied_names_path_and_user(env: Env) -> None:
    fs = env.check.filesystem
    fs.create_dir(f"{env.root}/locked", recursive=True)
    fs.create_dir(f"{env.root}/open", recursive=True)
    import hdfs_native

    hdfs_native.Client(env.cluster.uri).set_permission(f"{env.root}/open", 0o777)
    env.write("app.log", lines(0, 10))
    user = "mallory"
    if env.driver is HdfsDriver.NATIVE:
        os.environ["HADOOP_USER_NAME"] = user  # hdfs-native's only way (restored by conftest)
    denied = await env.engine(
        record=False, user=user, copy_name="denied", hdfs_destination=f"{env.uri}/locked/sub"
    )
    allowed = await env.engine(
        record=False, user=user, copy_name="allowed", hdfs_destination=f"{env.uri}/open"
    )
    bad = await denied.flush()
    good = await allowed.flush()
    assert good.ok, good
    assert not bad.ok
    error = denied.status().last_error or ""
    assert user in error and f"{env.root}/locked" in error, error
    assert env.dest_files(f"{env.root}/open") == {"app.log": lines(0, 10)}


async def test_credentials_never_in_logs_status_errors(
    env: Env, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    env.write("app.log", lines(0, 10))
    secret_pw, secret_token = "pa55w0rdXYZ", "T0KENxyz123"
    host = f"127.0.0.1:{env.cluster.rpc_port}"
    if env.driver is HdfsDriver.WEBHDFS:
        uri = f"hdfs://root:{secret_pw}@{host}{env.root}/c?delegation={secret_token}"
    else:
        uri = f"hdfs://root:{secret_pw}@{host}{env.root}/c"
    engine = await env.engine(record=False, hdfs_destination=uri)
    assert (await engine.flush()).ok
    # And a failing one: the same credentials towards an address where nothing listens.
    dead = uri.replace(host, "127.0.0.2:9")
    failing = await env.engine(record=False, copy_name="dead", hdfs_destination=dead)
    result = await failing.flush()
    assert not result.ok
    texts = [r.getMessage() for r in caplog.records]
    texts += [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    texts += [repr(engine.status()), repr(failing.status()), repr(result)]
    blob = "\n".join(texts)
    assert failing.status().last_error  # there is an error to look at
    assert secret_pw not in blob and secret_token not in blob


_KILLED_APPENDER = """
import sys, time
from aiologship._config import HdfsDriver
from aiologship._fs import resolve_destination
dest = resolve_destination(sys.argv[1], hdfs_driver=HdfsDriver.NATIVE)
out = dest.filesystem.open_append_stream(dest.path_of(sys.argv[2]), compression=None)
out.write(b"x")  # buffered, never sent: the status keeps the old length
print("ready", flush=True)
time.sleep(600)
"""


async def _kill_an_appender(env: Env, rel: str) -> None:
    """A process that opens ``rel`` for append, then dies by SIGKILL: the file
    stays under construction until the NameNode recovers its lease."""
    proc = await anyio.open_process(
        [sys.executable, "-c", _KILLED_APPENDER, env.uri, rel],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        with anyio.fail_after(60):
            line = await proc.stdout.receive()
        assert b"ready" in line, line
    finally:
        proc.kill()
        with anyio.fail_after(30):
            await proc.wait()


# The panic is hdfs-native's; webhdfs reads what the DataNode has. One driver
# keeps the wait for the NameNode's lease recovery (about 60 s) to one test.
@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE], ids=["native"])
async def test_a_destination_left_under_construction_by_a_killed_writer(env: Env) -> None:
    # A writer SIGKILLed mid-append leaves the HDFS file under construction: until
    # its lease is recovered its status keeps the old length while a reader sees
    # only its complete blocks (shorter), and
    # hdfs-native panicked ("Cannot seek beyond the end of a file", a
    # BaseException) when the engine verified what it had shipped there, which
    # ended the copier process at every start (found by benchmarks/soak.py).
    data = lines(0, 20_000)  # 2 MB: the last block is a partial one
    env.write("app.log", data)
    engine = await env.engine(record=False)
    assert (await engine.flush()).ok
    await _kill_an_appender(env, "app.log")
    more = lines(50_000, 100)
    env.write("app.log", more, mode="ab")
    # Bounded: each flush is one cycle; the file may stay unwritable until the
    # NameNode recovers the dead writer's lease.
    for _ in range(60):
        result = await engine.flush()
        if env.dest_files().get("app.log") == data + more:
            break
        await anyio.sleep(1)
    else:
        raise AssertionError(f"never converged: {result} {env.open_for_write()}")
    assert env.temp_files() == []


# ------------------------------------------------------------------------ compressed


def _hadoop_text(env: Env, rel: str) -> bytes:
    """Hadoop's own reader: ``FsShell -text`` (what ``hdfs dfs -text`` runs)
    picks the codec by the file's suffix and decompresses the whole file."""
    harness = sys.modules["aiologship_tests_minidfs"]
    proc = subprocess.run(
        [
            "java",
            "-cp",
            # The cluster's folder first: its core-site.xml, as HADOOP_CONF_DIR gives it.
            f"{env.cluster.conf_dir}{os.pathsep}{harness.build()}",
            "org.apache.hadoop.fs.FsShell",
            "-text",
            f"{env.uri}/{rel}",
        ],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    return proc.stdout


# One codec per driver: each driver and each codec once (the suite's time is budgeted).
@pytest.mark.parametrize(
    ("driver", "codec"),
    [(HdfsDriver.NATIVE, "gzip"), (HdfsDriver.WEBHDFS, "zstd")],
    ids=["native-gzip", "webhdfs-zstd"],
)
async def test_compressed_growth_reads_back_whole(env: Env, codec: str) -> None:
    """Shipped in four cycles (one replace, three appends of a member or frame):
    the file decompresses to exactly the source, by Hadoop's FsShell for gzip
    (its zstd codec needs Hadoop's native library) and pyarrow for both."""
    import pyarrow as pa

    suffix = {"gzip": ".gz", "zstd": ".zst"}[codec]
    path = env.write("app.log", lines(0, 3_000))
    engine = await env.engine(compression=codec)
    assert (await engine.flush()).ok
    for step in range(3):
        size = len(env.dest_files()[f"app.log{suffix}"])
        added = lines(10_000 + step * 50, 50)
        env.write("app.log", added, mode="ab")
        result = await engine.flush()
        assert result.ok, result
        assert (result.files_appended, result.files_replaced) == (1, 0)
        assert result.bytes_read == len(added)
        assert len(env.dest_files()[f"app.log{suffix}"]) - size == result.bytes_shipped
    stored = env.dest_files()
    assert sorted(stored) == [f"app.log{suffix}"]
    packed = stored[f"app.log{suffix}"]
    assert len(packed) < path.stat().st_size
    assert pa.CompressedInputStream(pa.BufferReader(packed), codec).read() == path.read_bytes()
    if codec == "gzip":
        assert _hadoop_text(env, "app.log.gz") == path.read_bytes()


@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE], ids=["native"])
async def test_compressed_file_left_under_construction_by_a_killed_writer(env: Env) -> None:
    """A copier SIGKILLed mid-append leaves the .gz under construction, its last
    member unfinished: the next cycles replace it (compressed files are never
    appended to without a matching size and tail), and it reads back whole."""
    import gzip

    data = lines(0, 20_000)
    env.write("app.log", data)
    engine = await env.engine(record=False, compression="gzip")
    assert (await engine.flush()).ok
    await _kill_an_appender(env, "app.log.gz")
    more = lines(50_000, 100)
    env.write("app.log", more, mode="ab")

    def converged() -> bool:
        try:
            return gzip.decompress(env.dest_files()["app.log.gz"]) == data + more
        except (KeyError, EOFError, OSError):  # not there, or a member cut short
            return False

    for _ in range(60):  # bounded, as above: one cycle per try
        result = await engine.flush()
        if converged():
            break
        await anyio.sleep(1)
    else:
        raise AssertionError(f"never converged: {result} {env.open_for_write()}")
    assert env.temp_files() == []


@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE], ids=["native"])
async def test_templated_destination_partitions(env: Env) -> None:
    """Partitions made on HDFS as files are first seen; compressed on top."""
    import socket
    from datetime import UTC

    env.write("app.log", lines(0, 10))
    engine = await env.engine(
        hdfs_destination=env.uri + "/{date:%Y/%m}/{hostname}/",
        timezone=UTC,
        compression="gzip",
    )
    before = time.strftime("%Y/%m", time.gmtime())
    assert (await engine.flush()).ok
    months = {before, time.strftime("%Y/%m", time.gmtime())}  # the cycle may straddle a month
    (name,) = env.dest_files()
    assert name in {f"{m}/{socket.gethostname()}/app.log.gz" for m in months}
    env.write("app.log", lines(10, 5), mode="ab")
    result = await engine.flush()
    assert result.ok and result.files_appended == 1


# ------------------------------------------------------------------------ roll-up


@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE], ids=["native"])
async def test_gzip_rollup_reads_back_with_fsshell(env: Env) -> None:
    """Rotated files rolled up over three cycles into one gzip roll file (the
    first cycle creates it through a temporary name, the next two append
    members): Hadoop's FsShell -text returns exactly the sources' bytes, in
    the order the manifest records their ranges."""
    import json

    from aiologship._copy._manifest import MANIFEST_NAME

    sealed = time.time() - 3600

    def rotated(name: str, data: bytes, mode: str = "wb") -> None:
        os.utime(env.write(name, data, mode), (sealed, sealed))

    rotated("app.log.1", lines(0, 2_000))
    rotated("app.log.2", lines(2_000, 1_000))
    engine = await env.engine(compression="gzip", rollup={"size": "64 MiB", "settle": 0})
    assert (await engine.flush()).ok
    rotated("app.log.2", lines(3_000, 500), mode="ab")  # grew after it was rolled
    rotated("app.log.3", lines(3_500, 1_500))
    assert (await engine.flush()).ok
    rotated("app.log.4", lines(5_000, 300))
    result = await engine.flush()
    assert result.ok and result.files_appended == 1
    rolls = [n for n in env.dest_files() if not n.startswith(".")]
    assert len(rolls) == 1 and rolls[0].startswith("app-") and rolls[0].endswith(".log.gz")
    assert engine.status().roll_files == 1
    (manifest,) = env.state.rglob(MANIFEST_NAME)
    (roll,) = json.loads(manifest.read_bytes())["rollup"]["rolls"]
    expected = b"".join(Path(s).read_bytes()[a:b] for s, _, a, b in roll["spans"])
    assert [Path(s).name for s, *_ in roll["spans"]] == [
        "app.log.1",
        "app.log.2",
        "app.log.2",
        "app.log.3",
        "app.log.4",
    ]
    assert _hadoop_text(env, rolls[0]) == expected
    assert len(expected) == sum(p.stat().st_size for p in env.src.iterdir())
    assert env.temp_files() == []


@pytest.mark.parametrize("driver", [HdfsDriver.NATIVE], ids=["native"])
async def test_roll_left_under_construction_by_a_killed_writer(env: Env) -> None:
    """A roll file a killed writer left under construction reads short (0 bytes
    of a partial block) until its lease is recovered: the roll is neither
    closed nor repaired meanwhile; an empty append attempt per try makes the
    NameNode recover the lease once the soft limit is past, and the next range
    goes into the same roll. The soft limit is 3 s here instead of 60 s (measured
    with 60 s: converged after 62 s); the hard limit stays at Hadoop's 20 min, so
    it is our append attempt that starts the recovery, not the NameNode's monitor."""
    await anyio.to_thread.run_sync(env.cluster.command, f"lease-period 3000 {_HARD_LIMIT_MS}")
    try:
        await _roll_left_under_construction(env)
    finally:
        await anyio.to_thread.run_sync(env.cluster.command, f"lease-period 60000 {_HARD_LIMIT_MS}")


_HARD_LIMIT_MS = 20 * 60 * 1000  # dfs.namenode.lease-hard-limit-sec's default


async def _roll_left_under_construction(env: Env) -> None:
    sealed = time.time() - 3600

    def rotated(name: str, data: bytes) -> None:
        os.utime(env.write(name, data), (sealed, sealed))

    rotated("app.log.1", lines(0, 20_000))
    rollup = {"size": "64 MiB", "settle": 0}
    engine = await env.engine(record=False, compression="gzip", rollup=rollup)
    assert (await engine.flush()).ok
    (name,) = [n for n in env.dest_files() if not n.startswith(".")]
    await _kill_an_appender(env, name)
    rotated("app.log.2", lines(20_000, 300))
    failed = 0
    for _ in range(60):  # bounded: one cycle per try
        result = await engine.flush()
        if result.ok:
            break
        assert "under construction" in (result.destination_error or ""), result
        failed += 1
        await anyio.sleep(1)
    else:
        raise AssertionError(f"never converged: {result} {env.open_for_write()}")
    assert failed > 0  # the dead writer's lease held the roll for a while
    assert [n for n in env.dest_files() if not n.startswith(".")] == [name]
    want = (env.src / "app.log.1").read_bytes() + (env.src / "app.log.2").read_bytes()
    assert _hadoop_text(env, name) == want
