from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs
import pytest

from aiologship._config import HdfsDriver
from aiologship._exceptions import ConfigError, DestinationError
from aiologship._fs import Destination, normalize_destination, redact, resolve_destination


def test_plain_path_is_local_and_appendable(tmp_path: Path) -> None:
    dest = resolve_destination(str(tmp_path / "out") + "/")
    assert isinstance(dest.filesystem, pafs.LocalFileSystem)
    assert dest.base_path == str(tmp_path / "out")
    assert dest.can_append
    assert dest.path_of("a/b.log") == str(tmp_path / "out" / "a" / "b.log")


def test_relative_path_becomes_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert normalize_destination("out/logs") == str(tmp_path / "out" / "logs")
    assert resolve_destination("out/logs").base_path == str(tmp_path / "out" / "logs")


def test_file_uri(tmp_path: Path) -> None:
    dest = resolve_destination(f"file://{tmp_path}/out")
    assert isinstance(dest.filesystem, pafs.LocalFileSystem)
    assert dest.base_path == f"{tmp_path}/out"
    assert dest.uri == f"file://{tmp_path}/out"


def test_pyarrow_uri_mock_filesystem() -> None:
    dest = resolve_destination("mock:///base/dir")
    assert dest.filesystem.type_name == "mock"
    assert dest.base_path == "base/dir"
    assert dest.can_append


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        (42, "expected a URI"),
        ("ftp://host/x", "unsupported scheme 'ftp'"),
        ("hdfs:/one-slash", "malformed URI"),
        ("file://relative/path", "malformed file URI"),
        ("s3:///no-bucket", "needs a bucket"),
        ("hdfs://host:notaport/x", "malformed URI"),
        ("/tmp/x\x00y", "control characters"),
    ],
)
def test_bad_destination_names_the_parameter(uri: Any, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve_destination(uri)
    assert info.value.key == "hdfs_destination"
    assert reason in str(info.value)


def test_bad_destination_error_is_redacted() -> None:
    with pytest.raises(ConfigError) as info:
        normalize_destination("ftp://bob:hunter22@host/x")
    assert "hunter22" not in str(info.value)
    assert "***" in str(info.value)


def test_hdfs_goes_through_the_hdfs_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    # A unit test of the dispatch only; the drivers are tested against a real
    # HDFS in the HDFS issue's tests.
    from aiologship._fs import _hdfs

    calls: list[tuple[str, str, HdfsDriver, str | None]] = []

    def fake_open(uri: str, redacted: str, *, driver: HdfsDriver, user: str | None) -> Any:
        calls.append((uri, redacted, driver, user))
        return pafs.LocalFileSystem(), "/logs/", True

    monkeypatch.setattr(_hdfs, "open_hdfs", fake_open)
    dest = resolve_destination(
        "hdfs://u:pw@nn:9000/logs/", hdfs_driver=HdfsDriver.WEBHDFS, user="svc"
    )
    assert calls == [
        ("hdfs://u:pw@nn:9000/logs/", "hdfs://u:***@nn:9000/logs/", HdfsDriver.WEBHDFS, "svc")
    ]
    assert dest == Destination(dest.filesystem, "/logs", "hdfs://u:***@nn:9000/logs/", True)


def test_hdfs_failure_is_a_destination_error_with_redacted_uri(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiologship._fs import _hdfs

    def failing(uri: str, redacted: str, *, driver: HdfsDriver, user: str | None) -> Any:
        raise DestinationError(redacted, "connection refused")

    monkeypatch.setattr(_hdfs, "open_hdfs", failing)
    with pytest.raises(DestinationError) as info:
        resolve_destination("hdfs://u:topsecret@127.0.0.1:1/x")
    assert "topsecret" not in str(info.value)
    assert info.value.uri == "hdfs://u:***@127.0.0.1:1/x"


def test_pyarrow_errors_are_mapped() -> None:
    # pyarrow rejects the query parameter before any network access.
    with pytest.raises(DestinationError) as info:
        resolve_destination("s3://KEY:verysecret@bucket/x?bogus=1")
    assert "verysecret" not in str(info.value)
    assert "s3://KEY:***@bucket/x?bogus=1" in str(info.value)
    assert "bogus" in info.value.reason


def test_home_is_expanded() -> None:
    assert normalize_destination("~/logs") == os.path.join(os.path.expanduser("~"), "logs")


@pytest.mark.parametrize(
    "uri",
    [
        "hdfs://alice:pa#ss@host/x",
        "hdfs://alice:ab/cd@host/x",
        "hdfs://alice:p?wd@host/x",
        "hdfs://alice:9876/5@127.0.0.1:1/logs",
        "s3://KEY:se/cret@bucket/x",
        "hdfs://alice:pw@host/x#frag@ment",
    ],
)
def test_ambiguous_userinfo_is_refused_redacted(uri: str) -> None:
    password = uri.split("//", 1)[1].split(":", 1)[1].rsplit("@", 1)[0]
    with pytest.raises(ConfigError, match="percent-encode") as info:
        normalize_destination(uri)
    text = f"{info.value} {info.value!r} {info.value.value!r} {info.value.reason}"
    assert password not in text
    assert info.value.key == "hdfs_destination"


@pytest.mark.parametrize(
    ("uri", "password"),
    [
        ("hdfs://alice:pa%23ss@host/x", "pa#ss"),
        ("hdfs://alice:ab%2Fcd@host/x", "ab/cd"),
        ("hdfs://alice:9876%2F5@127.0.0.1:1/logs", "9876/5"),
    ],
)
def test_percent_encoded_password_is_accepted_and_parsed(uri: str, password: str) -> None:
    from aiologship._fs._hdfs import parse_target

    assert normalize_destination(uri) == uri
    target = parse_target(uri, redact(uri))
    assert target.password == password
    assert target.user == "alice"
    assert target.host in ("host", "127.0.0.1")


def test_at_sign_in_a_path_without_password_is_kept() -> None:
    assert normalize_destination("hdfs://nn/logs/a@b") == "hdfs://nn/logs/a@b"


@pytest.mark.parametrize(
    ("uri", "part"),
    [
        ("file:///var/log/out#frag", "#frag"),
        ("file:///var/log/out?x=1", "?x=1"),
        ("file:///var/log/out?token=S3CRETTOKEN", "?token=***"),
    ],
)
def test_local_destination_with_query_or_fragment_is_refused(uri: str, part: str) -> None:
    with pytest.raises(ConfigError, match="query or fragment") as info:
        normalize_destination(uri)
    assert part in str(info.value)
    assert "S3CRETTOKEN" not in str(info.value)


def test_plain_path_keeps_hash_and_question_mark(tmp_path: Path) -> None:
    # In a plain path these are ordinary file-name characters, not URI syntax.
    path = str(tmp_path / "out#1?x=2")
    assert normalize_destination(path) == path
    assert resolve_destination(path).base_path == path


def test_auto_driver_is_native_even_where_libhdfs_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    # libhdfs is opt-in: auto must pick the driver the mini-cluster tests cover, even on
    # a host where libhdfs would load.
    from aiologship._fs import _hdfs
    from aiologship._fs._hdfs import _libhdfs
    from aiologship._fs._hdfs import _native as _hdfs_native

    monkeypatch.delenv("HADOOP_CONF_DIR", raising=False)
    monkeypatch.delenv("HADOOP_HOME", raising=False)
    monkeypatch.setattr(_libhdfs, "libhdfs_unavailable", lambda: None)
    opened: list[str] = []

    def fake(name: str) -> Any:
        def open_driver(target: Any, redacted: str) -> Any:
            opened.append(name)
            return pafs.LocalFileSystem(), target.path, True

        return open_driver

    monkeypatch.setattr(_hdfs_native, "open_native", fake("native"))
    monkeypatch.setattr(_libhdfs, "open_libhdfs", fake("libhdfs"))
    _hdfs.open_hdfs("hdfs://nn:8020/x", "hdfs://nn:8020/x", driver=HdfsDriver.AUTO, user=None)
    _hdfs.open_hdfs("hdfs://nn:8020/x", "hdfs://nn:8020/x", driver=HdfsDriver.LIBHDFS, user=None)
    assert opened == ["native", "libhdfs"]
