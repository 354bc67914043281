"""The ``webhdfs`` hdfs:// driver: the WebHDFS REST API as a ``pyarrow.fs`` handler.

HTTP to the NameNode's web port (``dfs.namenode.http-address``; each NameNode of an HA
name service is tried in turn), through the standard library's ``http.client``:

- every request has a timeout (connect and read), every ``{"boolean": ...}`` answer is
  checked (a ``false`` RENAME/MKDIRS/DELETE is an error, not a silent no-op);
- data goes in two steps, as the protocol wants: the NameNode answers CREATE/APPEND/OPEN
  with a 307 to a DataNode, which gets the bytes (streamed, chunked, for writes);
- the user goes as ``user.name``; a delegation token (``?delegation=`` in the URI) as
  ``delegation``; ``user:password@`` as HTTP basic auth (gateways such as Knox).
  None of these ever appears in an error message: errors name the operation and path.
"""

from __future__ import annotations

import base64
import getpass
import http.client
import io
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pyarrow
import pyarrow.fs as pafs

from .._exceptions import DestinationError
from ._hdfs import DEFAULT_HTTP_PORT, HdfsTarget, namenode_addresses, nameservices

logger = logging.getLogger("aiologship.hdfs")

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
CHUNK = 1 << 20
_PREFIX = "/webhdfs/v1"

_EXCEPTIONS: dict[str, type[OSError]] = {
    "FileNotFoundException": FileNotFoundError,
    "AccessControlException": PermissionError,
    "FileAlreadyExistsException": FileExistsError,
    "AlreadyBeingCreatedException": FileExistsError,
    "PathIsNotEmptyDirectoryException": OSError,
}


def open_webhdfs(target: HdfsTarget, redacted: str) -> tuple[pafs.FileSystem, str, bool]:
    addresses = http_addresses(target)
    if not addresses:
        raise DestinationError(
            redacted,
            "no NameNode address: the URI names no host and HADOOP_CONF_DIR has no fs.defaultFS",
        )
    handler = WebHdfsHandler(target, addresses)
    filesystem = pafs.PyFileSystem(handler)
    try:
        filesystem.get_file_info("/")
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationError(redacted, f"cannot reach the NameNode web port: {exc}") from None
    return filesystem, target.path, True


def http_addresses(target: HdfsTarget) -> list[str]:
    """``host:port`` of the NameNode web endpoints for ``target``."""
    conf = target.conf
    if target.host and target.port is None and target.host in nameservices(conf):
        return namenode_addresses(conf, target.host, "http")
    configured = conf.get("dfs.namenode.http-address")
    if configured and (target.host is None or _same_namenode(target, conf)):
        host, _, port = configured.rpartition(":")
        if host in ("0.0.0.0", "") and target.host:
            host = target.host
        return [f"{host}:{port}"]
    if target.host is None:
        return []
    return [f"{target.host}:{DEFAULT_HTTP_PORT}"]


def _same_namenode(target: HdfsTarget, conf: dict[str, str]) -> bool:
    """Whether the URI names the NameNode the configuration describes (its web address
    then comes from the same configuration)."""
    rpc = conf.get("dfs.namenode.rpc-address")
    if not rpc:
        default = urlsplit(conf.get("fs.defaultFS", ""))
        rpc = default.netloc
    host, _, port = rpc.rpartition(":")
    if host != target.host:
        return False
    return target.port is None or str(target.port) == port


class _Failed(OSError):
    """A request that reached no NameNode (connection refused, timeout)."""


class WebHdfsHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """``pyarrow.fs.FileSystemHandler`` over WebHDFS."""

    def __init__(self, target: HdfsTarget, addresses: list[str]) -> None:
        self.target = target
        self.addresses = addresses
        self._active = 0
        self._lock = threading.Lock()
        # Without user.name the NameNode acts as "dr.who"; the Java client sends the
        # OS user, and so do we.
        self._user = target.user or getpass.getuser()
        self._headers: dict[str, str] = {}
        if target.password is not None and target.user:
            pair = f"{target.user}:{target.password}".encode()
            self._headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WebHdfsHandler) and other.target == self.target

    def __hash__(self) -> int:
        return hash((tuple(self.addresses), self.target.user))

    def get_type_name(self) -> str:
        return "webhdfs"

    def normalize_path(self, path: str) -> str:
        return path

    # -- HTTP ------------------------------------------------------------------------------
    def _params(self, op: str, **extra: Any) -> str:
        params: dict[str, Any] = {"op": op}
        if self.target.token:
            params["delegation"] = self.target.token
            # A secure NameNode takes the user from the token (a different user.name is
            # refused); one without security ignores the token, so name an explicit user.
            if self.target.user:
                params["user.name"] = self.target.user
        else:
            params["user.name"] = self._user
        params.update({k: v for k, v in extra.items() if v is not None})
        return urlencode(params)

    def _send(
        self,
        method: str,
        hostport: str,
        url: str,
        body: bytes | None = None,
        timeout: float = READ_TIMEOUT,
    ) -> _Answer:
        """One HTTP exchange, read to the end; the connection is always closed."""
        host, _, port = hostport.rpartition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            conn.request(method, url, body=body, headers=self._headers)
            response = conn.getresponse()
            return _Answer(response.status, response.getheader("Location"), response.read())
        except (OSError, http.client.HTTPException) as exc:
            raise _Failed(f"{hostport}: {type(exc).__name__}: {exc}") from None
        finally:
            conn.close()

    def _namenode(self, method: str, op: str, path: str, **extra: Any) -> tuple[_Answer, str]:
        """One request to the NameNode (trying each of an HA pair); returns the response
        and the address that answered."""
        url = f"{_PREFIX}{quote(path)}?{self._params(op, **extra)}"
        errors = []
        n = len(self.addresses)
        for i in range(n):
            index = (self._active + i) % n
            address = self.addresses[index]
            try:
                response = self._send(method, address, url)
            except _Failed as exc:
                errors.append(str(exc))
                continue
            if response.status == 403 and b"StandbyException" in response.body:
                errors.append(f"{address}: standby")
                continue
            self._active = index
            return response, address
        raise OSError(f"webhdfs {op} {path}: no NameNode answered ({'; '.join(errors)})")

    def _check(self, response: _Answer, op: str, path: str, expect: tuple[int, ...]) -> bytes:
        if response.status in expect:
            return response.body
        raise _error(op, path, response.status, response.body)

    def _json(self, method: str, op: str, path: str, **extra: Any) -> Any:
        response, _ = self._namenode(method, op, path, **extra)
        body = self._check(response, op, path, (200,))
        try:
            return json.loads(body)
        except ValueError:
            raise OSError(f"webhdfs {op} {path}: answer is not JSON") from None

    def _boolean(self, method: str, op: str, path: str, **extra: Any) -> bool:
        answer = self._json(method, op, path, **extra)
        value = answer.get("boolean") if isinstance(answer, dict) else None
        if not isinstance(value, bool):
            raise OSError(f"webhdfs {op} {path}: unexpected answer {answer!r}")
        return value

    def _redirect(self, method: str, op: str, path: str, **extra: Any) -> str:
        """First step of CREATE/APPEND/OPEN: the DataNode URL the NameNode names."""
        response, _ = self._namenode(method, op, path, **extra)
        if response.status != 307:
            self._check(response, op, path, ())
        location = response.location
        if not location:
            raise OSError(f"webhdfs {op} {path}: redirect without a Location")
        return location

    # -- metadata ------------------------------------------------------------------------
    def _status(self, path: str) -> dict[str, Any] | None:
        response, _ = self._namenode("GET", "GETFILESTATUS", path)
        if response.status == 404:
            return None
        body = self._check(response, "GETFILESTATUS", path, (200,))
        status = json.loads(body).get("FileStatus")
        if not isinstance(status, dict):
            raise OSError(f"webhdfs GETFILESTATUS {path}: unexpected answer")
        return status

    @staticmethod
    def _info(path: str, status: dict[str, Any]) -> pafs.FileInfo:
        is_dir = status.get("type") == "DIRECTORY"
        return pafs.FileInfo(
            path,
            pafs.FileType.Directory if is_dir else pafs.FileType.File,
            size=None if is_dir else int(status.get("length", 0)),
            mtime_ns=int(status.get("modificationTime", 0)) * 1_000_000,
        )

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        infos = []
        for path in paths:
            status = self._status(path)
            if status is None:
                infos.append(pafs.FileInfo(path, pafs.FileType.NotFound))
            else:
                infos.append(self._info(path, status))
        return infos

    def _list(self, path: str) -> list[dict[str, Any]]:
        answer = self._json("GET", "LISTSTATUS", path)
        try:
            statuses = answer["FileStatuses"]["FileStatus"]
        except (KeyError, TypeError):
            raise OSError(f"webhdfs LISTSTATUS {path}: unexpected answer") from None
        return list(statuses)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.rstrip("/") or "/"
        try:
            statuses = self._list(base)
        except FileNotFoundError:
            if selector.allow_not_found:
                return []
            raise
        out = []
        for status in statuses:
            suffix = status.get("pathSuffix", "")
            child = f"{base.rstrip('/')}/{suffix}" if suffix else base
            info = self._info(child, status)
            out.append(info)
            if selector.recursive and info.type == pafs.FileType.Directory:
                sub = pafs.FileSelector(child, allow_not_found=True, recursive=True)
                out.extend(self.get_file_info_selector(sub))
        return out

    # -- directories ------------------------------------------------------------------------
    def create_dir(self, path: str, recursive: bool) -> None:
        if not recursive:
            parent = path.rstrip("/").rpartition("/")[0] or "/"
            if self._status(parent) is None:
                raise FileNotFoundError(2, f"webhdfs MKDIRS {path}: parent does not exist")
        if not self._boolean("PUT", "MKDIRS", path, permission="755"):
            raise OSError(f"webhdfs MKDIRS {path}: the NameNode refused (a file there?)")

    def delete_dir(self, path: str) -> None:
        self._delete(path, want_dir=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        try:
            children = self._list(path)
        except FileNotFoundError:
            if missing_dir_ok:
                return
            raise
        for child in children:
            suffix = child.get("pathSuffix", "")
            self._delete(f"{path.rstrip('/')}/{suffix}", want_dir=None)

    def delete_root_dir_contents(self) -> None:
        self.delete_dir_contents("/")

    def delete_file(self, path: str) -> None:
        self._delete(path, want_dir=False)

    def _delete(self, path: str, *, want_dir: bool | None) -> None:
        status = self._status(path)
        if status is None:
            raise FileNotFoundError(2, f"webhdfs DELETE {path}: no such file or directory")
        is_dir = status.get("type") == "DIRECTORY"
        if want_dir is not None and is_dir != want_dir:
            raise OSError(f"webhdfs DELETE {path}: is {'a directory' if is_dir else 'a file'}")
        if not self._boolean("DELETE", "DELETE", path, recursive="true" if is_dir else "false"):
            raise OSError(f"webhdfs DELETE {path}: the NameNode deleted nothing")

    def move(self, src: str, dest: str) -> None:
        if self._boolean("PUT", "RENAME", src, destination=dest):
            return
        # WebHDFS RENAME never overwrites; pyarrow's move replaces a file at ``dest``.
        # Delete then rename: a reader may briefly see no file, never a partial one.
        target = self._status(dest)
        if self._status(src) is None:
            raise FileNotFoundError(2, f"webhdfs RENAME {src} -> {dest}: source missing")
        if target is None or target.get("type") == "DIRECTORY":
            raise OSError(f"webhdfs RENAME {src} -> {dest}: the NameNode refused")
        self._delete(dest, want_dir=False)
        if not self._boolean("PUT", "RENAME", src, destination=dest):
            raise OSError(f"webhdfs RENAME {src} -> {dest}: the NameNode refused")

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as source, self.open_output_stream(dest, None) as out:
            while chunk := source.read(CHUNK):
                out.write(chunk)

    # -- streams --------------------------------------------------------------------------
    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_Reader(self, path), mode="r")

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return pyarrow.PythonFile(_Reader(self, path), mode="r")

    def open_output_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        location = self._redirect("PUT", "CREATE", path, overwrite="true")
        return pyarrow.PythonFile(_Upload(location, "PUT", "CREATE", path, 201), mode="w")

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        if self._status(path) is None:
            return self.open_output_stream(path, metadata)
        location = self._redirect("POST", "APPEND", path)
        return pyarrow.PythonFile(_Upload(location, "POST", "APPEND", path, 200), mode="w")


@dataclass(frozen=True, slots=True)
class _Answer:
    status: int
    location: str | None
    body: bytes


def _error(op: str, path: str, status: int, body: bytes) -> OSError:
    """A WebHDFS RemoteException -> the matching OSError, naming op and path only."""
    exception, message = "", ""
    try:
        remote = json.loads(body).get("RemoteException", {})
        exception = str(remote.get("exception", ""))
        message = str(remote.get("message", ""))
    except (ValueError, AttributeError):
        message = body[:200].decode("utf-8", "replace")
    kind = _EXCEPTIONS.get(exception)
    if kind is None:
        # 403 also carries SafeModeException, StandbyException...: not a permission
        # problem, so only AccessControlException (above) becomes PermissionError.
        kind = {404: FileNotFoundError}.get(status, OSError)
    text = f"webhdfs {op} {path}: HTTP {status} {exception}: {message}".rstrip(": ")
    errno = {FileNotFoundError: 2, PermissionError: 13, FileExistsError: 17}.get(kind)
    return kind(errno, text) if errno else kind(text)


def _split(location: str) -> tuple[str, str]:
    parts = urlsplit(location)
    if parts.scheme != "http" or not parts.hostname:
        raise OSError("webhdfs: unsupported redirect (only http:// DataNodes)")
    return f"{parts.hostname}:{parts.port or 80}", parts.path + (
        f"?{parts.query}" if parts.query else ""
    )


class _Upload:
    """Second step of CREATE/APPEND: stream the bytes to the DataNode, chunked, and check
    its answer on close. Nothing is committed if the DataNode does not confirm."""

    def __init__(self, location: str, method: str, op: str, path: str, ok: int) -> None:
        self._op, self._path, self._ok = op, path, ok
        hostport, url = _split(location)
        host, _, port = hostport.rpartition(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=CONNECT_TIMEOUT)
        self.closed = False
        try:
            self._conn.connect()
            assert self._conn.sock is not None
            self._conn.sock.settimeout(READ_TIMEOUT)
            self._conn.putrequest(method, url)
            self._conn.putheader("Content-Type", "application/octet-stream")
            self._conn.putheader("Transfer-Encoding", "chunked")
            self._conn.endheaders()
        except (OSError, http.client.HTTPException) as exc:
            self._conn.close()
            raise OSError(f"webhdfs {op} {path}: cannot reach the DataNode: {exc}") from None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        if not len(view):
            return 0
        try:
            self._conn.send(f"{len(view):x}\r\n".encode())
            self._conn.send(view)
            self._conn.send(b"\r\n")
        except OSError as exc:
            self.closed = True
            self._conn.close()
            raise OSError(f"webhdfs {self._op} {self._path}: write failed: {exc}") from None
        return len(view)

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._conn.send(b"0\r\n\r\n")
            response = self._conn.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise OSError(
                f"webhdfs {self._op} {self._path}: no answer from the DataNode: {exc}"
            ) from None
        finally:
            self._conn.close()
        if response.status != self._ok:
            raise _error(self._op, self._path, response.status, body)


class _Reader(io.RawIOBase):
    """OPEN as a seekable reader: each read is one ranged GET (offset, length)."""

    def __init__(self, handler: WebHdfsHandler, path: str) -> None:
        super().__init__()
        self._handler = handler
        self._path = path
        status = handler._status(path)
        if status is None:
            raise FileNotFoundError(2, f"webhdfs OPEN {path}: no such file")
        if status.get("type") == "DIRECTORY":
            raise IsADirectoryError(21, f"webhdfs OPEN {path}: is a directory")
        self._size = int(status.get("length", 0))
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def size(self) -> int:
        return self._size

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        size = min(size, self._size - self._pos)
        if size <= 0:
            return b""
        location = self._handler._redirect("GET", "OPEN", self._path, offset=self._pos, length=size)
        hostport, url = _split(location)
        try:
            response = self._handler._send("GET", hostport, url)
        except _Failed as exc:
            raise OSError(f"webhdfs OPEN {self._path}: cannot reach the DataNode: {exc}") from None
        data = self._handler._check(response, "OPEN", self._path, (200,))
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
