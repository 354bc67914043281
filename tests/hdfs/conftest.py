"""Fixtures of the HDFS tests: one real MiniDFSCluster (tests/minidfs) per test session.

Every test in this folder is marked ``hdfs``. Where java or mvn is missing the tests
are skipped naming the missing tool; where they exist the cluster must come up, or the
fixture fails with the JVM's last output.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_HARNESS = Path(__file__).resolve().parents[1] / "minidfs" / "minidfs.py"


def _load_harness() -> Any:
    name = "aiologship_tests_minidfs"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _HARNESS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


minidfs = _load_harness()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.hdfs)


class _EarlyStart:
    """The mini-cluster built (Maven, the first time) and started in a thread as soon
    as collection shows HDFS tests will run: its 10-30 s overlap the tests before
    them instead of adding to the run."""

    def __init__(self) -> None:
        self.data_dir = Path(tempfile.mkdtemp(prefix="aiologship-minidfs-"))
        self.cluster: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._start, name="minidfs-start", daemon=True)
        self.thread.start()

    def _start(self) -> None:
        try:
            self.cluster = minidfs.MiniDfs.start(self.data_dir)
            _warm_up(self.cluster)
        except BaseException as exc:
            self.error = exc

    def result(self) -> Any:
        """The started cluster; raises what the start raised."""
        self.thread.join(minidfs.BUILD_TIMEOUT + minidfs.START_TIMEOUT + 60)
        if self.thread.is_alive():
            raise minidfs.MiniDfsError("the mini-cluster's start did not finish in time")
        if self.error is not None:
            raise self.error
        return self.cluster

    def close(self) -> None:
        self.thread.join(minidfs.BUILD_TIMEOUT + minidfs.START_TIMEOUT + 60)
        if self.cluster is not None:
            self.cluster.close()
        shutil.rmtree(self.data_dir, ignore_errors=True)


_early: _EarlyStart | None = None


def pytest_collection_finish(session: pytest.Session) -> None:
    global _early
    here = Path(__file__).resolve().parent
    wanted = any(here in Path(str(item.fspath)).resolve().parents for item in session.items)
    # Under xdist every worker collects every test, and only the one given the
    # "hdfs" group needs a cluster: there the fixture starts it (not early).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if wanted and not minidfs.missing_tools() and _early is None:
        _early = _EarlyStart()


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _early is not None:
        _early.close()


@pytest.fixture(scope="session")
def hdfs_cluster() -> Any:
    """The running mini-cluster: ``.uri``, ``.rpc_port``, ``.http_port``, ``.conf_dir``,
    ``.superuser``, ``.command("restart-namenode")``. Torn down at session end."""
    missing = minidfs.missing_tools()
    if missing:
        pytest.skip(f"HDFS mini-cluster needs {' and '.join(missing)} on PATH")
    global _early
    if _early is None:
        _early = _EarlyStart()  # an xdist worker: started by its first HDFS test
    try:
        return _early.result()
    except minidfs.MiniDfsError as exc:
        pytest.fail(f"HDFS mini-cluster did not come up: {exc}", pytrace=False)


def _warm_up(cluster: Any) -> None:
    """One multi-block write before the first test. Right after start-up the
    NameNode may refuse a file's next block until a DataNode has reported the
    previous one (NotReplicatedYetException); the Java client retries that
    (``dfs.client.block.write.locateFollowingBlock.retries``), hdfs-native gives
    up, and the first driver test then failed on a loaded machine. The copy
    engine retries a failed file itself; the driver tests test the driver, so
    they start on a warm cluster. Bounded: 10 tries, about 30 s."""
    from aiologship._config import HdfsDriver
    from aiologship._fs import resolve_destination

    fs = resolve_destination(cluster.uri + "/", hdfs_driver=HdfsDriver.NATIVE).filesystem
    data = bytes(range(256)) * (10 * 1024)  # 2.5 blocks of 1 MiB
    for attempt in range(10):
        try:
            with fs.open_output_stream("/warm-up") as out:
                out.write(data)
            fs.delete_file("/warm-up")
            return
        except OSError:
            if attempt == 9:
                raise
            time.sleep(3)  # a DataNode heartbeat: the block reports are due by then


@pytest.fixture
def hdfs(hdfs_cluster: Any) -> Iterator[Any]:
    """The cluster, checked healthy before the test (a fault test before may have left a
    node down) and restored after it."""
    _heal(hdfs_cluster)
    yield hdfs_cluster
    _heal(hdfs_cluster)


def _heal(cluster: Any) -> None:
    state = cluster.command("status")
    if not state.get("namenode_up"):
        cluster.command("start-namenode")
    for index in state.get("stopped_datanodes", []):
        cluster.command(f"start-datanode {index}")


@pytest.fixture
def hdfs_dir(hdfs: Any) -> str:
    """A fresh, not yet existing directory path on the cluster, unique per test."""
    return f"/t/{uuid.uuid4().hex[:12]}"


@pytest.fixture
def hadoop_conf(hdfs: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HADOOP_CONF_DIR pointing at the cluster's core-site.xml/hdfs-site.xml."""
    monkeypatch.setenv("HADOOP_CONF_DIR", str(hdfs.conf_dir))
    return Path(hdfs.conf_dir)


@pytest.fixture(autouse=True)
def _restore_hadoop_user() -> Iterator[None]:
    """The native driver sets HADOOP_USER_NAME for a requested user (hdfs-native reads
    the user from there); keep one test's user out of the next test."""
    saved = os.environ.get("HADOOP_USER_NAME")
    yield
    if saved is None:
        os.environ.pop("HADOOP_USER_NAME", None)
    else:
        os.environ["HADOOP_USER_NAME"] = saved
