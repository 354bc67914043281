"""Secrets never leave: for each secret (a URI password, a delegation token, an
Authorization header) and each URI shape, every output channel is searched for it:
exceptions (str and repr), repr of specs and handles, status(), status.json, log
records (caplog and an aiologship file sink), the CLI's output, and the requests a fake
WebHDFS NameNode and DataNode on loopback receive."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import pyarrow.fs as pafs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiologship import LogManager
from aiologship._config import HdfsDriver
from aiologship._copy import CopyEngine, CopySpec
from aiologship._exceptions import ConfigError, DestinationError
from aiologship._fs import normalize_destination, redact, resolve_destination
from aiologship._fs._hdfs import parse_target
from aiologship._fs._hdfs._webhdfs import RedirectRefused

pytestmark = pytest.mark.timeout(60)

PASSWORD = "Pw-s3cr3t#/?@:%ü"
TOKEN = "HAAEYWxpY2UEYWxpY2UAigGT0K3Nsecret"
DN_TOKEN = "DNt0kenOfTheDataNode"


# -- a fake WebHDFS cluster on loopback ------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeNode:
    """One HTTP server; ``seen`` records every request with its headers."""

    host: str
    server: ThreadingHTTPServer
    seen: list[Seen] = field(default_factory=list)

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.server.server_address[1]}"


class FakeWebHdfs:
    """A NameNode that redirects CREATE/APPEND/OPEN to ``redirect_to`` (a DataNode on
    another loopback address, by default), and answers every failed lookup with an
    error body that quotes the request: its query (with the delegation token) and its
    Authorization header, as proxies and some gateways do."""

    def __init__(self, namenode: FakeNode, datanode: FakeNode) -> None:
        self.namenode = namenode
        self.datanode = datanode
        self.files: dict[str, bytes] = {}
        self.redirect_scheme = "http"
        self.redirect_to = datanode

    def all_requests(self) -> str:
        return repr(self.namenode.seen) + repr(self.datanode.seen)


def _handler(node_ref: list[FakeNode], cluster_ref: list[FakeWebHdfs]) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: bytes = b"", location: str | None = None) -> None:
            self.send_response(status)
            if location:
                self.send_header("Location", location)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                out = b""
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        return out
                    out += self.rfile.read(size)
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            node, cluster = node_ref[0], cluster_ref[0]
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            body = self._body()
            node.seen.append(Seen(self.command, parts.path, query, dict(self.headers), body))
            path = parts.path.removeprefix("/webhdfs/v1") or "/"
            op = query.get("op", [""])[0]
            if node is cluster.namenode:
                self._namenode(cluster, op, path)
            else:
                self._datanode(cluster, op, path, body)

        def _namenode(self, cluster: FakeWebHdfs, op: str, path: str) -> None:
            if op == "GETFILESTATUS":
                if path == "/" or path in cluster.files or path.endswith("/base"):
                    kind = "FILE" if path in cluster.files else "DIRECTORY"
                    size = len(cluster.files.get(path, b""))
                    status = {"type": kind, "length": size, "modificationTime": 1}
                    self._answer(200, json.dumps({"FileStatus": status}).encode())
                else:
                    self._quote_request(404, "FileNotFoundException")
            elif op in ("CREATE", "APPEND", "OPEN"):
                target = cluster.redirect_to
                port = target.server.server_address[1]
                location = (
                    f"{cluster.redirect_scheme}://{target.host}:{port}/webhdfs/v1{path}"
                    f"?op={op}&namenoderpcaddress=nn&delegation={DN_TOKEN}"
                )
                for key in ("offset", "length"):
                    if key in self._query():
                        location += f"&{key}={self._query()[key][0]}"
                self._answer(307, location=location)
            elif op == "MKDIRS":
                self._answer(200, b'{"boolean": true}')
            else:
                self._quote_request(403, "AccessControlException")

        def _query(self) -> dict[str, list[str]]:
            return parse_qs(urlsplit(self.path).query)

        def _datanode(self, cluster: FakeWebHdfs, op: str, path: str, body: bytes) -> None:
            if op == "CREATE":
                cluster.files[path] = body
                self._answer(201)
            elif op == "APPEND":
                cluster.files[path] = cluster.files.get(path, b"") + body
                self._answer(200)
            elif op == "OPEN":
                query = self._query()
                data = cluster.files.get(path, b"")
                offset = int(query.get("offset", ["0"])[0])
                length = int(query.get("length", [str(len(data))])[0])
                self._answer(200, data[offset : offset + length])
            else:
                self._quote_request(400, "IllegalArgumentException")

        def _quote_request(self, status: int, exception: str) -> None:
            message = (
                f"{exception} for {self.command} {self.path}; "
                f"Authorization: {self.headers.get('Authorization', '')}"
            )
            body = {"RemoteException": {"exception": exception, "message": message}}
            self._answer(status, json.dumps(body).encode())

        do_GET = do_PUT = do_POST = do_DELETE = _handle

    return Handler


def _start(host: str, cluster_ref: list[FakeWebHdfs]) -> FakeNode:
    node_ref: list[FakeNode] = []
    server = ThreadingHTTPServer((host, 0), _handler(node_ref, cluster_ref))
    server.daemon_threads = True
    node = FakeNode(host, server)
    node_ref.append(node)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return node


@pytest.fixture
def webhdfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWebHdfs]:
    """The fake cluster, with HADOOP_CONF_DIR naming its NameNode (127.0.0.1) and the
    DataNode on 127.0.0.2: another origin."""
    ref: list[FakeWebHdfs] = []
    namenode = _start("127.0.0.1", ref)
    datanode = _start("127.0.0.2", ref)
    ref.append(FakeWebHdfs(namenode, datanode))
    conf = tmp_path / "hadoop-conf"
    conf.mkdir()
    (conf / "core-site.xml").write_text(
        "<configuration><property><name>fs.defaultFS</name>"
        "<value>hdfs://127.0.0.1:8020</value></property></configuration>"
    )
    (conf / "hdfs-site.xml").write_text(
        "<configuration><property><name>dfs.namenode.http-address</name>"
        f"<value>{namenode.address}</value></property></configuration>"
    )
    monkeypatch.setenv("HADOOP_CONF_DIR", str(conf))
    try:
        yield ref[0]
    finally:
        for node in (namenode, datanode):
            node.server.shutdown()
            node.server.server_close()


def _uri(password: str = PASSWORD, token: str | None = TOKEN, path: str = "/base") -> str:
    query = f"?delegation={token}" if token else ""
    return f"hdfs://alice:{quote(password, safe='')}@127.0.0.1:8020{path}{query}"


def _basic(password: str = PASSWORD) -> str:
    return base64.b64encode(f"alice:{password}".encode()).decode()


def _secrets(password: str = PASSWORD) -> list[str]:
    return [password, quote(password, safe=""), TOKEN, _basic(password), DN_TOKEN]


def _assert_clean(text: str, password: str = PASSWORD) -> None:
    for secret in _secrets(password):
        assert secret not in text, f"{secret!r} leaked into: {text[:2000]}"


# -- the webhdfs driver's redirects ------------------------------------------------------


def test_datanode_on_another_origin_never_sees_authorization(webhdfs: FakeWebHdfs) -> None:
    dest = resolve_destination(_uri(), hdfs_driver=HdfsDriver.WEBHDFS)
    with dest.filesystem.open_output_stream("/base/a.log") as out:
        out.write(b"hello ")
        out.write(b"world")
    with dest.filesystem.open_append_stream("/base/a.log") as out:
        out.write(b"!")
    with dest.filesystem.open_input_stream("/base/a.log") as f:
        assert f.read() == b"hello world!"
    assert webhdfs.files["/base/a.log"] == b"hello world!"
    # The NameNode the user named gets the credentials ...
    assert all(s.headers.get("Authorization") == f"Basic {_basic()}" for s in webhdfs.namenode.seen)
    # ... the DataNode (127.0.0.2) only the URL the NameNode gave, with its own token.
    assert {s.query["op"][0] for s in webhdfs.datanode.seen} == {"CREATE", "APPEND", "OPEN"}
    for seen in webhdfs.datanode.seen:
        assert "authorization" not in {k.lower() for k in seen.headers}
        assert seen.query["delegation"] == [DN_TOKEN]
        assert TOKEN not in repr(seen) and _basic() not in repr(seen)


def test_redirect_back_to_the_namenode_keeps_authorization(webhdfs: FakeWebHdfs) -> None:
    # A gateway (Apache Knox) redirects to itself and checks the credentials again.
    webhdfs.redirect_to = webhdfs.namenode
    dest = resolve_destination(_uri(), hdfs_driver=HdfsDriver.WEBHDFS)
    # The fake NameNode takes no data (the write fails); only the headers count here.
    with pytest.raises(OSError), dest.filesystem.open_output_stream("/base/a.log") as out:
        out.write(b"x")
    second = [s for s in webhdfs.namenode.seen if DN_TOKEN in repr(s.query)]
    assert second and second[0].headers.get("Authorization") == f"Basic {_basic()}"


@pytest.mark.parametrize("scheme", ["https", "ftp"])
def test_redirect_to_another_scheme_is_refused(webhdfs: FakeWebHdfs, scheme: str) -> None:
    webhdfs.redirect_scheme = scheme
    dest = resolve_destination(_uri(), hdfs_driver=HdfsDriver.WEBHDFS)
    for call in (
        lambda: dest.filesystem.open_output_stream("/base/a.log"),
        lambda: dest.filesystem.open_input_stream("/base/a.log").read(),
    ):
        webhdfs.files["/base/a.log"] = b"data"
        with pytest.raises(DestinationError, match=f"redirected to {scheme}://") as info:
            call()
        assert isinstance(info.value, RedirectRefused) and isinstance(info.value, OSError)
        _assert_clean(f"{info.value} {info.value!r}")
    assert webhdfs.datanode.seen == []


def test_error_body_quoting_the_request_is_scrubbed(webhdfs: FakeWebHdfs) -> None:
    dest = resolve_destination(_uri(), hdfs_driver=HdfsDriver.WEBHDFS)
    for call in (
        lambda: dest.filesystem.open_input_stream("/base/missing.log"),
        lambda: dest.filesystem.delete_file("/base"),
        lambda: dest.filesystem.move("/base/a", "/base/b"),
    ):
        with pytest.raises(OSError) as info:
            call()
        text = f"{info.value} {info.value!r} {info.value.__cause__!r} {info.value.__context__!r}"
        _assert_clean(text)
        assert "/base" in text
    # The fake server did quote them: the scrub is what kept them out.
    assert TOKEN in webhdfs.all_requests() and _basic() in webhdfs.all_requests()


# -- URIs with hostile passwords --------------------------------------------------------

URI_SHAPES = [
    "hdfs://alice:{pw}@127.0.0.1:1/logs",
    "hdfs://alice:{pw}@namenode/x",
    "viewfs://alice:{pw}@cluster/x",
    "hdfs://alice:{pw}@127.0.0.1:1/logs?delegation=TOKEN42",
    "s3://KEY:{pw}@bucket/x",
    "file://alice:{pw}@localhost/x",
    "ftp://bob:{pw}@host/x",
]
HOSTILE = st.text(
    alphabet=st.sampled_from("#?/@:%" + "abcXYZ019" + "äßü€日本" + "\u2100\ufe6b"), min_size=1
).map(lambda s: "Zq7" + s)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=HOSTILE, shape=st.sampled_from(URI_SHAPES), encode=st.booleans())
def test_password_never_shown_and_never_misparsed(password: str, shape: str, encode: bool) -> None:
    raw = quote(password, safe="") if encode else password
    uri = shape.format(pw=raw)
    assert password not in redact(uri) and raw not in redact(uri)
    assert unquote(raw) not in redact(uri)
    try:
        text = normalize_destination(uri)
    except ConfigError as exc:
        shown = f"{exc} {exc!r} {exc.value!r} {exc.reason}"
        assert password not in shown and raw not in shown
        return
    spec = CopySpec.from_params(copy_name="c", path_patterns=["/x/*.log"], hdfs_destination=text)
    for shown in (repr(spec), spec.destination_redacted, str(spec.differences(spec))):
        assert password not in shown and raw not in shown
    if uri.startswith(("hdfs", "viewfs")):
        # Accepted means parsed as written: the password is the password, never a host.
        # (A raw '%' followed by two hex digits is an escape by URI rules: the
        # password is then its decoded form, as in every URI client.)
        target = parse_target(text, redact(text))
        assert target.password == (password if encode else unquote(password))
        assert target.user == "alice"


# -- every output channel, end to end ---------------------------------------------------


def _channels_of_engine(engine: CopyEngine, state_dir: Path) -> str:
    status = engine.status()
    files = [p.read_text(errors="replace") for p in state_dir.rglob("*") if p.is_file()]
    return " ".join([repr(status), str(status), repr(engine.spec), *files])


async def test_engine_status_state_and_logs_hold_no_secret(
    webhdfs: FakeWebHdfs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.log").write_text("line\n")
    # The NameNode refuses every write, quoting the request: a failing destination.
    webhdfs.namenode.seen.clear()
    spec = CopySpec.from_params(
        copy_name="creds",
        path_patterns=[str(src / "*.log")],
        hdfs_destination=_uri(path="/elsewhere"),
        copy_interval=None,
    )
    state_dir = tmp_path / "state"
    engine = CopyEngine(spec, state_dir=state_dir, hdfs_driver=HdfsDriver.WEBHDFS)
    await engine.open()
    await engine.flush()
    await engine.stop(final_cycle=False)
    status = engine.status()
    assert status.last_error, "the fake NameNode should have made the cycle fail"
    assert "status.json" in {p.name for p in state_dir.rglob("*")}
    logs = " ".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    assert "destination failing" in logs and "AccessControlException" in status.last_error
    _assert_clean(_channels_of_engine(engine, state_dir) + logs)
    assert TOKEN in webhdfs.all_requests()  # the secrets were really in play


def test_manager_status_logs_and_file_sink_hold_no_secret(
    webhdfs: FakeWebHdfs, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.log").write_text("line\n")
    sink_path = tmp_path / "aiologship.log"
    # State goes to AIOLOGSHIP_STATE_DIR, under tmp_path (the conftest sets it).
    with LogManager(hdfs_driver="webhdfs") as lm:
        root = lm.get_logger("aiologship")
        root.add(str(sink_path))
        op = lm.start_hdfs_copy(
            copy_name="creds-mgr",
            path_patterns=[str(src / "*.log")],
            hdfs_destination=_uri(path="/elsewhere"),
            copy_interval=None,
        )
        op.flush()
        listed = lm.list_hdfs_copy_operations()
        text = " ".join([repr(op), repr(op.status()), repr(listed), str(listed)])
    status_files = [p.read_text() for p in tmp_path.rglob("status.json")]
    assert status_files
    logs = " ".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    _assert_clean(text + " ".join(status_files) + logs + sink_path.read_text())
    assert "AccessControlException" in status_files[0]
    assert "destination failing" in sink_path.read_text()  # the sink saw the failure


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiologship.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    "destination",
    [
        _uri(path="/elsewhere"),  # reaches the fake NameNode, which fails it
        "hdfs://alice:" + PASSWORD + "@127.0.0.1:8020/x",  # refused: ambiguous
        "hdfs://alice:9876/5@127.0.0.1:1/logs",  # refused: ambiguous
    ],
)
def test_cli_copy_and_status_hold_no_secret(
    webhdfs: FakeWebHdfs, tmp_path: Path, destination: str
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.log").write_text("line\n")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    state = str(tmp_path / "state")
    copy = _cli(
        "copy",
        str(src / "*.log"),
        "--to",
        destination,
        "--once",
        "--state-dir",
        state,
        "--hdfs-driver",
        "webhdfs",
        "-vv",
        env=env,
    )
    status = _cli("status", "--state-dir", state, env=env)
    assert copy.returncode != 0
    out = copy.stdout + copy.stderr + status.stdout + status.stderr
    _assert_clean(out)
    assert "9876/5@" not in out
    assert "alice" in out


def test_pyarrow_filesystem_error_is_scrubbed(tmp_path: Path) -> None:
    # A pyarrow error for an s3:// URI quotes the raw URI; the secret must not survive.
    with pytest.raises(DestinationError) as info:
        resolve_destination(f"s3://KEY:{quote(PASSWORD, safe='')}@bucket/x?bogus=1")
    _assert_clean(f"{info.value} {info.value!r}")
    assert isinstance(pafs.LocalFileSystem(), pafs.FileSystem)


def test_copy_spec_repr_is_redacted() -> None:
    # Error trackers capture locals with repr().
    spec = CopySpec.from_params(
        copy_name="c", path_patterns=["/x/*.log"], hdfs_destination="hdfs://alice:hunter22@nn/x"
    )
    assert "hunter22" not in repr(spec)
    assert "hdfs://alice:***@nn/x" in repr(spec)
    assert spec.hdfs_destination == "hdfs://alice:hunter22@nn/x"  # the value itself is kept
