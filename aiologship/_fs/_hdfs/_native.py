"""The ``native`` hdfs:// driver: hdfs-native (Rust, no JVM) as a ``pyarrow.fs`` handler.

The copy engine makes only ``pyarrow.fs`` calls; :class:`NativeHandler` turns each into
an hdfs-native call, so ``pyarrow.fs.PyFileSystem(NativeHandler(...))`` is an ordinary
pyarrow filesystem. Every call blocks: the engine runs them in worker threads.

One hdfs-native client per process and target, created on first use; the cache is keyed
on the pid, so a forked child (Ray workers, multiprocessing) builds its own client
instead of inheriting a tokio runtime whose threads did not survive the fork.

hdfs-native retries a NameNode it cannot reach ``dfs.client.failover.max.attempts``
times (default 15, sleeping up to 15 s each: about 3 minutes). Unless the Hadoop
configuration says otherwise, we bound that to a few attempts within about a second, so
a dead NameNode fails fast and the engine's retry policy decides what happens next.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
from typing import Any

import pyarrow
import pyarrow.fs as pafs

from ..._exceptions import DestinationError
from .._redact import scrub
from ._target import ENV_USER, HdfsTarget

# Bounded failover (see the module docstring); a user's Hadoop configuration wins.
FAST_FAIL_CONF = {
    "dfs.client.failover.max.attempts": "3",
    "dfs.client.failover.sleep.base.millis": "100",
    "dfs.client.failover.sleep.max.millis": "500",
}

_clients: dict[tuple[Any, ...], Any] = {}
_clients_lock = threading.Lock()
_env_lock = threading.Lock()


def open_native(target: HdfsTarget, redacted: str) -> tuple[pafs.FileSystem, str, bool]:
    try:
        import hdfs_native  # noqa: F401
    except ImportError as exc:
        raise DestinationError(redacted, f"the native driver needs hdfs-native: {exc}") from None
    if target.token is not None:
        raise DestinationError(
            redacted,
            "the native driver reads delegation tokens from HADOOP_TOKEN_FILE_LOCATION, "
            "not from the URI; use that, or hdfs_driver='webhdfs'",
        )
    _apply_user(target.user, redacted)
    handler = NativeHandler(target, redacted)
    filesystem = pafs.PyFileSystem(handler)
    # Connect now so a bad address or a dead NameNode is reported by resolve, not later.
    try:
        filesystem.get_file_info("/")
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationError(redacted, f"cannot reach the NameNode: {exc}") from None
    return filesystem, target.path, True


def _apply_user(user: str | None, redacted: str) -> None:
    """hdfs-native takes the user from HADOOP_USER_NAME when it connects."""
    if user is None:
        return
    with _env_lock:
        current = os.environ.get(ENV_USER)
        if current is None:
            os.environ[ENV_USER] = user
        elif current != user:
            raise DestinationError(
                redacted,
                f"the native driver acts as one HDFS user per process: {ENV_USER}="
                f"{current!r} is set, user {user!r} was requested (use hdfs_driver='webhdfs' "
                "for several users in one process)",
            )


def client_config(target: HdfsTarget) -> dict[str, str]:
    config = {k: v for k, v in FAST_FAIL_CONF.items() if k not in target.conf}
    return config


def get_client(target: HdfsTarget, user: str | None) -> Any:
    """The process's client for ``target`` (created lazily; re-created after fork)."""
    import hdfs_native

    url = f"{target.scheme}://{target.authority}" if target.host else None
    kerberos_cache = os.environ.get("KRB5CCNAME") or None
    key = (os.getpid(), url, target.conf_dir, kerberos_cache, user)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            kwargs: dict[str, Any] = {}
            if kerberos_cache:
                # hdfs-native wants the cache path; KRB5CCNAME may say FILE:/path.
                kwargs["kerberos_cache"] = kerberos_cache.removeprefix("FILE:")
            client = hdfs_native.Client(
                url, config=client_config(target), config_dir=target.conf_dir, **kwargs
            )
            # Clients of a parent process stay referenced (never dropped in the child):
            # dropping one would touch a runtime whose threads died in the fork.
            _clients[key] = client
        return client


def _wrap(op: str, path: str, exc: BaseException) -> OSError:
    """hdfs-native errors -> OSError subclasses naming the operation and the path (the
    engine catches OSError; the type says not-found / permission / exists).

    A Rust panic inside hdfs-native reaches Python as pyo3's ``PanicException``,
    a ``BaseException`` (for example "Cannot seek beyond the end of a file" when a
    file still under construction after a killed writer is shorter to readers
    than its status says): callers catch ``BaseException`` so it becomes an error
    of one file instead of ending the process; interpreter exits pass through.
    """
    if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
        raise exc
    text = scrub(_short(str(exc) or type(exc).__name__))
    message = f"hdfs {op} {path}: {text}"
    if isinstance(exc, FileNotFoundError) or "FileNotFoundException" in text:
        return FileNotFoundError(2, message)
    if isinstance(exc, PermissionError) or "AccessControlException" in text:
        return PermissionError(13, message)
    if isinstance(exc, FileExistsError) or "AlreadyExists" in text:
        return FileExistsError(17, message)
    if isinstance(exc, IsADirectoryError):
        return IsADirectoryError(21, message)
    return OSError(message)


_RPC_ERROR = re.compile(r'^RPCError\("(?P<cls>[\w.$]+)", "(?P<msg>.*)$', re.S)


def _short(text: str) -> str:
    """First line of a NameNode error, without the Java stack trace hdfs-native quotes."""
    match = _RPC_ERROR.match(text)
    if match:
        text = f"{match['cls'].rsplit('.', 1)[-1]}: {match['msg']}"
    for cut in ("\\n\\tat ", "\n\tat ", "\\n", "\n"):
        text = text.split(cut, 1)[0]
    if match:
        text = text.removesuffix('")').replace('\\"', '"')
    return text


class NativeHandler(pafs.FileSystemHandler):  # type: ignore[misc]
    """``pyarrow.fs.FileSystemHandler`` over an hdfs-native client."""

    def __init__(self, target: HdfsTarget, redacted: str) -> None:
        self.target = target
        self.redacted = redacted
        # hdfs-native connects as HADOOP_USER_NAME as it is when the client is made.
        self.user = target.user or os.environ.get(ENV_USER)

    @property
    def client(self) -> Any:
        return get_client(self.target, self.user)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NativeHandler) and other.target == self.target

    def __hash__(self) -> int:
        return hash((self.target.authority, self.target.user))

    def get_type_name(self) -> str:
        return "hdfs-native"

    def normalize_path(self, path: str) -> str:
        return path

    # -- metadata ----------------------------------------------------------------------
    def _info(self, path: str, status: Any) -> pafs.FileInfo:
        kind = pafs.FileType.Directory if status.isdir else pafs.FileType.File
        return pafs.FileInfo(
            path,
            kind,
            size=None if status.isdir else int(status.length),
            mtime_ns=int(status.modification_time) * 1_000_000,
        )

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        infos = []
        for path in paths:
            try:
                status = self.client.get_file_info(path)
            except FileNotFoundError:
                infos.append(pafs.FileInfo(path, pafs.FileType.NotFound))
                continue
            except BaseException as exc:  # hdfs-native panics are BaseExceptions
                raise _wrap("stat", path, exc) from exc
            infos.append(self._info(path, status))
        return infos

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir.rstrip("/") or "/"
        try:
            statuses = list(self.client.list_status(base, selector.recursive))
        except FileNotFoundError as exc:
            if selector.allow_not_found:
                return []
            raise _wrap("list", base, exc) from exc
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("list", base, exc) from exc
        out = []
        for status in statuses:
            path = status.path
            if not path.startswith("/"):
                path = f"{base.rstrip('/')}/{path}"
            out.append(self._info(path, status))
        return out

    # -- directories -------------------------------------------------------------------
    def create_dir(self, path: str, recursive: bool) -> None:
        try:
            self.client.mkdirs(path, 0o755, recursive)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("mkdir", path, exc) from exc

    def delete_dir(self, path: str) -> None:
        self._delete(path, recursive=True, want_dir=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        try:
            children = list(self.client.list_status(path, False))
        except FileNotFoundError as exc:
            if missing_dir_ok:
                return
            raise _wrap("list", path, exc) from exc
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("list", path, exc) from exc
        for child in children:
            self._delete(child.path, recursive=True, want_dir=None)

    def delete_root_dir_contents(self) -> None:
        self.delete_dir_contents("/", missing_dir_ok=False)

    def delete_file(self, path: str) -> None:
        self._delete(path, recursive=False, want_dir=False)

    def _delete(self, path: str, *, recursive: bool, want_dir: bool | None) -> None:
        try:
            status = self.client.get_file_info(path)
            if want_dir is not None and bool(status.isdir) != want_dir:
                kind = "a directory" if status.isdir else "a file"
                raise OSError(f"hdfs delete {path}: is {kind}")
            deleted = self.client.delete(path, recursive)
        except OSError as exc:
            if str(exc).startswith("hdfs "):
                raise
            raise _wrap("delete", path, exc) from exc
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("delete", path, exc) from exc
        if not deleted:
            raise FileNotFoundError(2, f"hdfs delete {path}: the NameNode deleted nothing")

    def move(self, src: str, dest: str) -> None:
        # pyarrow's move replaces an existing file at ``dest``; HDFS rename2 with
        # OVERWRITE does that atomically.
        try:
            self.client.rename(src, dest, True)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("rename", f"{src} -> {dest}", exc) from exc

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as source, self.open_output_stream(dest, None) as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)

    # -- streams -----------------------------------------------------------------------
    def _reader(self, path: str) -> pyarrow.NativeFile:
        try:
            reader = self.client.read(path)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("open", path, exc) from exc
        return pyarrow.PythonFile(_Reader(reader, path), mode="r")

    def open_input_stream(self, path: str) -> pyarrow.NativeFile:
        return self._reader(path)

    def open_input_file(self, path: str) -> pyarrow.NativeFile:
        return self._reader(path)

    def open_output_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        import hdfs_native

        try:
            options = hdfs_native.WriteOptions(overwrite=True, create_parent=True)
            writer = self.client.create(path, options)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("create", path, exc) from exc
        return _stream(writer, path)

    def open_append_stream(self, path: str, metadata: Any) -> pyarrow.NativeFile:
        try:
            writer = self.client.append(path)
        except FileNotFoundError:
            return self.open_output_stream(path, metadata)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("append", path, exc) from exc
        return _stream(writer, path)


class _Reader:
    """hdfs-native's reader with its errors (panics included) named by path."""

    def __init__(self, inner: Any, path: str) -> None:
        self._inner = inner
        self._path = path
        self.closed = False

    def _call(self, op: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap(op, self._path, exc) from exc

    def read(self, size: int = -1) -> bytes:
        return bytes(self._call("read", self._inner.read, size))

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        self._call("seek", self._inner.seek, offset, whence)
        return self.tell()

    def tell(self) -> int:
        return int(self._call("tell", self._inner.tell))

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


def _stream(writer: Any, path: str) -> pyarrow.NativeFile:
    """``writer`` as a pyarrow output stream; closed (releasing its lease) if wrapping fails."""
    wrapped = _Writer(writer, path)
    try:
        return pyarrow.PythonFile(wrapped, mode="w")
    except BaseException:
        with contextlib.suppress(OSError):
            wrapped.close()
        raise


class _Writer:
    """hdfs-native's writer with its errors named by path (pyarrow.PythonFile wraps it)."""

    def __init__(self, inner: Any, path: str) -> None:
        self._inner = inner
        self._path = path
        self.closed = False

    def write(self, data: Any) -> int:
        # pyarrow hands us a pyarrow.Buffer. hdfs-native takes bytes fastest: measured on
        # 16 MiB, a Buffer is ~30x and a memoryview ~5x slower to write than bytes, and
        # one copy to bytes costs far less than either.
        chunk = data if isinstance(data, bytes) else bytes(memoryview(data).cast("B"))
        try:
            return int(self._inner.write(chunk))
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("write", self._path, exc) from exc

    def flush(self) -> None:
        pass

    def writable(self) -> bool:
        return True

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._inner.close()
        except BaseException as exc:  # hdfs-native panics are BaseExceptions
            raise _wrap("close", self._path, exc) from exc
        finally:
            # hdfs_native.FileWriter is an io.RawIOBase whose close() never marks it
            # closed, so its finalizer closes it once more when it is collected; after a
            # failed write or close that second close raises inside the garbage
            # collector (reported as an unraisable exception since Python 3.13). One
            # close is all a writer gets, whatever its outcome.
            if isinstance(self._inner, io.IOBase):
                io.IOBase.close(self._inner)
