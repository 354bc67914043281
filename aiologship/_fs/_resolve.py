"""Destination URIs -> a ``pyarrow.fs.FileSystem`` and a base path."""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, unquote, urlsplit

from .._config import HdfsDriver
from .._exceptions import ConfigError, DestinationError
from . import _hdfs
from ._redact import ambiguous_userinfo, redact, scrub

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DESTINATION_KEY = "hdfs_destination"

_LOCAL_SCHEMES = frozenset({"file", "local"})
_HDFS_SCHEMES = frozenset({"hdfs", "viewfs"})
# Schemes pyarrow.fs.FileSystem.from_uri resolves itself (object stores, the
# in-memory mock filesystem used by tests of other layers).
_PYARROW_SCHEMES = frozenset({"s3", "gs", "gcs", "abfs", "abfss", "mock"})
SUPPORTED_SCHEMES = _LOCAL_SCHEMES | _HDFS_SCHEMES | _PYARROW_SCHEMES
# Filesystems whose open_append_stream appends in place (object stores cannot).
_APPENDABLE_TYPES = frozenset({"local", "mock", "hdfs"})


@dataclass(frozen=True, slots=True)
class Destination:
    """A resolved destination. ``filesystem`` blocks: call it in a worker thread."""

    filesystem: pafs.FileSystem
    base_path: str
    uri: str  # redacted
    can_append: bool

    def path_of(self, relative: str) -> str:
        """The filesystem path of ``relative`` (a ``/``-separated path) under the base."""
        if not self.base_path:
            return relative
        return posixpath.join(self.base_path, relative)


def normalize_destination(uri: Any) -> str:
    """Check the syntax of a destination and return its canonical form: plain
    paths become absolute. Raises ``ConfigError`` naming ``hdfs_destination``.
    Does not touch the filesystem (safe on the event loop)."""
    if isinstance(uri, os.PathLike):
        uri = os.fspath(uri)
    if not isinstance(uri, str):
        raise ConfigError(DESTINATION_KEY, uri, "expected a URI or a path string")
    text = uri.strip()
    if not text:
        raise ConfigError(DESTINATION_KEY, uri, "must not be empty")
    shown = redact(text)
    if "\x00" in text or any(ord(c) < 32 for c in text):
        raise ConfigError(DESTINATION_KEY, shown, "contains control characters")
    if "://" not in text:
        if ":" in text.split("/", 1)[0]:
            # "hdfs:/x" or "s3:bucket": almost certainly a mistyped URI, not a path.
            raise ConfigError(DESTINATION_KEY, shown, "malformed URI: expected scheme://...")
        return os.path.abspath(os.path.expanduser(text))
    if ambiguous_userinfo(text):
        # A password holding '#', '/', '?' or '@' moves the URI parser's host into the
        # password (hdfs://alice:9876/5@nn/x parses as host alice, port 9876).
        raise ConfigError(
            DESTINATION_KEY,
            shown,
            "ambiguous URI: an '@' follows the host; percent-encode reserved characters "
            "of the password ('#' %23, '/' %2F, '?' %3F, '@' %40, ':' %3A, '%' %25) "
            "and '@' in the path (%40)",
        )
    _check_parts(text, shown, _split(text, shown))
    return text


def _split(text: str, shown: str) -> SplitResult:
    """``text`` split into URI parts, or ``ConfigError`` (port included)."""
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 -- raises ValueError for a non-numeric port
    except ValueError as exc:
        reason = f"malformed URI: {scrub(str(exc), text)}"
        raise ConfigError(DESTINATION_KEY, shown, reason) from None
    return parts


def _check_parts(text: str, shown: str, parts: SplitResult) -> None:
    """What each scheme needs: a supported scheme, a file URI's absolute path
    without query or fragment, an object store's bucket, an HDFS host or path."""
    scheme = parts.scheme.lower()
    if not scheme:
        raise ConfigError(DESTINATION_KEY, shown, "malformed URI: missing scheme")
    if scheme not in SUPPORTED_SCHEMES:
        raise ConfigError(
            DESTINATION_KEY,
            shown,
            f"unsupported scheme {scheme!r}; supported: a plain path, "
            + ", ".join(f"{s}://" for s in sorted(SUPPORTED_SCHEMES)),
        )
    if scheme in _LOCAL_SCHEMES:
        if parts.netloc not in ("", "localhost"):
            raise ConfigError(
                DESTINATION_KEY, shown, "malformed file URI: use file:///absolute/path"
            )
        if not parts.path.startswith("/"):
            raise ConfigError(DESTINATION_KEY, shown, "a file URI needs an absolute path")
        if parts.query or parts.fragment or text.endswith(("?", "#")):
            # The local filesystem would silently drop them; in a file name they must
            # be percent-encoded (%3F, %23).
            extra = shown[len(f"{parts.scheme}://{parts.netloc}{parts.path}") :]
            raise ConfigError(
                DESTINATION_KEY,
                shown,
                f"a file URI takes no query or fragment ({extra!r}); percent-encode "
                "'?' (%3F) and '#' (%23) of a file name, or give a plain path",
            )
    elif scheme in _PYARROW_SCHEMES - {"mock"} and not parts.netloc:
        raise ConfigError(DESTINATION_KEY, shown, f"malformed URI: {scheme}:// needs a bucket")
    elif scheme in _HDFS_SCHEMES and not parts.netloc and not parts.path:
        raise ConfigError(DESTINATION_KEY, shown, "malformed URI: hdfs:// needs a host or a path")


def resolve_destination(
    uri: str, *, hdfs_driver: HdfsDriver = HdfsDriver.AUTO, user: str | None = None
) -> Destination:
    """Resolve ``uri``. May block (an hdfs:// or s3:// filesystem may connect):
    call it in a worker thread. Raises ``ConfigError`` for a malformed or
    unsupported URI, ``DestinationError`` (URI redacted) when it cannot be opened."""
    # Imported here, in the worker thread: validating a spec on a caller's event
    # loop must not pay pyarrow's import (~100 ms) there.
    import pyarrow
    import pyarrow.fs as pafs

    text = normalize_destination(uri)
    shown = redact(text)
    if "://" not in text:
        return Destination(pafs.LocalFileSystem(), _strip_slash(text), shown, True)
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme in _LOCAL_SCHEMES:
        path = os.path.normpath(unquote(parts.path))
        return Destination(pafs.LocalFileSystem(), _strip_slash(path), shown, True)
    if scheme in _HDFS_SCHEMES:
        opened = _hdfs.open_hdfs(text, shown, driver=hdfs_driver, user=user)
        filesystem, base_path, can_append = opened
        return Destination(filesystem, _strip_slash(base_path), shown, bool(can_append))
    try:
        filesystem, path = pafs.FileSystem.from_uri(text)
    except (pyarrow.ArrowException, OSError, ValueError) as exc:
        raise DestinationError(shown, scrub(str(exc), text)) from None
    can_append = filesystem.type_name in _APPENDABLE_TYPES
    return Destination(filesystem, _strip_slash(path), shown, can_append)


def _strip_slash(path: str) -> str:
    return path if path == "/" else path.rstrip("/")
