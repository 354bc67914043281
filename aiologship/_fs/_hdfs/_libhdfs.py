"""The ``libhdfs`` hdfs:// driver: ``pyarrow.fs.HadoopFileSystem`` (JNI to the Java client).

Opt-in only (``hdfs_driver="libhdfs"``; ``auto`` picks native): no test here runs it
against a cluster, and a JVM inside this process can abort it.

It needs libhdfs.so (``ARROW_LIBHDFS_DIR`` or ``HADOOP_HOME/lib/native``), a JVM
(``JAVA_HOME``) and the Hadoop jars on ``CLASSPATH``. A missing or broken piece can abort
the process inside the JVM, so availability is probed once per process in a subprocess
(bounded by a timeout) before pyarrow loads libhdfs here.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pyarrow
import pyarrow.fs as pafs

from ..._exceptions import DestinationError
from .._redact import scrub
from ._target import DEFAULT_RPC_PORT, HdfsTarget

PROBE_TIMEOUT = 60.0
# Connect/retry bounds passed to the Java client: fail in seconds, let the engine retry.
FAST_FAIL_CONF = {
    "ipc.client.connect.max.retries": "2",
    "ipc.client.connect.retry.interval": "500",
    "ipc.client.connect.timeout": "5000",
    "ipc.client.connect.max.retries.on.timeouts": "2",
    "dfs.client.failover.max.attempts": "3",
    "dfs.client.failover.sleep.base.millis": "100",
    "dfs.client.failover.sleep.max.millis": "1000",
}

# Loads libhdfs and starts a JVM. Host "default" means fs.defaultFS: without a
# configured cluster that is the local filesystem, so the probe needs no NameNode.
_PROBE = (
    "import pyarrow.fs as f\n"
    "f.HadoopFileSystem('default', 0, extra_conf={'ipc.client.connect.max.retries': '0'})\n"
)


def _libhdfs_path() -> Path | None:
    candidates = []
    if os.environ.get("ARROW_LIBHDFS_DIR"):
        candidates.append(Path(os.environ["ARROW_LIBHDFS_DIR"]) / "libhdfs.so")
    if os.environ.get("HADOOP_HOME"):
        candidates.append(Path(os.environ["HADOOP_HOME"]) / "lib" / "native" / "libhdfs.so")
    return next((p for p in candidates if p.is_file()), None)


@functools.cache
def libhdfs_unavailable() -> str | None:
    """Why libhdfs cannot be used here, or None when it can (probed once per process)."""
    if _libhdfs_path() is None:
        return "no libhdfs.so (set ARROW_LIBHDFS_DIR or HADOOP_HOME)"
    if not os.environ.get("JAVA_HOME"):
        return "JAVA_HOME is not set"
    if "hadoop" not in os.environ.get("CLASSPATH", "").lower():
        return "CLASSPATH holds no Hadoop jars (use `hadoop classpath --glob`)"
    try:
        # A failure may abort the probing process, not ours.
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT,
        )
    except subprocess.TimeoutExpired:
        return f"the libhdfs probe did not finish within {PROBE_TIMEOUT:.0f}s"
    if proc.returncode < 0:
        return f"the libhdfs probe crashed (signal {-proc.returncode})"
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the libhdfs probe failed: {scrub(last[:300])}"
    return None


def open_libhdfs(target: HdfsTarget, redacted: str) -> tuple[pafs.FileSystem, str, bool]:
    reason = libhdfs_unavailable()
    if reason is not None:
        raise DestinationError(redacted, f"the libhdfs driver is not available: {reason}")
    if target.token is not None:
        raise DestinationError(
            redacted,
            "libhdfs reads delegation tokens from HADOOP_TOKEN_FILE_LOCATION, not from the URI",
        )
    extra = {k: v for k, v in FAST_FAIL_CONF.items() if k not in target.conf}
    host = "default" if target.host is None else f"{target.scheme}://{target.host}"
    port = 0 if target.port is None else target.port
    if target.host is not None and target.port is None and not target.is_nameservice:
        port = DEFAULT_RPC_PORT
    ticket = os.environ.get("KRB5CCNAME", "").removeprefix("FILE:") or None
    try:
        # replication=0 leaves it to the cluster default (dfs.replication).
        filesystem = pafs.HadoopFileSystem(
            host, port, user=target.user, replication=0, kerb_ticket=ticket, extra_conf=extra
        )
    except (OSError, pyarrow.ArrowException) as exc:
        raise DestinationError(redacted, f"libhdfs cannot connect: {scrub(str(exc))}") from None
    return filesystem, target.path, True
