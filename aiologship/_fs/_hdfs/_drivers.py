"""Pick an HDFS driver and open a ``pyarrow.fs.FileSystem`` through it.

The drivers sit in a table (:data:`DRIVERS`). Each entry loads its module on
first use: the native and libhdfs drivers import pyarrow (~100 ms, holding the
GIL) and hdfs-native, which a process shipping elsewhere never needs. Only this
module imports the drivers; they import the model (``_target``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from ..._config import HdfsDriver
from ._target import HdfsTarget, parse_target

logger = logging.getLogger("aiologship.hdfs")

Opener = Callable[[HdfsTarget, str], tuple[Any, str, bool]]

_logged: set[tuple[str, str]] = set()
_logged_lock = threading.Lock()


def _native() -> Opener:
    from ._native import open_native

    return open_native


def _webhdfs() -> Opener:
    from ._webhdfs import open_webhdfs

    return open_webhdfs


def _libhdfs() -> Opener:
    from ._libhdfs import open_libhdfs

    return open_libhdfs


# Driver -> the loader of its opener. ``auto`` is resolved before the lookup.
DRIVERS: dict[HdfsDriver, Callable[[], Opener]] = {
    HdfsDriver.NATIVE: _native,
    HdfsDriver.WEBHDFS: _webhdfs,
    HdfsDriver.LIBHDFS: _libhdfs,
}


def open_hdfs(
    uri: str, redacted: str, *, driver: HdfsDriver, user: str | None
) -> tuple[Any, str, bool]:
    """Return ``(pyarrow.fs.FileSystem, base_path, can_append)`` for an hdfs:// URI.
    May block (libhdfs probes in a subprocess): call it in a worker thread."""
    target = parse_target(uri, redacted, user=user)
    chosen = HdfsDriver(driver)
    if chosen is HdfsDriver.AUTO:
        # The driver the mini-cluster tests cover; libhdfs (JNI, a JVM in this process)
        # is never picked for the user.
        chosen = HdfsDriver.NATIVE
        _log_choice(redacted, chosen, "auto")
    else:
        _log_choice(redacted, chosen, "requested")
    return DRIVERS[chosen]()(target, redacted)


def _log_choice(redacted: str, driver: HdfsDriver, why: str) -> None:
    key = (redacted, driver.value)
    with _logged_lock:
        if key in _logged:
            return
        _logged.add(key)
    logger.info("HDFS driver for %s: %s (%s)", redacted, driver.value, why)
