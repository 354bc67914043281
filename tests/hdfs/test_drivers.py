"""The hdfs:// drivers (native, webhdfs) against the real mini-cluster, as pyarrow.fs."""

from __future__ import annotations

import socket
import time
from typing import Any

import pyarrow
import pyarrow.fs as pafs
import pytest

from aiologship._config import HdfsDriver
from aiologship._exceptions import DestinationError
from aiologship._fs import resolve_destination
from aiologship._fs._hdfs import open_hdfs, parse_target
from aiologship._fs._hdfs._libhdfs import libhdfs_unavailable

DRIVERS = [HdfsDriver.NATIVE, HdfsDriver.WEBHDFS]
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(params=DRIVERS, ids=lambda d: d.value)
def driver(request: pytest.FixtureRequest) -> HdfsDriver:
    return HdfsDriver(request.param)


@pytest.fixture
def fs(hdfs: Any, hadoop_conf: Any, driver: HdfsDriver, hdfs_dir: str) -> Any:
    dest = resolve_destination(f"{hdfs.uri}{hdfs_dir}", hdfs_driver=driver)
    assert dest.base_path == hdfs_dir
    assert dest.can_append
    dest.filesystem.create_dir(hdfs_dir, recursive=True)
    return dest.filesystem


def _write(fs: Any, path: str, data: bytes) -> None:
    with fs.open_output_stream(path) as out:
        out.write(data)


def _read(fs: Any, path: str) -> bytes:
    with fs.open_input_stream(path) as f:
        return bytes(f.read())


def test_write_read_stat(fs: Any, hdfs_dir: str) -> None:
    # 2.5 blocks (the cluster's block size is 1 MiB) so multi-block writes are covered.
    data = bytes(range(256)) * (10 * 1024)
    path = f"{hdfs_dir}/a/b.log"
    _write(fs, path, data)  # the parent "a" does not exist yet
    info = fs.get_file_info(path)
    assert info.type == pafs.FileType.File
    assert info.size == len(data)
    assert info.mtime_ns and info.mtime_ns > 0
    assert fs.get_file_info(f"{hdfs_dir}/a").type == pafs.FileType.Directory
    assert fs.get_file_info(f"{hdfs_dir}/nope").type == pafs.FileType.NotFound
    assert _read(fs, path) == data
    with fs.open_input_file(path) as f:
        assert f.read_at(5, 1000) == data[1000:1005]


def test_overwrite_replaces(fs: Any, hdfs_dir: str) -> None:
    path = f"{hdfs_dir}/x"
    _write(fs, path, b"first version, long")
    _write(fs, path, b"second")
    assert _read(fs, path) == b"second"


def test_append(fs: Any, hdfs_dir: str) -> None:
    path = f"{hdfs_dir}/grow.log"
    with fs.open_append_stream(path) as out:  # creates a missing file
        out.write(b"line 1\n")
    for i in range(2, 5):
        with fs.open_append_stream(path) as out:
            out.write(f"line {i}\n".encode())
    assert _read(fs, path) == b"line 1\nline 2\nline 3\nline 4\n"
    assert fs.get_file_info(path).size == 28


def test_move_and_replace(fs: Any, hdfs_dir: str) -> None:
    tmp, final = f"{hdfs_dir}/.f.tmp", f"{hdfs_dir}/f"
    _write(fs, tmp, b"one")
    fs.move(tmp, final)
    assert fs.get_file_info(tmp).type == pafs.FileType.NotFound
    _write(fs, tmp, b"two!")
    fs.move(tmp, final)  # pyarrow's move replaces an existing file
    assert _read(fs, final) == b"two!"
    with pytest.raises(FileNotFoundError, match=r"\.missing"):
        fs.move(f"{hdfs_dir}/.missing", f"{hdfs_dir}/g")


def test_list_and_delete(fs: Any, hdfs_dir: str) -> None:
    for rel in ("a.log", "d/b.log", "d/e/c.log"):
        _write(fs, f"{hdfs_dir}/{rel}", rel.encode())
    flat = fs.get_file_info(pafs.FileSelector(hdfs_dir))
    assert sorted(i.path for i in flat) == [f"{hdfs_dir}/a.log", f"{hdfs_dir}/d"]
    deep = fs.get_file_info(pafs.FileSelector(hdfs_dir, recursive=True))
    files = sorted(i.path for i in deep if i.type == pafs.FileType.File)
    assert files == [f"{hdfs_dir}/a.log", f"{hdfs_dir}/d/b.log", f"{hdfs_dir}/d/e/c.log"]
    sizes = {i.path: i.size for i in deep if i.type == pafs.FileType.File}
    assert sizes[f"{hdfs_dir}/d/e/c.log"] == len("d/e/c.log")
    missing = pafs.FileSelector(f"{hdfs_dir}/none", allow_not_found=True)
    assert fs.get_file_info(missing) == []
    with pytest.raises(FileNotFoundError):
        fs.get_file_info(pafs.FileSelector(f"{hdfs_dir}/none"))
    fs.delete_file(f"{hdfs_dir}/a.log")
    assert fs.get_file_info(f"{hdfs_dir}/a.log").type == pafs.FileType.NotFound
    with pytest.raises(OSError, match="directory"):
        fs.delete_file(f"{hdfs_dir}/d")  # delete_file never removes a directory
    with pytest.raises(FileNotFoundError, match=r"a\.log"):
        fs.delete_file(f"{hdfs_dir}/a.log")
    fs.delete_dir(f"{hdfs_dir}/d")
    assert fs.get_file_info(pafs.FileSelector(hdfs_dir)) == []


def test_missing_file_errors_name_the_path(fs: Any, hdfs_dir: str) -> None:
    with pytest.raises(FileNotFoundError, match=r"ghost\.log"):
        _read(fs, f"{hdfs_dir}/ghost.log")


def test_permission_denied_names_path_and_user(
    hdfs: Any,
    hadoop_conf: Any,
    driver: HdfsDriver,
    hdfs_dir: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The superuser (the JVM's user) makes a folder only it may write to.
    root = resolve_destination(hdfs.uri + hdfs_dir, hdfs_driver=driver).filesystem
    root.create_dir(f"{hdfs_dir}/locked", recursive=True)
    # hdfs-native takes the user from HADOOP_USER_NAME (one per process); webhdfs from
    # the user argument. Both paths are exercised.
    if driver is HdfsDriver.NATIVE:
        monkeypatch.setenv("HADOOP_USER_NAME", "mallory")
        dest = resolve_destination(hdfs.uri + hdfs_dir, hdfs_driver=driver)
    else:
        dest = resolve_destination(hdfs.uri + hdfs_dir, hdfs_driver=driver, user="mallory")
    with pytest.raises(PermissionError) as err:
        _write(dest.filesystem, f"{hdfs_dir}/locked/x.log", b"no")
    assert "mallory" in str(err.value)
    assert f"{hdfs_dir}/locked" in str(err.value)
    # Other operations go on: reading is allowed to everyone.
    _write(root, f"{hdfs_dir}/open.log", b"readable")
    assert _read(dest.filesystem, f"{hdfs_dir}/open.log") == b"readable"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("driver_name", ["native", "webhdfs"])
def test_dead_namenode_fails_fast_and_redacted(
    driver_name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    port = _free_port()  # nothing listens there
    uri = f"hdfs://alice:s3cr3tpw@127.0.0.1:{port}/logs?delegation=T0KEN42"
    driver = HdfsDriver(driver_name)
    if driver is HdfsDriver.NATIVE:
        uri = uri.split("?")[0]  # native refuses a token in the URI (tested below)
    started = time.monotonic()
    with pytest.raises(DestinationError) as err:
        resolve_destination(uri, hdfs_driver=driver)
    elapsed = time.monotonic() - started
    text = f"{err.value} {err.value.uri} {err.value.reason} {err.value!r}"
    assert "s3cr3tpw" not in text and "T0KEN42" not in text
    assert "alice" in err.value.uri  # the user name is kept, only secrets go
    # Bounded failover: seconds, not the hdfs-native default of ~3 minutes.
    assert elapsed < 30, elapsed


def test_native_refuses_token_in_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    uri = "hdfs://127.0.0.1:1/x?delegation=T0KEN42"
    with pytest.raises(DestinationError, match="HADOOP_TOKEN_FILE_LOCATION") as err:
        resolve_destination(uri, hdfs_driver=HdfsDriver.NATIVE)
    assert "T0KEN42" not in str(err.value)


def test_webhdfs_credentials_never_in_errors(hdfs: Any, hadoop_conf: Any, hdfs_dir: str) -> None:
    # user:password goes as basic auth, the token as delegation=; the NameNode (simple
    # auth) ignores both, so the calls work; what fails must not quote either secret.
    uri = f"hdfs://bob:pa55word@127.0.0.1:{hdfs.rpc_port}{hdfs_dir}?delegation=T0KEN42"
    dest = resolve_destination(uri, hdfs_driver=HdfsDriver.WEBHDFS)
    assert "pa55word" not in dest.uri and "T0KEN42" not in dest.uri
    raised = []
    for call in (
        lambda: _read(dest.filesystem, f"{hdfs_dir}/missing.log"),
        lambda: dest.filesystem.delete_file(f"{hdfs_dir}/missing.log"),
        lambda: dest.filesystem.move(f"{hdfs_dir}/a", f"{hdfs_dir}/b"),
        lambda: _write(dest.filesystem, "/", b"x"),
    ):
        with pytest.raises(OSError) as err:
            call()
        raised.append(f"{err.value!s} {err.value!r} {err.value.__cause__!r}")
    text = " ".join(raised)
    assert "missing.log" in text
    assert "pa55word" not in text and "T0KEN42" not in text


def test_auto_picks_native(
    hdfs: Any, hadoop_conf: Any, hdfs_dir: str, caplog: pytest.LogCaptureFixture
) -> None:
    # libhdfs is opt-in: auto picks native whether libhdfs loads here or not.
    caplog.set_level("INFO", logger="aiologship.hdfs")
    fs, base, can_append = open_hdfs(
        f"{hdfs.uri}{hdfs_dir}", f"{hdfs.uri}{hdfs_dir}", driver=HdfsDriver.AUTO, user=None
    )
    assert fs.type_name == "py::hdfs-native"
    assert base == hdfs_dir and can_append
    assert any("native" in r.getMessage() and "auto" in r.getMessage() for r in caplog.records)


def test_libhdfs_unavailable_is_a_clear_error(hdfs: Any) -> None:
    reason = libhdfs_unavailable()
    if reason is None:
        pytest.skip("libhdfs is available here; see test_libhdfs_roundtrip")
    with pytest.raises(DestinationError, match="libhdfs driver is not available"):
        resolve_destination(hdfs.uri + "/x", hdfs_driver=HdfsDriver.LIBHDFS)


def test_libhdfs_roundtrip(hdfs: Any, hdfs_dir: str) -> None:
    reason = libhdfs_unavailable()
    if reason is not None:
        pytest.skip(f"libhdfs driver unavailable: {reason}")
    dest = resolve_destination(hdfs.uri + hdfs_dir, hdfs_driver=HdfsDriver.LIBHDFS)
    _write(dest.filesystem, f"{hdfs_dir}/l.log", b"via libhdfs")
    assert _read(dest.filesystem, f"{hdfs_dir}/l.log") == b"via libhdfs"


def test_parse_target_reads_conf_dir(hdfs: Any, hadoop_conf: Any) -> None:
    target = parse_target("hdfs:///logs/app/", "hdfs:///logs/app/")
    assert (target.host, target.port) == ("127.0.0.1", hdfs.rpc_port)  # fs.defaultFS
    assert target.path == "/logs/app"
    full = parse_target("hdfs://u:hunter2@nn:1234/a?delegation=T0K", "")
    assert (full.user, full.password, full.token) == ("u", "hunter2", "T0K")
    assert (full.host, full.port, full.path) == ("nn", 1234, "/a")
    assert "hunter2" not in repr(full) and "T0K" not in repr(full)


def test_errors_are_pyarrow_compatible(fs: Any, hdfs_dir: str) -> None:
    # The copy engine catches (OSError, pyarrow.ArrowException): whatever the handler
    # raises must be one of them.
    try:
        fs.delete_dir(f"{hdfs_dir}/never")
    except (OSError, pyarrow.ArrowException) as exc:
        assert "never" in str(exc)
    else:
        pytest.fail("deleting a missing directory succeeded")


def _child_write(fs: Any, path: str) -> None:
    # Runs in a forked child: the parent's hdfs-native client (and its runtime threads)
    # did not survive the fork; the driver must build a new one for this pid.
    with fs.open_output_stream(path) as out:
        out.write(b"from the child")


def test_native_client_is_recreated_after_fork(hdfs: Any, hadoop_conf: Any, hdfs_dir: str) -> None:
    import multiprocessing

    dest = resolve_destination(hdfs.uri + hdfs_dir, hdfs_driver=HdfsDriver.NATIVE)
    fs = dest.filesystem
    _write(fs, f"{hdfs_dir}/parent.log", b"from the parent")  # the parent's client exists
    child = multiprocessing.get_context("fork").Process(
        target=_child_write, args=(fs, f"{hdfs_dir}/child.log")
    )
    child.start()
    child.join(60)
    if child.is_alive():
        child.kill()
        child.join(10)
        pytest.fail("the forked child hung using the native driver")
    assert child.exitcode == 0
    assert _read(fs, f"{hdfs_dir}/child.log") == b"from the child"
    assert _read(fs, f"{hdfs_dir}/parent.log") == b"from the parent"  # parent still works
